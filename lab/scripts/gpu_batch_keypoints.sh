#!/bin/bash
# Frozen lab record: ran at commit 0aec6e6 (2026-11-27); kept as run, not maintained. See lab/README.md.
# How fast `imlscan batch` runs the default weights (network + both copy-move detectors), this
# version against another (the package at .oldpkg/, e.g. git archive c83892d imlscan | tar -x -C
# .oldpkg), and with the detectors off, all in one call on the same machine. Writes timings to
# $OUT/batch-times.txt.
#   N=200 W=12 bash scripts/gpu_batch_keypoints.sh            # GPU machine
#   N=40 W=2 BS=4 DEV=cpu bash scripts/gpu_batch_keypoints.sh  # 2 CPU cores
# Each version runs from its own folder: `python -m` puts the working directory first on sys.path,
# ahead of PYTHONPATH, so run from the checkout it would import the checkout's package whatever
# PYTHONPATH says (the first version of this script did, and compared this version with itself).
set -u
export PYTHONUNBUFFERED=1
N=${N:-200}; W=${W:-12}; BS=${BS:-16}; DEV=${DEV:-cuda}
OUTD=${OUT:-/tmp/out}; T=${TMPDIR:-/tmp}/kpbench; rm -rf "$T"; mkdir -p "$OUTD" "$T/in"
ls .gpu-data/hosts | grep -i -E '\.jpe?g$' | head -n "$N" | while read -r f; do cp ".gpu-data/hosts/$f" "$T/in/"; done
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null; nproc
WEIGHTS="$PWD/weights/$(cat weights/DEFAULT)"  # named: a bare package has no weights/ of its own
PY=${PY:-python3}
run() {  # label, folder holding the imlscan/ package to run, extra options
  local t0 t1
  (cd "$2" && PYTHONPATH= $PY -c 'import imlscan; print("package:", imlscan.__file__)') > "$T/$1.log" 2>&1
  rm -rf "$T/out"; t0=$(date +%s.%N)
  (cd "$2" && PYTHONPATH= timeout 150 $PY -m imlscan batch "$T/in" --out "$T/out" --weights "$WEIGHTS" \
    --workers "$W" --batch-size "$BS" --device "$DEV" $3) >> "$T/$1.log" 2>&1
  local rc=$?; t1=$(date +%s.%N)
  python3 -c "import sys; n, dt = int(sys.argv[2]), float(sys.argv[4]) - float(sys.argv[3]); print(f'{sys.argv[1]} rc={sys.argv[5]} images={n} seconds={dt:.2f} per_s={n / dt:.2f}')" "$1" "$(ls "$T/in" | wc -l)" "$t0" "$t1" "$rc" | tee -a "$OUTD/batch-times.txt"
}
run warmup "$PWD" "--no-copy-move"
run new "$PWD" ""
run old "$PWD/.oldpkg" ""
run new-again "$PWD" ""
run off "$PWD" "--no-copy-move"
head -n 1 "$T/new.log" "$T/old.log"; tail -n 3 "$T/new.log" "$T/old.log"
