#!/bin/bash
# Frozen lab record: ran at commit 48b7fd6 (2026-11-26); kept as run, not maintained. See lab/README.md.
# The seventh GPU stage: two candidates side by side from the default's network (v9's), each v13's run
# and data (v9's 50/50 mix of the default generator and small regions, kinds 0.3,0.5,0.2, translate 0.6):
# (a) as v13, the control; (b) the same with half the samples forged on an upsampled host (forge_scale=0.5,
# new: x1.25-2.5 per axis), so the network, which resizes every image to 512, sees those forgeries
# downsampled. Run from the checkout root with the travel subset in .gpu-data/
# (python scripts/travel_subset.py ../shared/data .gpu-data).
#   MIN=8.5 KILL=575 bash scripts/gpu_stage_forge_scale.sh                     (v24a: control, v24b: forge_scale)
# Tests (prediction written before the run, 2026-11-26): the development photos are mostly under 512 px,
# so every generated forgery reaches the network upsampled, while real photos are mostly larger (NoSo
# 1024x768; public benchmarks up to 4000 px) and reach it downsampled, anisotropically. On 200 forgeries
# of the 136 validation photos re-saved (x1) and upsampled x2 before forging (x2), the default's network
# scores AUC 0.870 / 0.859 and F1 0.379 / 0.335 (paper protocol, runs/h1/probe.sh). Prediction: (b)'s
# AUC on x2 exceeds (a)'s by at least 0.008 and (b)'s x1-x2 AUC gap is at most half of (a)'s; on the
# 500-image validation set (b) is within noise of (a) (F1 at least a's - 0.01, AUC at least a's - 0.003);
# on NoSo (paper protocol, network alone) (b)'s AUC and best-threshold F1 are above (a)'s. Workers 6 and 8
# so that both arms make samples at about the same rate ((b)'s generator is ~20% slower on the CPU).
# Tried on the CPU with tiny settings first: MIN=0.3 DEV=cpu WA=1 WB=1 VS=4 VE=5 BS=2 SIZE=64 bash scripts/gpu_stage_forge_scale.sh
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
MIN=${MIN:-8.5}; KILL=${KILL:-575}; DEV=${DEV:-cuda}
INIT=weights/imlscan-sparsevit-t-v23.safetensors  # v9's network (output bias 0.040 below v20's)
OUTD=${OUT:-/tmp/out}; RUNS=${RUNS:-/tmp/runs}; mkdir -p "$OUTD" "$RUNS"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; nproc
python3 -m imlscan --version || { echo "imlscan does not start"; exit 3; }
D="synth:.gpu-data/hosts?regions=.gpu-data/regions&kinds=0.3,0.5,0.2&translate=0.6"
for ARM in a b; do
  if [ $ARM = a ]; then E=""; W=${WA:-6}; else E="&forge_scale=0.5"; W=${WB:-8}; fi
  timeout -s TERM "$KILL" python3 -m imlscan train --data "$D$E" --data "$D&area=0.005,0.06$E" \
    --data-weight 0.5 --data-weight 0.5 --val "$D" --init "$INIT" \
    --size "${SIZE:-512}" --batch-size "${BS:-16}" --lr 1.5e-4 --dice 0.5 --max-minutes "$MIN" \
    --val-every "${VE:-1500}" --val-samples "${VS:-200}" --log-every 100 --select best-f1 \
    --workers "$W" --threads 1 --precision fp32 --export-dtype fp16 --device "$DEV" \
    --seed 23 --name "imlscan-sparsevit-t-v24$ARM" --out "$RUNS/$ARM" > "$RUNS/$ARM.log" 2>&1 &
done
wait
for ARM in a b; do
  [ -f "$RUNS/$ARM/best.safetensors" ] && cp "$RUNS/$ARM/best.safetensors" "$OUTD/v24$ARM-best.safetensors"
  tail -n 4 "$RUNS/$ARM.log"
done
tar czf "$OUTD/logs.tgz" -C "$RUNS" --exclude='*.pt' --exclude='*.safetensors' .
