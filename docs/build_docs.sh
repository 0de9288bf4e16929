#!/usr/bin/env bash
# Assemble README.md from docs/sections/ and CHANGELOG.md from docs/changelog/ (one file per
# topic, small enough that several people can edit documentation at once). Run after editing.
set -euo pipefail
cd "$(dirname "$0")"
readme=(00-intro.md scan.md eval.md train.md weights.md 40-model.md 60-performance.md 80-architecture.md)
{
  for f in "${readme[@]}"; do
    [ -f "sections/$f" ] || continue
    cat "sections/$f"
    echo
  done
} > ../README.md

declare -A titles=(
  [00-foundation.md]="Foundation and model (#2, #3)"
  [weights.md]="Weights (#4)"
  [scan.md]="scan and batch (#5)"
  [eval.md]="eval (#6)"
  [train.md]="train and synth (#7)"
  [default-weights.md]="Default weights v1 to v26, candidates to v28 (#8)"
  [performance.md]="Speed (#9)"
)
order=(00-foundation.md weights.md scan.md eval.md train.md default-weights.md performance.md)
{
  cat <<'HEAD'
# Changelog

All notable changes to imlscan are documented here. The format follows
[Keep a Changelog](https://keepachangelog.com/en/1.1.0/) and the project uses
[Semantic Versioning](https://semver.org/). "Decisions" record the choices made where the
issues left a question open.

## [Unreleased]
HEAD
  for f in "${order[@]}"; do
    [ -f "changelog/$f" ] || continue
    printf '\n### %s\n\n' "${titles[$f]}"
    sed -e 's/^### /#### /' "changelog/$f"
  done
} > ../CHANGELOG.md
