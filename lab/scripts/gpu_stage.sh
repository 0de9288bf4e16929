#!/bin/bash
# Frozen lab record: ran at commit 7c7eb0f (2026-11-26); kept as run, not maintained. See lab/README.md.
# The default weights' GPU stage (v8) and the sparsevit-s candidate, trained side by side on one
# GPU within one device call. Run from the checkout root, with the travel subset in .gpu-data/
# (python scripts/travel_subset.py ../shared/data .gpu-data). Results land in $OUT (files of at
# most 16 MiB: the sparsevit-s file is split; rejoin with `cat s-best.part* > s-best.safetensors`).
#   MIN=7.0 KILL=465 bash scripts/gpu_stage.sh
# A tidied copy of the script that ran on the H200 (same commands and flags; log paths and a GPU
# monitor loop differ); this copy was run on the CPU with tiny settings only.
# fp32 (TF32 matrix products): in bf16 both runs stopped on a NaN loss (the t run at step 622).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
MIN=${MIN:-7.0}; KILL=${KILL:-465}
# v5 is what ran (git show 41bacdf:weights/imlscan-sparsevit-t-v5.safetensors); INIT=weights/<default> for a next stage.
INIT=${INIT:-weights/imlscan-sparsevit-t-v5.safetensors}
OUTD=${OUT:-/tmp/out}; mkdir -p "$OUTD"
RUNS=${RUNS:-/tmp/runs}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m imlscan --version || { echo "imlscan does not start"; exit 3; }
D="synth:.gpu-data/hosts?regions=.gpu-data/regions"
COMMON="--size 512 --dice 0.5 --select best-f1 --val-samples ${VS:-200} --export-dtype fp16 --device ${DEV:-cuda}
  --max-minutes $MIN --log-every 50 --precision ${PREC:-fp32}"
# shellcheck disable=SC2086
timeout -s TERM "$KILL" python3 -m imlscan train --data "$D" --model sparsevit-s --batch-size "${BS_S:-32}" \
  --lr "${LR_S:-6e-4}" --val-every "${VE_S:-750}" --workers "${W_S:-11}" --seed 21 --name imlscan-sparsevit-s-gpu1 \
  --out "$RUNS/s" $COMMON > "$RUNS.s.log" 2>&1 &
PS=$!
# shellcheck disable=SC2086
timeout -s TERM "$KILL" python3 -m imlscan train --data "$D" --init "$INIT" \
  --model sparsevit-t --batch-size "${BS_T:-16}" --lr 2e-4 --val-every "${VE_T:-400}" --workers "${W_T:-3}" --seed 22 \
  --name imlscan-sparsevit-t-gpu1 --out "$RUNS/t" $COMMON > "$RUNS.t.log" 2>&1 &
PT=$!
wait $PS; echo "s exit $?"; wait $PT; echo "t exit $?"
[ -f "$RUNS/s/best.safetensors" ] && split -b 14M -d "$RUNS/s/best.safetensors" "$OUTD/s-best.part"
[ -f "$RUNS/t/best.safetensors" ] && cp "$RUNS/t/best.safetensors" "$OUTD/t-best.safetensors"
tar czf "$OUTD/logs.tgz" -C "$RUNS" --exclude='*.pt' --exclude='*.safetensors' .
tail -n 4 "$RUNS.s.log" "$RUNS.t.log"
