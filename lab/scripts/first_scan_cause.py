# Frozen lab record: ran at commit 77816ba (2026-11-26); kept as run, not maintained. See lab/README.md.
"""Why the first native-resolution scan at a new image size is slow on a GPU (README, Performance:
1.64 s first against 0.02 s repeated at 1 MP on an H200). Each setting runs in a fresh process:
a warm-up scan at 0.3 MP (context, cuBLAS and cuDNN handles), then the first and a repeated scan
at each size. If disabling cuDNN removes the first-scan cost, the cost is cuDNN's per-shape set-up;
if eager module loading removes it, it is CUDA's lazy loading of each kernel on first use.

    python scripts/first_scan_cause.py weights/imlscan-sparsevit-t-v23.safetensors --mp 1,6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = {
    "default": {},
    "eager-modules": {"CUDA_MODULE_LOADING": "EAGER"},
    "no-cudnn": {"IMLSCAN_PROBE_NO_CUDNN": "1"},
    "no-cudnn+eager": {"CUDA_MODULE_LOADING": "EAGER", "IMLSCAN_PROBE_NO_CUDNN": "1"},
}


def probe(weights: str, sizes: list[float], precision: str) -> dict:
    """One process's measurements: seconds of the first and of a repeated scan per size."""
    import numpy as np
    import torch

    from imlscan.predict import Predictor
    from imlscan.weights import load_model

    if os.environ.get("IMLSCAN_PROBE_NO_CUDNN"):
        torch.backends.cudnn.enabled = False
    model = load_model(weights, "cuda", precision)
    pred = Predictor(model, device="cuda", precision=precision, mode="native")
    rng = np.random.default_rng(0)

    def image(mp: float) -> np.ndarray:
        h = int(round((mp * 1e6 * 3 / 4) ** 0.5))
        return rng.integers(0, 256, (h, int(round(h * 4 / 3)), 3), dtype=np.uint8)

    pred.predict_prob(image(0.3))
    out: dict = {"cudnn": torch.backends.cudnn.enabled, "module_loading": os.environ.get("CUDA_MODULE_LOADING", "")}
    for mp in sizes:
        img = image(mp)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            pred.predict_prob(img)
            torch.cuda.synchronize()
            times.append(round(time.perf_counter() - t0, 4))
        out[f"{mp:g}MP"] = {"first": times[0], "repeat": times[1]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--mp", default="1,6", help="comma-separated sizes in megapixels")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [float(v) for v in args.mp.split(",")]
    if args.probe:
        print(json.dumps(probe(args.weights, sizes, args.precision)))
        return
    for name, env in SETTINGS.items():
        cmd = [sys.executable, __file__, args.weights, "--mp", args.mp, "--precision", args.precision, "--probe"]
        res = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        line = res.stdout.strip().splitlines()[-1] if res.returncode == 0 and res.stdout.strip() else None
        print(json.dumps({"setting": name, **(json.loads(line) if line else {"error": res.stderr[-300:]})}))


if __name__ == "__main__":
    main()
