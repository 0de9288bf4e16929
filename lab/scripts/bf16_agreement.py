# Frozen lab record: ran at commit 25e32bb (2026-12-06); kept as run, not maintained. See lab/README.md.
"""How far do bf16 masks move from fp32 masks on the fast path, and which fp32 parts close the gap? (#38)

    OMP_NUM_THREADS=1 python lab/scripts/bf16_agreement.py --limit 200

Runs the first N photos (sorted by name) of a folder through the fast inference path
(``imlscan.models.fuse.fast_forward``, CPU) in fp32, in bf16 (weights and activations), and in
bf16 with parts kept in fp32 (``keep_fp32``): the head (``model.head``: tap projections,
fusion, LayerNorm, classifier), the stem (the first patch embedding, which then reads the fp32
image instead of the image rounded to bf16), and both. Input at the weights' size (512x512 for
the defaults): resized with cv2.INTER_LINEAR and normalized with the weights' mean and std (as
the predictor does in resize mode). Against the fp32 masks at 0.5 it prints, per bf16
variant, the mask IoU pooled over all pixels and averaged per image (an image where both
masks are empty counts 1), the worst image, the largest and mean |probability| difference,
and the share of pixels whose mask flips. It also prints the share of fp32 probabilities
within 0.01 of the threshold: the pixels any rounding can flip.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from imlscan.imageio import decode_bytes, read_file
from imlscan.models.fuse import fast_forward
from imlscan.scanning.bench import IMAGE_SUFFIXES
from imlscan.weights.store import load_model

# What stays in fp32 in each bf16 variant (imlscan.models.fuse.FP32_PARTS).
VARIANTS = {
    "bf16": (),
    "bf16_head_fp32": ("head",),
    "bf16_stem_fp32": ("stem",),
    "bf16_stem_head_fp32": ("stem", "head"),
}


def normalized(rgb: np.ndarray, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 RGB -> the network's ``1 x 3 x size x size`` input (bilinear resize, then mean/std)."""
    x = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    return (torch.from_numpy(x).permute(2, 0, 1)[None].float() - mean) / std


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="weights file or name (default: the weights scan uses)")
    ap.add_argument("--images", default="data/synth-val/images")
    ap.add_argument("--limit", type=int, default=200)
    args = ap.parse_args()
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    if not files:
        sys.exit(f"no images in {args.images}")
    cpu = torch.device("cpu")
    model = load_model(args.weights, device="cpu")
    prep = model.weights_info.preprocessing
    size = int(prep.get("size", 512))
    mean = torch.tensor(prep["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(prep["std"]).view(1, 3, 1, 1) * 255
    ref_fn = fast_forward(model, cpu, "fp32")
    fns = {name: fast_forward(model, cpu, "bf16", keep_fp32=keep) for name, keep in VARIANTS.items()}
    stats = {name: {"inter": 0, "union": 0, "flipped": 0, "iou": [], "max": 0.0, "abs_sum": 0.0} for name in fns}
    pixels = near = 0
    t0 = time.perf_counter()
    for f in files:
        x = normalized(decode_bytes(read_file(f), name=str(f)).rgb, size, mean, std)
        p32 = torch.sigmoid(ref_fn(x))[0, 0].numpy()
        m32 = p32 > 0.5
        pixels += p32.size
        near += int((np.abs(p32 - 0.5) < 0.01).sum())
        for name, fn in fns.items():
            p = torch.sigmoid(fn(x))[0, 0].numpy()
            m = p > 0.5
            s = stats[name]
            i, u = int((m & m32).sum()), int((m | m32).sum())
            s["inter"] += i
            s["union"] += u
            s["flipped"] += int((m != m32).sum())
            s["iou"].append(1.0 if u == 0 else i / u)
            d = np.abs(p - p32)
            s["max"] = max(s["max"], float(d.max()))
            s["abs_sum"] += float(d.sum())
    out: dict = {
        "weights": model.weights_info.path,
        "images": len(files),
        "folder": args.images,
        "size": size,
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - t0, 1),
        "fp32_pixels_within_0.01_of_threshold": near / pixels,
    }
    for name, s in stats.items():
        ious = np.asarray(s["iou"])
        out[name] = {
            "mask_iou_pooled": s["inter"] / s["union"] if s["union"] else 1.0,
            "mask_iou_mean_per_image": float(ious.mean()),
            "mask_iou_min_per_image": float(ious.min()),
            "worst_image": files[int(ious.argmin())].name,
            "pixels_flipped": s["flipped"] / pixels,
            "max_abs_prob_diff": s["max"],
            "mean_abs_prob_diff": s["abs_sum"] / pixels,
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
