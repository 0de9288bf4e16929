#!/usr/bin/env bash
# Assemble README.md from docs/sections/ (one file per topic, kept small so several people
# can edit documentation at once). Run after editing a section.
set -euo pipefail
cd "$(dirname "$0")/sections"
order=(00-intro.md scan.md eval.md train.md weights.md 40-model.md 60-performance.md 80-architecture.md)
{
  for f in "${order[@]}"; do
    [ -f "$f" ] || continue
    cat "$f"
    echo
  done
} > ../../README.md
