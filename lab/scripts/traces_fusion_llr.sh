#!/bin/bash
# Traces (issue 36), 2026-12-06, second fit: the rule form chosen by lab/scripts/traces_rules.py (form C,
# "llr": adq by its log-likelihood ratio, the other traces by their logit; best 5-fold CV F1 on the fit
# set: A 0.449, B 0.474, C 0.481, network alone 0.461), fitted by the package on the same training-split
# set as the first rule, then scored as scan runs it. Adoption rule unchanged from traces_fusion_v26.sh,
# fixed before any number below: history-val F1 at 0.5 above v26 with a paired interval wholly above zero,
# authentic pixels <= 3%, NoSo and standard val not below v26 beyond the bootstrap interval.
# v26's own runs (eval/hv-v26, ps-v26, noso-v26, sv-v26) are those of traces_fusion_v26.sh.
# Status 2026-12-06: a first start was stopped at image 258 of 400 after 36 minutes (the two cores were
# shared with other jobs); rerun alone, the fit took 9 minutes. Then run: the PSBattles and history-val evals
# (lab/README.md), NoSo and standard val; the robustness lines not yet.
set -euo pipefail
IML=${IMLSCAN:-.venv/bin/imlscan}
W=weights/imlscan-sparsevit-t-v26.safetensors
F=runs/v26-traces-llr.safetensors
E="--protocol paper --workers 1"
$IML weights fuse $W data/synth-hist-fit/pairs.json --out $F --references data/synth-calib/pairs.json --form llr --json > runs/fuse-llr.json
$IML eval ../shared/data/real-val/psbattles/pairs.json --weights $F $E --out eval/ps-llr
$IML eval ../shared/data/real-val/noso/pairs.json --weights $F $E --out eval/noso-llr
$IML eval data/synth-hist-val/pairs.json --weights $F $E --out eval/hv-llr
$IML eval data/synth-val/pairs.json --weights $F $E --limit 200 --out eval/sv-llr
python tools/paired_difference.py eval/hv-v26 eval/hv-llr
python tools/paired_difference.py eval/ps-v26 eval/ps-llr
python tools/paired_difference.py eval/noso-v26 eval/noso-llr
python tools/paired_difference.py eval/sv-v26 eval/sv-llr
# Robustness (issue 36): the same 100 history-val photos re-saved at quality 70 and halved, both files.
$IML eval data/synth-hist-val/pairs.json --weights $F $E --limit 100 --perturb jpeg:70 --perturb resize:0.5 --out eval/hv-llr-robust
$IML eval data/synth-hist-val/pairs.json --weights $W $E --limit 100 --perturb jpeg:70 --perturb resize:0.5 --out eval/hv-v26-robust
