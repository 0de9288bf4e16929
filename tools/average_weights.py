"""Average the tensors of weights files of the same variant (a weight-space ensemble).

Interpolating a fine-tuned model with the model it started from often keeps part of the
fine-tune's gain with less drift away from what the start model did well (Wortsman et al.,
"Robust fine-tuning of zero-shot models", 2022). The files must share a lineage (one trained
from the other): averaging unrelated runs gives a broken model. Calibration is dropped (the
averaged output bias fits neither file's calibration): calibrate the result afresh.

    python tools/average_weights.py runs/v9.safetensors runs/v12.safetensors \
        --out runs/v9v12.safetensors --name imlscan-sparsevit-t-v9v12
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from imlscan.errors import ImlscanError
from imlscan.weights.hub import file_sha256
from imlscan.weights.store import load_state_dict, model_from_file, read_metadata, save_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="two or more weights files of the same variant")
    ap.add_argument("--weight", type=float, action="append", help="one per file (default: uniform)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", help="metadata name (default: the output file's stem)")
    args = ap.parse_args()
    if len(args.files) < 2:
        ap.error("give at least two files")
    weights = args.weight or [1.0] * len(args.files)
    if len(weights) != len(args.files) or min(weights) < 0 or sum(weights) <= 0:
        ap.error("--weight: one non-negative value per file, not all zero")
    weights = [w / sum(weights) for w in weights]

    try:
        metas = [read_metadata(f) for f in args.files]
    except ImlscanError as e:
        raise SystemExit(f"error: {e.message}") from None
    if any(m.get("config") != metas[0].get("config") for m in metas):
        ap.error("the files' model configs differ: only files of one variant and config can be averaged")
    model, _ = model_from_file(args.files[-1])
    states = [load_state_dict(f) for f in args.files]
    averaged = {}
    for key, ref in states[-1].items():
        if not ref.is_floating_point():
            averaged[key] = ref
            continue
        averaged[key] = sum(w * s[key].float() for w, s in zip(weights, states))
    model.load_state_dict(averaged)

    meta = {k: v for k, v in metas[-1].items() if k not in ("calibration", "tensors_sha256", "storage_dtype")}
    meta["name"] = args.name or Path(args.out).stem
    meta.setdefault("provenance", {})["average"] = [
        {"file": Path(f).name, "name": m.get("name"), "sha256": file_sha256(f), "weight": round(w, 6)}
        for f, m, w in zip(args.files, metas, weights)
    ]
    dtype = torch.float16 if metas[-1].get("storage_dtype") == "float16" else None
    digest = save_weights(model, args.out, metadata=meta, dtype=dtype)
    print(f"wrote {args.out} (sha256 {digest})")


if __name__ == "__main__":
    main()
