#!/usr/bin/env bash
# Frozen lab record: ran at commit 304b58c (2026-12-06); kept as run, not maintained. See lab/README.md.
# Release v31 (issue 36): v26's network and detectors plus the adq-only llr fusion rule, refitted by
# the package on adq version 2 (lab/scripts/adq_detection.py, adq_rules.py: 27 frequencies, margin
# 0.15 on 3 of them, evidence averaged over 3 x 3 blocks). Then the adoption rule of
# traces_fusion_v26.sh against v26 and, paired, against v30 (history val, NoSo, standard val), the
# issue's robustness rows, PSBattles, and the model card's At a glance. Two queues of one thread each.
set -euo pipefail
# runs/v26.safetensors: git show 417ce0f:weights/imlscan-sparsevit-t-v26.safetensors > runs/v26.safetensors
IML=${IMLSCAN:-.venv/bin/imlscan}
N=weights/imlscan-sparsevit-t-v31.safetensors
E="--protocol paper --workers 1"
export OMP_NUM_THREADS=1
$IML weights fuse runs/v26.safetensors data/synth-hist-fit/pairs.json --traces adq --form llr \
  --references data/synth-calib/pairs.json --out $N --json > runs/fuse-v31.json     # 21 min on a shared machine
(
  $IML eval data/synth-hist-val/pairs.json --weights $N $E --out eval/hv-v31
  $IML eval data/synth-val/pairs.json --weights $N $E --perturb jpeg:70 --perturb resize:0.5 --out eval/v31-val-paper
) > runs/v31-queue-a.log 2>&1 &
(
  $IML eval ../shared/data/real-val/psbattles/pairs.json --weights $N $E --out eval/ps-v31
  $IML eval ../shared/data/real-val/noso/pairs.json --weights $N $E --out eval/noso-v31
  $IML eval data/synth-hist-val/pairs.json --weights $N $E --limit 100 --perturb jpeg:70 --perturb resize:0.5 \
    --out eval/hv-v31-robust
  $IML eval ../shared/data/real-val/noso/pairs.json --weights $N --protocol native --workers 1 --out eval/v31-noso-native
  $IML eval data/synth-val/pairs.json --weights $N --protocol native --workers 1 --out eval/v31-val-native
) > runs/v31-queue-b.log 2>&1 &
wait
for s in hv ps noso; do python tools/paired_difference.py eval/$s-v26 eval/$s-v31; python tools/paired_difference.py eval/$s-v30 eval/$s-v31; done
# (the sv-v26 comparison of release_v30.sh stopped this script here: its runs scored other images;
#  the lines below were then run by hand)
for s in clean jpeg:70 resize:0.5; do python tools/paired_difference.py --setting $s eval/v30-val-paper eval/v31-val-paper; done
for s in jpeg:70 resize:0.5; do python tools/paired_difference.py --setting $s eval/hv-v26-robust eval/hv-v31-robust; python tools/paired_difference.py --setting $s eval/hv-v30-robust eval/hv-v31-robust; done
python lab/scripts/history_breakdown.py data/synth-hist-val/manifest.json eval/hv-v26 eval/hv-v31
python lab/scripts/history_breakdown.py data/synth-hist-val/manifest.json eval/hv-v30 eval/hv-v31
