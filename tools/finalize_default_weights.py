"""Turn a training run's best.safetensors into the released default: same tensors, metadata
completed with the release licence and the history of every training stage.

    python tools/finalize_default_weights.py runs/t512/best.safetensors \
        weights/imlscan-sparsevit-t-v1.safetensors --stage runs/t256 --stage runs/t512
    python tools/finalize_default_weights.py runs/v2-512/best.safetensors runs/v2.safetensors \
        --prior weights/imlscan-sparsevit-t-v1.safetensors --stage runs/v2-256 --stage runs/v2-512
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from imlscan.fsutil import atomic_path
from imlscan.weights.store import METADATA_KEY, read_metadata

LICENCE = (
    "CC-BY-NC-4.0 (the weights; trained on research/non-commercial photos: ImageNet sample, BSDS500, "
    "Sun-Hays 80, Kodak); imlscan code Apache-2.0"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--prior", help="weights file whose recorded stages came before --stage (its --init)")
    ap.add_argument("--stage", action="append", default=[], help="run folders, in training order")
    ap.add_argument("--hardware", help="overall description (default: the hardware each stage recorded)")
    args = ap.parse_args()
    meta = read_metadata(args.src)
    stages = list(read_metadata(args.prior)["provenance"].get("stages", [])) if args.prior else []
    for run in args.stage:
        cfg = json.loads((Path(run) / "config.json").read_text())
        summary = json.loads((Path(run) / "summary.json").read_text())
        stages.append({"run": Path(run).name, "config": cfg, "summary": summary})
    meta["licence"] = LICENCE
    meta["provenance"]["stages"] = stages
    recorded = [s["summary"].get("hardware") for s in stages if s["summary"].get("hardware")]
    meta["provenance"]["hardware"] = args.hardware or "; ".join(dict.fromkeys(recorded)) or "not recorded"
    with safe_open(args.src, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    with atomic_path(args.dst) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    print(f"wrote {args.dst}")


if __name__ == "__main__":
    main()
