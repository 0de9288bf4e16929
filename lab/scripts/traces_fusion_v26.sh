#!/bin/bash
# Traces (issue 36), 2026-12-06: fit the fusion rule for v26 on training-split compression histories,
# then evaluate v26 with and without it. Run from the checkout root on 2 CPU cores.
# Rule fixed before any validation number was seen: the fused file becomes the default only if, on the
# validation set with compression histories, its pixel F1 at 0.5 is above v26's with a paired interval
# wholly above zero, its authentic pixels flagged stay <= 3%, and on NoSo and on the standard synthetic
# validation set (mostly PNGs and resized JPEGs) its F1 is not below v26's beyond the bootstrap interval.
set -euo pipefail
IML=${IMLSCAN:-.venv/bin/imlscan}
W=weights/imlscan-sparsevit-t-v26.safetensors
$IML synth ../shared/data/hosts data/synth-hist-fit -n 400 --split train --seed 7 --history 0.7 --regions ../shared/data/regions
$IML synth ../shared/data/hosts data/synth-hist-val -n 500 --split val --seed 1 --history 1.0 --regions ../shared/data/regions
$IML synth ../shared/data/hosts data/synth-calib -n 300 --split train --seed 7 --regions ../shared/data/regions
$IML weights fuse $W data/synth-hist-fit/pairs.json --out runs/v26-traces.safetensors \
  --references data/synth-calib/pairs.json --json > runs/fuse.json
E="--protocol paper --workers 1"
$IML eval data/synth-hist-val/pairs.json --weights $W $E --out eval/hv-v26
$IML eval data/synth-hist-val/pairs.json --weights runs/v26-traces.safetensors $E --out eval/hv-fused
for t in adq grid ghost noise; do
  $IML eval data/synth-hist-val/pairs.json --trace-alone $t --no-copy-move $E --out eval/hv-alone-$t
done
$IML eval ../shared/data/real-val/noso/pairs.json --weights runs/v26-traces.safetensors $E --out eval/noso-fused
$IML eval ../shared/data/real-val/psbattles/pairs.json --weights $W $E --out eval/ps-v26
$IML eval ../shared/data/real-val/psbattles/pairs.json --weights runs/v26-traces.safetensors $E --out eval/ps-fused
$IML eval data/synth-hist-val/pairs.json --weights $W $E --limit 200 --perturb jpeg:70 --perturb resize:0.5 --out eval/hv-v26-robust
$IML eval data/synth-hist-val/pairs.json --weights runs/v26-traces.safetensors $E --limit 200 --perturb jpeg:70 \
  --perturb resize:0.5 --out eval/hv-fused-robust
python tools/paired_difference.py eval/hv-v26 eval/hv-fused
