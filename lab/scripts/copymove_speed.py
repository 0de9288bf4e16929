# Copy-move speed (issue 38), 2026-12-06. Question: can the dense matcher and the keypoint detector
# run several times faster with IDENTICAL outputs (maps within 1e-6 in fp32, same masks, same matches)?
# Four modes, run from the checkout root:
#   .venv/bin/python lab/scripts/copymove_speed.py save data/cache/copymove_before.npz
#       runs both detectors on ~27 varied 512x512 images (18 NoSo copy-moves, 8 synthetic validation
#       photos, one mostly flat built image) and saves every output (search values and indices, maps,
#       keypoint matches, transforms, findings);
#   .venv/bin/python lab/scripts/copymove_speed.py check data/cache/copymove_before.npz
#       the same with the current package, compared with the saved outputs (exit 1 on any difference);
#   .venv/bin/python lab/scripts/copymove_speed.py time [--repeats 3]
#       per image, the detectors of the baseline commit (BASE, loaded from git, never from the package)
#       and of the working tree, interleaved in one process: seconds per photo (median over images and
#       then over repeats) and the ratio. The machine is shared: compare the ratios.
# Answer (Intel Xeon with AMX-BF16, 2 vCPUs shared with other jobs, 1 torch thread; docs/performance.md):
# outputs identical on the 27 images (largest difference 0); the dense matcher 1.8-1.9x faster (0.945 ->
# 0.488 s per photo alone), the keypoint detector unchanged within noise (SIFT is most of its time).
"""Copy-move detectors: identity of outputs and speed, before and after (frozen lab script; see the header)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import torch

import imlscan.scanning.copymove as cm
from imlscan.scanning.copymove import CopyMoveConfig, CopyMoveMatcher
from imlscan.scanning.copymove_keypoints import KeypointConfig, KeypointMatcher
from imlscan.weights.store import load_model

BASE = "563de54f421a253ff58b130b3082ca044b40f89b"  # main before the speed-up
SIZE = 512
NOSO = Path("../shared/data/real-val/noso/images")
SYNTH = Path("data/synth-val/images")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def images() -> list[tuple[str, np.ndarray]]:
    """(name, 512 x 512 uint8 RGB) of every test image, resized as ``bench`` and ``scan`` do."""
    files = sorted(NOSO.glob("*.png")) + sorted(SYNTH.glob("*"))[:8]
    out = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        out.append((f.name, cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)))
    rng = np.random.default_rng(0)
    flat = np.full((SIZE, SIZE, 3), 120, np.uint8)  # mostly flat, one textured block copied
    flat[40:140, 40:140] = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    flat[300:400, 250:350] = flat[40:140, 40:140]
    out.append(("built_flat.png", flat))
    return out


def normalized(rgb: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() - MEAN) / STD


def configs() -> tuple[CopyMoveConfig, KeypointConfig]:
    """The shipped default weights' settings of both detectors."""
    md = load_model(None, "cpu").weights_info.metadata
    return CopyMoveConfig.of(md), KeypointConfig.of(md)


def outputs(dense: CopyMoveMatcher, kpm: KeypointMatcher, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Everything both detectors produce for one image, as arrays."""
    x = normalized(rgb)
    out: dict[str, np.ndarray] = {}
    zncc, offsets = dense.best_matches(x)
    out["dense_zncc"], out["dense_offsets"] = zncc.numpy(), offsets.numpy()
    saved = cm.bf16_prefilter_ok
    cm.bf16_prefilter_ok = lambda: False  # the plain blocked search too
    try:
        z2, o2 = dense.best_matches(x)
    finally:
        cm.bf16_prefilter_ok = saved
    out["dense_zncc_plain"], out["dense_offsets_plain"] = z2.numpy(), o2.numpy()
    out["dense_map"] = dense.prob_map(x, (SIZE, SIZE))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for i, (a, b) in enumerate(kpm.searches(gray)):
        out[f"kp_search{i}_a"], out[f"kp_search{i}_b"] = a, b
    a, b = kpm.matches(gray)
    out["kp_a"], out["kp_b"] = a, b
    ts = kpm.transforms(a, b)
    out["kp_matrices"] = np.array([t.matrix for t in ts]).reshape(-1, 2, 3)
    out["kp_inliers"] = np.array([t.inliers for t in ts], np.int64)
    fs = kpm.findings(gray, ts)
    out["kp_findings"] = np.array([[f.region_corr, f.fit_error] for f in fs], np.float64).reshape(-1, 2)
    out["kp_finding_maps"] = np.array([f.map for f in fs], np.float32).reshape(-1, SIZE, SIZE)
    out["kp_map"] = kpm.prob_map(rgb, (SIZE, SIZE))
    out["mask"] = np.maximum(out["dense_map"], out["kp_map"]) > 0.5
    return out


def save(path: str) -> None:
    dense_cfg, kp_cfg = configs()
    dense, kpm = CopyMoveMatcher(dense_cfg), KeypointMatcher(kp_cfg)
    arrays = {}
    for name, rgb in images():
        for k, v in outputs(dense, kpm, rgb).items():
            arrays[f"{name}/{k}"] = v
        print(name, "saved", flush=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def check(path: str) -> int:
    saved = np.load(path)
    dense_cfg, kp_cfg = configs()
    dense, kpm = CopyMoveMatcher(dense_cfg), KeypointMatcher(kp_cfg)
    worst_map, bad, n = 0.0, [], 0
    for name, rgb in images():
        got = outputs(dense, kpm, rgb)
        n += 1
        for k, v in got.items():
            want = saved[f"{name}/{k}"]
            if want.shape != v.shape:
                bad.append(f"{name}/{k}: shape {v.shape} != {want.shape}")
            elif k in ("dense_map", "kp_map", "kp_finding_maps", "dense_zncc", "dense_zncc_plain", "kp_findings"):
                d = float(np.abs(v.astype(np.float64) - want).max()) if v.size else 0.0
                worst_map = max(worst_map, d)
                if d > 1e-6:
                    bad.append(f"{name}/{k}: max abs diff {d:.3g}")
            elif not np.array_equal(v, want):
                bad.append(f"{name}/{k}: differs")
        print(name, "checked", flush=True)
    print(f"{n} images; largest difference of a map, ZNCC or finding: {worst_map:.3g}")
    print("IDENTICAL" if not bad else "DIFFERENT:\n  " + "\n  ".join(bad))
    return 0 if not bad else 1


def old_module(path: str, name: str) -> types.ModuleType:
    """The module at ``path`` as it was at BASE, loaded under ``name`` (not the package's)."""
    src = subprocess.check_output(["git", "show", f"{BASE}:{path}"], text=True)
    mod = types.ModuleType(name)
    mod.__file__ = f"{BASE[:7]}:{path}"
    sys.modules[name] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def timing(repeats: int, limit: int | None = None, only: str | None = None) -> None:
    old_cm = old_module("imlscan/scanning/copymove.py", "copymove_base")
    old_kp = old_module("imlscan/scanning/copymove_keypoints.py", "copymove_keypoints_base")
    dense_cfg, kp_cfg = configs()
    runners = {
        "dense before": old_cm.CopyMoveMatcher(old_cm.CopyMoveConfig(**dense_cfg.to_dict())),
        "dense after": CopyMoveMatcher(dense_cfg),
        "keypoints before": old_kp.KeypointMatcher(old_kp.KeypointConfig(**kp_cfg.to_dict())),
        "keypoints after": KeypointMatcher(kp_cfg),
    }
    runners = {k: v for k, v in runners.items() if only is None or k.startswith(only)}
    imgs = [(rgb, normalized(rgb)) for _, rgb in images()[:limit]]

    def call(name: str, rgb: np.ndarray, x: torch.Tensor) -> None:
        m = runners[name]
        m.prob_map(x, (SIZE, SIZE)) if name.startswith("dense") else m.prob_map(rgb, (SIZE, SIZE))

    for name in runners:  # warm-up (first-use checks, thread pools)
        call(name, *imgs[0])
    medians: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(repeats):
        per: dict[str, list[float]] = {k: [] for k in runners}
        for rgb, x in imgs:
            for name in runners:
                t0 = time.perf_counter()
                call(name, rgb, x)
                per[name].append(time.perf_counter() - t0)
        for k, v in per.items():
            medians[k].append(statistics.median(v))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {statistics.median(v):.4f} s" for k, v in per.items()), flush=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"{cpu}, {torch.get_num_threads()} torch threads, {len(imgs)} images at {SIZE}x{SIZE}, {repeats} repeats")
    for det in sorted({k.split()[0] for k in runners}):
        before, after = statistics.median(medians[f"{det} before"]), statistics.median(medians[f"{det} after"])
        ratios = [b / a for b, a in zip(medians[f"{det} before"], medians[f"{det} after"])]
        print(
            f"{det:9s}: before {before:.4f} s, after {after:.4f} s per photo (median); "
            f"speed-up per repeat {', '.join(f'{q:.1f}x' for q in ratios)}"
        )


def bench(folder: str, limit: int, repeats: int) -> None:
    """``imlscan bench --folder`` (``run_end_to_end``, fp32, no traces) with the detectors of BASE
    and of the working tree, alternating, ``repeats`` times each: seconds per photo per detector."""
    import imlscan.scanning.copymove as package_cm
    from imlscan.scanning.bench import run_end_to_end

    old_cm = old_module("imlscan/scanning/copymove.py", "copymove_base")
    old_kp = old_module("imlscan/scanning/copymove_keypoints.py", "copymove_keypoints_base")
    old_cm.KeypointMatcher = old_kp.KeypointMatcher
    model = load_model(None, "cpu")
    dense_cfg, kp_cfg = configs()
    new_matcher_for = package_cm.matcher_for

    def old_matcher_for(*args: object, **kwargs: object) -> object:
        return old_cm.CopyMoveMatcher(
            old_cm.CopyMoveConfig(**dense_cfg.to_dict()), old_kp.KeypointConfig(**kp_cfg.to_dict())
        )

    rows: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(repeats):
        for label, factory in (("before", old_matcher_for), ("after", new_matcher_for)):
            package_cm.matcher_for = factory
            try:
                res = run_end_to_end(model, folder, precision="fp32", limit=limit)
            finally:
                package_cm.matcher_for = new_matcher_for
            per = {k: v / res["images"] for k, v in res["copy_move_seconds"].items()}
            per["photos/s"] = res["images_per_s"]
            rows[label].append(per)
            print(f"repeat {r + 1} {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in per.items()), flush=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"{cpu}, {torch.get_num_threads()} torch threads, {limit} photos of {folder}, medians of {repeats}:")
    for k in rows["after"][0]:
        b = statistics.median(x[k] for x in rows["before"])
        a = statistics.median(x[k] for x in rows["after"])
        gain = a / b if k == "photos/s" else b / a
        print(f"  {k:10s} before {b:.4f}  after {a:.4f}  speed-up {gain:.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=["save", "check", "time", "bench"])
    p.add_argument("path", nargs="?", default="data/cache/copymove_before.npz")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit", type=int, default=None, help="time: only the first N images")
    p.add_argument("--only", choices=["dense", "keypoints"], default=None, help="time: one detector")
    a = p.parse_args()
    if a.mode == "save":
        save(a.path)
    elif a.mode == "check":
        return check(a.path)
    elif a.mode == "bench":
        bench(a.path, a.limit or 20, a.repeats)
    else:
        timing(a.repeats, a.limit, a.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
