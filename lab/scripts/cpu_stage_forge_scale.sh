#!/bin/bash
# Frozen lab record: ran at commit 4de8d5d (2026-11-27); kept as run, not maintained. See lab/README.md.
# Stage 11 (candidate v25), on the 2 CPU cores of a development machine (no GPU was lent this stop):
# v24's network continued on the recipe of its GPU stage (v13's mix: the default generator and small
# regions 50/50, kinds 0.3,0.5,0.2, translate 0.6, forge_scale=0.5 in both halves), now on all 1,063
# training photos instead of the travel subset's 467, batch 8 at half the GPU stage's learning rate
# (7.5e-5, linear in the batch), 75 minutes. Run from the checkout root:
#   INIT=runs/v24-net.safetensors bash scripts/cpu_stage_forge_scale.sh        (-> runs/v25-512/best.safetensors)
# IMLSCAN names the command (default .venv/bin/imlscan, what `make install` builds).
# Tiny try first: MIN=0.3 VS=4 VE=5 BS=2 SIZE=64 STEPS=20 OUTR=/tmp/v25try bash scripts/cpu_stage_forge_scale.sh
# Prediction (written 2026-11-26, before the run): about 2,300 steps of 8 (18,000 samples, a quarter of
# what the GPU stage gave the network) at a lower rate do not move it measurably. Network alone (calibrated
# afresh, paper protocol, --no-copy-move), against v24's network (val-500 F1 0.403, best F1 0.556, AUC 0.894;
# NoSo paper 0.065 / 0.195 / 0.786 / 0.035): val-500 AUC and best F1 within 0.005 and 0.01; NoSo paper AUC
# within 0.02. Gate to the detector pipeline (the full candidate): val-500 AUC and best F1 both at or above
# v24's network, and at least five of the eight NoSo network-alone numbers (paper and native) at or above it.
# Release rule (unchanged): with the detectors, val-500 F1 above v24's 0.455, AUC at most 0.002 below 0.9029,
# NoSo not lower on all eight numbers.
#
# Stage 12 (candidate v26), the same script from v25's network, 2026-11-27, again no GPU:
#   INIT=runs/v25-net.safetensors SEED=26 NAME=imlscan-sparsevit-t-v26 OUTR=runs/v26-512 MIN=72 STEPS=2200 \
#     bash scripts/cpu_stage_forge_scale.sh
# Prediction (written before the run): another ~2,200 steps of 8 on the same recipe move the network by
# about what stage 11 did (val-500 best F1 +0.009, AUC +0.005 network alone), i.e. within the intervals.
# Network alone (calibrated afresh, paper protocol, --no-copy-move), against v25's network (val-500 F1
# 0.406, best F1 0.565, AUC 0.8991; NoSo paper 0.080 / 0.201 / 0.7918 / 0.044): val-500 AUC within 0.006
# and best F1 within 0.012; NoSo paper AUC within 0.02. Gate to the detector pipeline: val-500 AUC and
# best F1 both at or above v25's network, and at least five of the eight NoSo network-alone numbers
# (paper and native; native 0.110 / 0.225 / 0.830 / 0.066) at or above it.
# Release rule (unchanged): with the detectors, val-500 F1 above v25's 0.458, AUC at most 0.002 below
# 0.9077, NoSo not lower on all eight numbers.
# Result: prediction held, gate failed (2 of 8 NoSo numbers); v26 not shipped (model card).
# Then (written before it was computed): the uniform average of v25's and v26's networks,
#   python scripts/average_weights.py runs/v25-net.safetensors runs/v26-net.safetensors --out runs/v2526.safetensors
# calibrated afresh, the same gate. Prediction: every network-alone number between v25's and v26's or
# within 0.003 of the nearer; so the gate fails again on NoSo (fewer than five of eight). Passing it would
# make it a candidate for a later stop, not a release now (no time left for the detector pipeline).
# Result: held; the gate failed (4 of 8). Paired intervals (scripts/paired_difference.py) then showed v26's
# synthetic gain is more than noise and no NoSo interval excludes zero, so counting NoSo numbers decides on
# noise. Written 2026-11-27 02:12 UTC, before any number of v26 with the detectors (seen: only the
# network-alone numbers above): v26 with v25's detector procedure (runs/v26/det.sh) is a candidate for the
# next stop under a paired rule: val-500 paper F1 above v25's 0.4580 and AUC at least 0.9057, and none of the
# eight NoSo paired 95% intervals against the shipped v25 (F1, best F1, AUC, IoU; paper and native) wholly
# below zero. Prediction: F1 0.462-0.470, AUC 0.908-0.912, NoSo paper AUC below v25's 0.8035.
# Result: the pipeline finished the same stop, so the rule was applied then: passed (F1 0.467, AUC 0.911, no NoSo
# interval wholly below zero), the prediction held; v26 shipped (model card, "Judged on paired intervals").#
# Stage 13 (candidate v27), the same script from v26's network, 2026-11-27 (written 03:14 UTC, before the
# run; again no GPU):
#   INIT=runs/v26-net.safetensors SEED=27 NAME=imlscan-sparsevit-t-v27 OUTR=runs/v27-512 MIN=72 STEPS=2200 \
#     bash scripts/cpu_stage_forge_scale.sh
# Prediction: about what stages 11 and 12 did. Network alone (calibrated afresh, paper, --no-copy-move)
# against v26's network (val-500 F1 0.4145, best F1 0.5745, AUC 0.9021): best F1 +0.000 to +0.015, AUC
# +0.000 to +0.006; NoSo paper AUC within 0.02 of 0.7842. Gate to the detector pipeline (runs/v27/det.sh,
# v26's procedure): val-500 AUC and best F1 network alone both at or above v26's network (the NoSo count is
# no longer a gate: the paired intervals showed it decides on noise). Release rule, the paired rule of v26:
# with the detectors, val-500 paper F1 above v26's 0.4672, AUC at least 0.9089, authentic pixels at most 5%,
# and none of the eight NoSo paired 95% intervals against the shipped v26 (F1, best F1, AUC, IoU; paper and
# native; scripts/paired_difference.py) wholly below zero. Prediction with the detectors: F1 0.468-0.480,
# AUC 0.910-0.916.
# Result: the prediction failed on best F1 (0.5730 against 0.5745) and held on AUC (0.9030) and NoSo paper
# AUC (0.7775); the gate failed, so no detectors were attached and v26 stays (model card, "Stage 13").
#
# Stage 13b (written 2026-11-27 04:38 UTC, before the run): is the plateau the learning rate's noise? Stage
# 13's own validation fell after the warm-up to 7.5e-5 (best-threshold F1 0.548 at step 0, 0.530 at 400)
# and only climbed back. The same command, seed and schedule with a third of the peak rate, as long as
# the stop allows (about 52 minutes, so it stops near step 1,650 of the 2,200-step cosine):
#   INIT=runs/v26-net.safetensors SEED=27 LR=2.5e-5 NAME=imlscan-sparsevit-t-v27b OUTR=runs/v27b-512 MIN=52 \
#     STEPS=2200 bash scripts/cpu_stage_forge_scale.sh
# Control: stage 13 itself (same start, seed, data stream and schedule); compared on the run's own 200
# validation forgeries at steps 400, 800, 1200 and 1600 (stage 13: best F1 0.530, 0.539, 0.535, 0.540).
# Prediction: at or above stage 13 at every matched step, and its best checkpoint above step 0's 0.548.
# Then its best, calibrated afresh, network alone on the 500 synthetic images against v26's network
# (paired): prediction best F1 -0.003 to +0.008, AUC -0.001 to +0.004, i.e. within noise. Measured
# only: no time is left in this stop for the detector pipeline, so it cannot ship from this stop.
# Result: the prediction failed (best F1 0.535 / 0.537 / 0.533 at steps 400 / 800 / 1,200 against stage 13's
# 0.530 / 0.539 / 0.535; best 0.538 at its stop, step 1,557, below step 0); network alone against v26's,
# best F1 -0.0037 [-0.0077, +0.0003] (just outside the predicted range), AUC -0.0001 (held). Not shipped.
#
# Stage 14 (written 2026-11-27 05:52 UTC, before the run; no GPU again): is the plateau SGD noise that an
# average of the weights removes? `imlscan train --ema 0.998` (new) keeps an exponential moving average of
# the weights (horizon about 500 steps) and validates, selects and exports it; the trained weights are
# validated beside it at every validation (the `trained_` columns): a control arm on the same data stream,
# start and schedule. From v26's network, a new seed, 80 minutes:
#   INIT=runs/v26-net.safetensors SEED=28 EMA=0.998 NAME=imlscan-sparsevit-t-v28 OUTR=runs/v28-512 MIN=80 \
#     STEPS=2400 bash scripts/cpu_stage_forge_scale.sh
# Prediction, on the run's 200 validation forgeries: the average's best-threshold F1 at or above the trained
# weights' at every validation from step 800 on, by +0.003 to +0.015, and its best checkpoint at or above
# step 0's (v26's network: 0.5475). Then the average's best, calibrated afresh, network alone on the 500
# synthetic images against v26's network (paired): best F1 +0.000 to +0.012, AUC +0.000 to +0.004; NoSo
# paper AUC within 0.02 of 0.7842. Gate to the detector pipeline: val-500 AUC and best F1 of the network
# alone both at or above v26's network's (0.9021, 0.5745). Release rule, v26's paired rule: with the
# detectors, val-500 paper F1 above v26's 0.4672, AUC at least 0.9089, authentic pixels at most 5%, and none
# of the eight NoSo paired 95% intervals against v26 wholly below zero.
# Added at 05:54 UTC, while the run was at step ~70 (no validation after step 0 seen): the control arm on
# the 500 images too. The trained weights at the run's last step (scripts/export_trained_weights.py, new)
# and the average at that step (--average), each calibrated afresh and evaluated network alone, paired
# against each other. Prediction: the average above the trained weights in best F1 (+0.003 to +0.015) and
# AUC (+0.000 to +0.004).
# Result: the prediction failed. The average led the trained weights only while it was mostly v26's network
# (step 400: best F1 0.5483 against 0.5404), was below them at 1,200 and 2,304, and at the last step on the
# 500 images it equals them (best F1 -0.000 [-0.001, +0.001], AUC -0.0003 [-0.0008, +0.0003]). The best
# checkpoint (the average at step 400) passed the gate (0.5747 / 0.9028 against 0.5745 / 0.9021), then failed
# the release rule with the detectors: F1 0.4670, not above 0.4672 (AUC 0.9114). Not shipped (model card).
set -u
INIT=${INIT:-runs/v24-net.safetensors}; IMLSCAN=${IMLSCAN:-.venv/bin/imlscan}
S="synth:../shared/data/hosts?regions=../shared/data/regions&kinds=0.3,0.5,0.2&translate=0.6"
F="&forge_scale=0.5"
V="synth:../shared/data/hosts?regions=../shared/data/regions"
"$IMLSCAN" train --data "$S$F" --data "$S&area=0.005,0.06$F" --data-weight 0.5 --data-weight 0.5 \
  --val "$V" --init "$INIT" --model sparsevit-t --size "${SIZE:-512}" --batch-size "${BS:-8}" \
  --lr "${LR:-7.5e-5}" --warmup 50 --dice 0.5 --max-minutes "${MIN:-75}" --schedule-steps "${STEPS:-2300}" \
  --val-every "${VE:-400}" --val-samples "${VS:-200}" --select best-f1 --workers 1 --threads 2 \
  --precision fp32 --export-dtype fp16 --ema "${EMA:-0}" --seed "${SEED:-25}" --name "${NAME:-imlscan-sparsevit-t-v25}" --out "${OUTR:-runs/v25-512}"
