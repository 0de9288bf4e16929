"""Where a native-resolution (tiled) scan spends its time: cProfile over ``Predictor.predict_prob``
on a random 4:3 image, after a warm-up at the same size, so that the time waiting for the device
shows up in the call that synchronizes (``.cpu()``) and the rest is host-side work.

    python tools/profile_native.py weights/imlscan-sparsevit-t-v23.safetensors --mp 12 --device cuda
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

from imlscan.scanning.predict import Predictor
from imlscan.weights.store import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights")
    ap.add_argument("--mp", type=float, default=12.0, help="image size in megapixels")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--top", type=int, default=18)
    args = ap.parse_args()
    model = load_model(args.weights, args.device, args.precision)
    pred = Predictor(model, device=args.device, precision=args.precision, mode="native")
    h = int(round((args.mp * 1e6 * 3 / 4) ** 0.5))
    img = np.random.default_rng(0).integers(0, 256, (h, int(round(h * 4 / 3)), 3), dtype=np.uint8)
    pred.predict_prob(img)  # warm-up: every tile shape of this size runs once
    t0 = time.perf_counter()
    pred.predict_prob(img)
    plain = time.perf_counter() - t0
    prof = cProfile.Profile()
    prof.enable()
    pred.predict_prob(img)
    prof.disable()
    print(f"{img.shape[1]}x{img.shape[0]}, {pred.describe(img.shape).get('tiles')} tiles: {plain:.3f} s unprofiled")
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
