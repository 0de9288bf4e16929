#!/usr/bin/env bash
# Frozen lab record: ran at commit a93d28f (2026-12-06); kept as run, not maintained. See lab/README.md.
# Release v30 (issue 36): v26's network and detectors plus the adq-only llr fusion rule chosen by
# lab/scripts/traces_rules_robust.py (form D), fitted by the package. Then the adoption rule of
# traces_fusion_v26.sh (history val, NoSo, standard val; paired against v26's eval/*-v26 runs), the
# issue's robustness rows (history val 100, q70 and halved; against eval/hv-v26-robust), PSBattles,
# and the model card's At a glance. Two queues of one thread each on the 2 cores.
set -euo pipefail
# runs/v26.safetensors: git show 417ce0f:weights/imlscan-sparsevit-t-v26.safetensors > runs/v26.safetensors
IML=${IMLSCAN:-.venv/bin/imlscan}
N=weights/imlscan-sparsevit-t-v30.safetensors
E="--protocol paper --workers 1"
export OMP_NUM_THREADS=1
$IML weights fuse runs/v26.safetensors data/synth-hist-fit/pairs.json --traces adq --form llr \
  --references data/synth-calib/pairs.json --out $N --json > runs/fuse-v30.json     # 21 min on a shared machine
(
  $IML eval data/synth-hist-val/pairs.json --weights $N $E --out eval/hv-v30
  $IML eval data/synth-val/pairs.json --weights $N $E --perturb jpeg:70 --perturb resize:0.5 --out eval/v30-val-paper
) > runs/v30-queue-a.log 2>&1 &
(
  $IML eval ../shared/data/real-val/psbattles/pairs.json --weights $N $E --out eval/ps-v30
  $IML eval ../shared/data/real-val/noso/pairs.json --weights $N $E --out eval/noso-v30
  $IML eval data/synth-hist-val/pairs.json --weights $N $E --limit 100 --perturb jpeg:70 --perturb resize:0.5 \
    --out eval/hv-v30-robust
  $IML eval ../shared/data/real-val/noso/pairs.json --weights $N --protocol native --workers 1 --out eval/v30-noso-native
  $IML eval data/synth-val/pairs.json --weights $N --protocol native --workers 1 --out eval/v30-val-native
) > runs/v30-queue-b.log 2>&1 &
wait
for s in hv ps noso; do python tools/paired_difference.py eval/$s-v26 eval/$s-v30; done
python tools/paired_difference.py eval/sv-v26 eval/v30-val-paper    # the first 200 of the 500
for s in jpeg:70 resize:0.5; do python tools/paired_difference.py --setting $s eval/hv-v26-robust eval/hv-v30-robust; done
python lab/scripts/history_breakdown.py data/synth-hist-val/manifest.json eval/hv-v26 eval/hv-v30
