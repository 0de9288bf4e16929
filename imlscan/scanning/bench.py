"""``imlscan bench``: inference speed and memory, measured, never assumed.

Every setting (precision x batch) is timed on the fast inference path (folded weights,
channels-last, weights cast to the precision, optional ``torch.compile``) and compared with
the plain eager fp32 model measured in the same run, so the speed-up is a ratio of two
numbers taken under the same machine load.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imlscan.device import device_name, resolve_device, resolve_precision
from imlscan.errors import UsageError
from imlscan.models.fuse import fast_forward
from imlscan.models.sparsevit import count_macs


@dataclass
class BenchResult:
    path: str  # "plain" (eager fp32, the network as trained) or "fast"
    precision: str
    batch: int
    compiled: bool
    images_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    peak_memory_mb: float | None
    memory_kind: str
    tflops: float
    speedup_vs_plain_fp32: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def prepare_fast_model(
    model: torch.nn.Module, device: torch.device, precision: str, compile: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same fast path ``scan``/``eval`` use (see :func:`imlscan.models.fuse.fast_forward`)."""
    return fast_forward(model, device, precision, compile=compile)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Peak memory of the block: CUDA max allocated, or the process's peak RSS on CPU (the
    kernel's high-water mark, reset through /proc/self/clear_refs where Linux allows it); ``mb``
    is None where neither exists (strict JSON has no NaN)."""
    out: dict = {"mb": None, "kind": "unavailable"}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out.update(mb=torch.cuda.max_memory_allocated(device) / 2**20, kind="cuda max allocated")
        return
    reset = False
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    yield out
    hwm = _read_status_kb("VmHWM")
    if hwm is not None:
        out.update(mb=hwm / 1024, kind="peak RSS" if reset else "peak RSS since process start")


def _read_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    device: torch.device,
    *,
    warmup: int,
    iters: int,
    min_seconds: float = 0.0,
) -> list[float]:
    """Wall-clock seconds of ``iters`` synchronized calls after ``warmup`` untimed ones."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        _sync(device)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < iters or (time.perf_counter() - start) < min_seconds:
            t0 = time.perf_counter()
            fn(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return times


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def run_benchmark(
    model: torch.nn.Module,
    *,
    size: int = 512,
    batches: list[int] = (1,),
    precisions: list[str] = ("fp32",),
    device: str = "auto",
    compile: bool = False,
    warmup: int = 2,
    iters: int = 10,
    baseline: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Benchmark ``model`` at ``size`` x ``size``; returns a JSON-ready dict with one result per
    setting, each with its speed-up against plain eager fp32 at the same batch size."""
    dev = resolve_device(device)
    precs = [resolve_precision(p, dev) for p in precisions]
    model = model.eval().to(dev)
    macs = count_macs(model.cpu(), size)
    model.to(dev)
    results: list[BenchResult] = []
    torch.manual_seed(0)

    def measure(path: str, fn, prec: str, b: int, compiled: bool) -> BenchResult:
        x = torch.randn(b, 3, size, size, device=dev)
        with peak_memory(dev) as mem:
            times = time_forward(fn, x, dev, warmup=warmup, iters=iters)
        p50 = statistics.median(times)
        ips = b / p50
        r = BenchResult(
            path=path,
            precision=prec,
            batch=b,
            compiled=compiled,
            images_per_s=ips,
            latency_p50_ms=p50 * 1e3,
            latency_p95_ms=_percentile(times, 95) * 1e3,
            peak_memory_mb=mem["mb"],
            memory_kind=mem["kind"],
            tflops=2 * macs * ips / 1e12,
        )
        if log:
            log(f"{path:5s} {prec:4s} batch {b:3d}{' compiled' if compiled else ''}: {ips:8.2f} images/s")
        return r

    plain_by_batch: dict[int, float] = {}
    for b in batches:
        if baseline:

            def plain(x: torch.Tensor) -> torch.Tensor:
                return model(x)

            r = measure("plain", plain, "fp32", b, False)
            plain_by_batch[b] = r.images_per_s
            r.speedup_vs_plain_fp32 = 1.0
            results.append(r)
        for prec in precs:
            fast = prepare_fast_model(model, dev, prec, compile=compile)
            r = measure("fast", fast, prec, b, compile)
            if b in plain_by_batch:
                r.speedup_vs_plain_fp32 = r.images_per_s / plain_by_batch[b]
            results.append(r)
            del fast
    return {
        "device": device_name(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": size,
        "gmacs_per_image": macs / 1e9,
        "warmup": warmup,
        "iters": iters,
        "results": [r.to_dict() for r in results],
    }


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} must be a comma-separated list of integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise UsageError(f"{what} must be positive integers, got {text!r}")
    return values


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"}


def _normalized(rgb: np.ndarray, size: int, mean: torch.Tensor, std: torch.Tensor, dev: torch.device) -> torch.Tensor:
    import cv2

    x = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    return (torch.from_numpy(x).to(dev).permute(2, 0, 1)[None].float() - mean) / std


def run_end_to_end(
    model: torch.nn.Module,
    folder: str | os.PathLike,
    *,
    device: str = "auto",
    precision: str = "fp32",
    size: int = 512,
    limit: int | None = None,
    out_dir: str | os.PathLike | None = None,
    copy_move: bool | None = None,
    keypoints: bool | None = None,
    traces: Sequence[str] = (),
) -> dict:
    """Time each stage of scanning a folder (decode, preprocess, model, copy-move detectors when
    the weights carry it or ``copy_move`` asks, each forensic trace in ``traces``, write outputs),
    one image at a time, to show where the time goes. Outputs go to a temporary folder unless
    ``out_dir`` is given."""
    import tempfile

    import cv2

    from imlscan.imageio import decode_bytes, read_file
    from imlscan.scanning.copymove import fuse, matcher_for
    from imlscan.scanning.traces import Photo, compute_traces

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise UsageError(f"no images found in {folder}")
    matcher = matcher_for(getattr(model, "weights_info", None), copy_move, keypoints)
    fast = prepare_fast_model(model.eval().to(dev), dev, prec)
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1) * 255
    stages = {"decode": 0.0, "preprocess": 0.0, "model": 0.0, "copy_move": 0.0, "write": 0.0}
    keypoint_s = 0.0
    if matcher is None:
        del stages["copy_move"]
    for name in traces:
        stages[f"trace:{name}"] = 0.0
    pixels = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_dir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        with torch.inference_mode():
            fast(torch.zeros(1, 3, size, size, device=dev))  # warm-up
            for i, f in enumerate(files):
                t0 = time.perf_counter()
                data = read_file(f)
                decoded = decode_bytes(data, name=str(f))
                rgb = decoded.rgb
                t1 = time.perf_counter()
                h, w = rgb.shape[:2]
                pixels += h * w
                x = _normalized(rgb, size, mean, std, dev)
                t2 = time.perf_counter()
                prob = torch.sigmoid(fast(x))[0, 0]
                _sync(dev)
                prob = prob.cpu().numpy()
                t3 = time.perf_counter()
                if matcher is not None:
                    s = matcher.config.size
                    small = cv2.resize(rgb, (s, s), interpolation=cv2.INTER_LINEAR)
                    xm = x if s == size else _normalized(rgb, s, mean, std, dev)
                    tk = time.perf_counter()
                    kp = matcher.keypoints.prob_map(small, prob.shape) if matcher.keypoints is not None else None
                    keypoint_s += time.perf_counter() - tk
                    prob = fuse(prob, matcher.image_map(small, xm, prob.shape, keypoint_map=kp))
                    stages["copy_move"] += time.perf_counter() - t3
                if traces:
                    for name, r in compute_traces(Photo(data, decoded), traces).items():
                        stages[f"trace:{name}"] += r.seconds
                t3b = time.perf_counter()
                prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
                cv2.imwrite(str(out / f"{i:06d}.prob.png"), np.round(np.clip(prob, 0, 1) * 65535).astype(np.uint16))
                cv2.imwrite(str(out / f"{i:06d}.mask.png"), (prob > 0.5).astype(np.uint8) * 255)
                t4 = time.perf_counter()
                for k, dt in zip(("decode", "preprocess", "model", "write"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3b)):
                    stages[k] += dt
    total = sum(stages.values())
    return {
        "device": device_name(dev),
        "precision": prec,
        "images": len(files),
        "megapixels": pixels / 1e6,
        "images_per_s": len(files) / total,
        "seconds": {k: v for k, v in stages.items()},
        "share": {k: v / total for k, v in stages.items()},
        "copy_move": matcher.settings() if matcher is not None else None,
        "copy_move_seconds": _detector_seconds(matcher, stages.get("copy_move", 0.0), keypoint_s),
        "traces": list(traces),
        "traces_s_per_megapixel": (
            sum(v for k, v in stages.items() if k.startswith("trace:")) / (pixels / 1e6) if traces and pixels else None
        ),
    }


def _detector_seconds(matcher: Any, copy_move_s: float, keypoint_s: float) -> dict[str, float] | None:
    """The copy-move stage's seconds split by detector: the keypoint detector's own, and the dense
    matcher's as the rest of the stage (resizing and fusing included). Why: the two are sped up and
    switched off apart, and on a GPU machine only the dense one runs on the GPU."""
    if matcher is None:
        return None
    out = {"dense": copy_move_s - keypoint_s}
    if matcher.keypoints is not None:
        out["keypoints"] = keypoint_s
    return out


def run_native_scaling(
    model: torch.nn.Module,
    megapixels: list[float],
    *,
    device: str = "auto",
    precision: str = "fp32",
    tile: int = 1024,
    overlap: int = 128,
    cudnn: bool = False,
    copy_move: bool | None = None,
    keypoints: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Native-resolution scans of 4:3 images of the given sizes through the tiled predictor:
    seconds, seconds per megapixel and peak memory per size (time should grow linearly).

    Each size is scanned twice: ``seconds_first`` is the first scan at that size, which on a GPU
    pays for the first run of each new tensor shape (tiles cut by the image edge, a last batch
    of fewer tiles; measured at seconds per size on an H200), and ``seconds`` the repeat, which
    is what a folder of same-sized photos costs per image."""
    from imlscan.scanning.predict import Predictor

    dev = resolve_device(device)
    pred = Predictor(
        model,
        device=dev,
        precision=precision,
        mode="native",
        tile=tile,
        overlap=overlap,
        cudnn=cudnn,
        copy_move=copy_move,
        keypoints=keypoints,
    )
    rng = np.random.default_rng(0)
    pred.predict_prob(rng.integers(0, 256, (tile, tile, 3), dtype=np.uint8))  # warm-up at the tile shape
    rows = []
    for mp in megapixels:
        h = int(round((mp * 1e6 * 3 / 4) ** 0.5))
        w = int(round(h * 4 / 3))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        with peak_memory(dev) as mem:
            t0 = time.perf_counter()
            prob = pred.predict_prob(img)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            prob = pred.predict_prob(img)
            dt = time.perf_counter() - t0
        assert prob.shape == (h, w)
        rows.append(
            {
                "megapixels": h * w / 1e6,
                "height": h,
                "width": w,
                "tiles": pred.describe((h, w)).get("tiles"),
                "seconds_first": first,
                "seconds": dt,
                "seconds_per_megapixel": dt / (h * w / 1e6),
                "peak_memory_mb": mem["mb"],
                "memory_kind": mem["kind"],
            }
        )
        if log:
            log(f"{h * w / 1e6:6.1f} MP ({w}x{h}): {dt:7.2f} s (first scan {first:.2f} s), peak {mem['mb']:.0f} MB")
        del img, prob
    return {
        "device": device_name(dev),
        "precision": pred.precision,
        "cudnn": cudnn and dev.type == "cuda",
        "tile": tile,
        "overlap": overlap,
        "copy_move": pred.copy_move.settings() if pred.copy_move is not None else None,
        "rows": rows,
    }
