"""Export the trained weights of an ``imlscan train --ema`` run, the control arm of its average.

An ``--ema`` run exports the average (``best.safetensors``); the weights the optimizer trained are
only in the checkpoint. This writes them as a weights file with the average's metadata (architecture,
preprocessing, data), marked as the trained weights at the checkpoint's step, so that the two arms can
be calibrated and evaluated alike, image for image:

    python tools/export_trained_weights.py runs/v28-512 runs/v28-trained.safetensors
    python tools/export_trained_weights.py runs/v28-512 runs/v28-average-last.safetensors --average
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from imlscan.train.config import BEST, CHECKPOINT
from imlscan.weights.store import model_from_file, read_metadata, save_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="the run folder (holds last.pt and best.safetensors)")
    ap.add_argument("out")
    ap.add_argument("--average", action="store_true", help="the checkpoint's average instead (its last step)")
    args = ap.parse_args()
    run = Path(args.run)
    ckpt = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    key = "ema" if args.average else "model"
    if ckpt.get(key) is None:
        raise SystemExit(f"{run / CHECKPOINT}: no {key!r} weights (was the run trained with --ema?)")
    model, _ = model_from_file(run / BEST)
    model.load_state_dict(ckpt[key])
    meta = read_metadata(run / BEST)
    step = ckpt["state"]["step"]
    what = "average" if args.average else "trained"
    meta["name"] = f"{meta.get('name', run.name)}-{what}-{step}"
    meta["provenance"] = {**meta.get("provenance", {}), "steps": step, "exported": f"the {what} weights at step {step}"}
    meta.get("training", {}).pop("val_metrics", None)  # they describe the average at its best step
    dtype = torch.float16 if "float16" in meta.get("storage_dtype", "") else None
    save_weights(model, args.out, metadata=meta, dtype=dtype)
    print(f"wrote {args.out} ({what} weights, step {step})")


if __name__ == "__main__":
    main()
