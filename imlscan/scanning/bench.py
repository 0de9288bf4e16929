"""``imlscan bench``: inference speed and memory, measured, never assumed.

Every setting (precision x batch) is timed on the fast inference path (folded weights,
channels-last, weights cast to the precision, optional ``torch.compile``) and compared with
the plain eager fp32 model measured in the same run, so the speed-up is a ratio of two
numbers taken under the same machine load.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imlscan.defaults import CPU_BF16_FP32_PARTS
from imlscan.device import cpu_has_native_bf16, device_name, resolve_device, resolve_precision
from imlscan.errors import UsageError
from imlscan.models.fuse import EAGER, compile_variant, fast_forward
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
    compile_variant: str = EAGER  # "eager" or a name in imlscan.models.fuse.COMPILE_VARIANTS
    first_call_s: float | None = None  # the first, untimed call: compiling (or reading the cache) included
    # tflops over this machine's own matrix-product rate in the row's precision, measured in the
    # same run (``matmul_tflops``); None where that rate was not measured.
    fraction_of_matmul_rate: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def prepare_fast_model(
    model: torch.nn.Module, device: torch.device, precision: str, compile: bool | str = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same fast path ``scan``/``eval`` use (see :func:`imlscan.models.fuse.fast_forward`), the
    parts that bf16 CPU scans keep in fp32 included; ``compile``: False, True (the default
    variant) or a compile variant's name."""
    return fast_forward(model, device, precision, compile=compile, keep_fp32=CPU_BF16_FP32_PARTS)


def matmul_tflops(precision: str, device: torch.device, *, size: int = 2048, reps: int = 5, warmup: int = 2) -> float:
    """This machine's rate for one large square matrix product in ``precision``, in TFLOP/s
    (median of ``reps`` timed products after ``warmup``), with torch's current thread count.

    Why: a network's TFLOP/s means little alone on a shared or unfamiliar machine; measured in
    the same run, under the same load and threads, it says what fraction of the rate the chip
    gives a matrix product the network reaches, i.e. how far kernels other than matrix
    products (memory-bound passes, layout copies) hold it back."""
    if size < 1 or reps < 1:
        raise UsageError(f"the matrix-product check needs a positive size and reps, got {size} and {reps}")
    product, a = _matrix_product(precision, device, size)
    times = time_forward(product, a, device, warmup=warmup, iters=reps)
    return 2 * size**3 / statistics.median(times) / 1e12


def _matrix_product(
    precision: str, device: torch.device, size: int
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """``x -> x @ b`` for a fixed random square ``b``, and the ``a`` to call it with."""
    from imlscan.device import PRECISIONS

    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=PRECISIONS[precision])
    b = torch.randn(size, size, generator=g).to(device=device, dtype=PRECISIONS[precision])
    return (lambda x: x @ b), a


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
    compile: bool | str | Sequence[str] = False,
    warmup: int = 2,
    iters: int = 10,
    baseline: bool = True,
    matmul_size: int | None = 2048,
    interleave: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Benchmark ``model`` at ``size`` x ``size``; returns a JSON-ready dict with one result per
    setting, each with its speed-up against plain eager fp32 at the same batch size and the
    fraction it reaches of this machine's matrix-product rate in its precision (measured first,
    ``matmul_size`` square; None skips it).

    ``compile``: False (the eager fast path), True (the default compile variant), or one or more
    variant names (``"eager"``, or names in :data:`imlscan.models.fuse.COMPILE_VARIANTS`), each
    timed on the fast path in the same run. The first call of each setting is untimed (it
    compiles or reads the kernel cache; ``first_call_s``) and counts as one of the ``warmup``
    calls.

    ``interleave``: keep every setting of a batch size built and time them call by call in turn
    (``iters`` rounds) instead of one after the other, with one matrix product per precision in
    each round (the rate is then the median over the start and the rounds). Why: on a shared
    machine the load changes within seconds, and timing the settings in turn gives each the same
    load, so their ratios hold; peak memory is then not measured (the settings are resident
    together)."""
    dev = resolve_device(device)
    precs = [resolve_precision(p, dev) for p in precisions]
    variants = [compile_variant(v) for v in ([compile] if isinstance(compile, (bool, str)) else compile)]
    if not variants:
        raise UsageError("no compile variant to time", hint="e.g. eager,freeze")
    if matmul_size is not None and matmul_size < 0:
        raise UsageError(f"the matrix-product size must be positive (0 or None skips it), got {matmul_size}")
    model = model.eval().to(dev)
    macs = count_macs(model.cpu(), size)
    model.to(dev)
    # The matrix products' seconds per precision: fp32 and bf16 always where bf16 is native (the
    # two rates that say what a chip gives), and each timed precision.
    products: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]] = {}
    product_s: dict[str, list[float]] = {}

    def rate(seconds: list[float]) -> float:
        return 2 * matmul_size**3 / statistics.median(seconds) / 1e12

    if matmul_size:
        native_bf16 = dev.type != "cpu" or cpu_has_native_bf16()
        for prec in dict.fromkeys(["fp32", *(["bf16"] if native_bf16 else []), *precs]):
            products[prec] = _matrix_product(prec, dev, matmul_size)
            product_s[prec] = time_forward(*products[prec], dev, warmup=2, iters=5)
        if log:
            rates = ", ".join(f"{k} {rate(v):.3f}" for k, v in product_s.items())
            log(f"matrix product {matmul_size}x{matmul_size}: {rates} TFLOP/s")
        if not interleave:
            products.clear()  # kept only to time again between the settings
    results: list[BenchResult] = []
    torch.manual_seed(0)

    def plain(x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def build(path: str, prec: str, variant: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return plain if path == "plain" else prepare_fast_model(model, dev, prec, compile=variant)

    def first_calls(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
        """The warm-up: the first call timed apart (compiling happens there), then the rest."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            fn(x)
        _sync(dev)
        first = time.perf_counter() - t0
        time_forward(fn, x, dev, warmup=max(warmup - 1, 0), iters=0)
        return first

    for b in batches:
        x = torch.randn(b, 3, size, size, device=dev)
        specs = ([("plain", "fp32", EAGER)] if baseline else []) + [("fast", p, v) for p in precs for v in variants]
        measured: list[tuple[float, list[float], dict]] = []
        if interleave:
            fns = [build(*spec) for spec in specs]
            firsts = [first_calls(fn, x) for fn in fns]
            times: list[list[float]] = [[] for _ in fns]
            for _ in range(iters):
                for i, fn in enumerate(fns):
                    times[i] += time_forward(fn, x, dev, warmup=0, iters=1)
                for prec, (product, a) in products.items():
                    product_s[prec] += time_forward(product, a, dev, warmup=0, iters=1)
            unmeasured = {"mb": None, "kind": "not measured (interleaved)"}
            measured = [(first, t, unmeasured) for first, t in zip(firsts, times)]
            del fns
        else:
            for spec in specs:
                fn = build(*spec)
                with peak_memory(dev) as mem:
                    first = first_calls(fn, x)
                    measured.append((first, time_forward(fn, x, dev, warmup=0, iters=iters), mem))
                del fn
        plain_ips = None
        for (path, prec, variant), (first, times_s, mem) in zip(specs, measured):
            p50 = statistics.median(times_s)
            ips = b / p50
            tflops = 2 * macs * ips / 1e12
            if path == "plain":
                plain_ips = ips
            results.append(
                BenchResult(
                    path=path,
                    precision=prec,
                    batch=b,
                    compiled=variant != EAGER,
                    images_per_s=ips,
                    latency_p50_ms=p50 * 1e3,
                    latency_p95_ms=_percentile(times_s, 95) * 1e3,
                    peak_memory_mb=mem["mb"],
                    memory_kind=mem["kind"],
                    tflops=tflops,
                    speedup_vs_plain_fp32=None if plain_ips is None else ips / plain_ips,
                    compile_variant=variant,
                    first_call_s=first,
                )
            )
            if log:
                how = "" if variant == EAGER else f" {variant}"
                log(f"{path:5s} {prec:4s} batch {b:3d}{how}: {ips:8.2f} images/s (first call {first:.1f} s)")
    del products
    matmul = {prec: rate(v) for prec, v in product_s.items()}
    for r in results:
        if r.precision in matmul:
            r.fraction_of_matmul_rate = r.tflops / matmul[r.precision]
    return {
        "device": device_name(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": size,
        "gmacs_per_image": macs / 1e9,
        "warmup": warmup,
        "iters": iters,
        "interleaved": interleave,
        "matmul_size": matmul_size or None,
        "matmul_tflops": matmul or None,
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


def run_end_to_end(
    model: torch.nn.Module,
    folder: str | os.PathLike,
    *,
    device: str = "auto",
    precision: str = "fp32",
    size: int | None = None,
    limit: int | None = None,
    copy_move: bool | None = None,
    keypoints: bool | None = None,
    traces: Sequence[str] | None = None,
    workers: Sequence[int] = (2,),
    batch_sizes: Sequence[int] = (4,),
    keypoints_in: Sequence[str] = ("auto",),
    baseline: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Time the real ``imlscan batch`` (``run_batch``, every default output, into a temporary
    folder) over the photos of ``folder``: photos/s on the wall clock and where the time went,
    as the run itself records it (``BatchProfile``: each stage's seconds, on which side it ran,
    and how busy the main process and the decoding processes were).

    One row per setting (``workers`` x ``batch_sizes`` x ``keypoints_in``, on the fast path),
    then, with ``baseline``, the first setting once more with the plain eager fp32 network, so
    each row's speed-up is a ratio of two runs under the same machine load. Why the real run
    and not a loop of its stages: ``batch`` overlaps them across processes, so its speed is set
    by the busier side, not by the sum. ``keypoints_in``: "auto" (``Predictor``'s choice),
    "main" or "workers"; ``traces`` None: the default traces."""
    import tempfile

    from imlscan.scanning.batch import BatchOptions, BatchProfile, discover, prepare, run_batch
    from imlscan.scanning.predict import Predictor

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    for where in keypoints_in:
        if where not in _KEYPOINTS_IN:
            raise UsageError(f"unknown keypoint placement {where!r}", hint=f"use {', '.join(_KEYPOINTS_IN)}")
    if not workers or not batch_sizes or min(workers) < 0 or min(batch_sizes) < 1:
        raise UsageError("workers must be >= 0 and batch sizes >= 1")
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder" if root.exists() else f"{root}: folder not found")
    photos = discover(root).images[:limit]
    if not photos:
        raise UsageError(f"no images found in {folder}")
    settings = [(w, b, k) for w in workers for b in batch_sizes for k in keypoints_in]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def predictor(fast: bool, batch_size: int, where: str) -> Predictor:
        pred = Predictor(
            model,
            device=dev,
            precision=prec if fast else "fp32",
            size=size,
            batch_size=batch_size,
            fast=fast,
            copy_move=copy_move,
            keypoints=keypoints,
            traces=traces,
        )
        pred.keypoints_in_workers = _KEYPOINTS_IN[where]
        return pred

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="imlscan-bench-") as tmp:
        src = root
        if limit is not None:  # batch scans a whole folder: give it a folder of these photos only
            src = Path(tmp) / "photos"
            for rel in photos:
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / rel, src / rel)
        first = photos[0]
        runs = [(True, *s) for s in settings] + ([(False, *settings[0])] if baseline else [])
        pixels = 0.0
        for i, (fast, w, b, where) in enumerate(runs):
            pred = predictor(fast, b, where)
            _warm_up(pred, prepare, src / first, Path(tmp))
            profile = BatchProfile()
            opts = BatchOptions(out_dir=Path(tmp) / f"out-{i}", batch_size=b, workers=w)
            summary = run_batch(src, pred, opts, profile=profile)
            if summary.failed:
                raise UsageError(f"{summary.failed} of {len(photos)} photos failed to scan; see {opts.out_dir}")
            pixels = sum(r["input"]["width"] * r["input"]["height"] for r in _records(summary.results_path))
            row = {
                "path": "fast" if fast else "plain",
                "precision": pred.precision,
                "workers": w,
                "batch_size": b,
                "keypoints_in": _keypoints_placement(pred),
                "photos_per_s": profile.images / profile.wall_s,
                # Once the first decoded photo was in: without the decoding processes' start.
                "photos_per_s_started": profile.images / (profile.wall_s - (profile.first_photo_s or 0.0)),
                **profile.to_dict(),
            }
            row["limited_by"] = _limited_by(row, w)
            # How full the cores were: every process's CPU seconds over what the cores could give;
            # and the CPU seconds a photo took, which bound photos/s by cores / that on any load.
            cpu = profile.main_cpu_s + profile.worker_cpu_s
            row["cpu_use"] = cpu / (cores * profile.wall_s)
            row["cpu_s_per_photo"] = cpu / max(profile.images, 1)
            rows.append(row)
            if log:
                log(
                    f"{row['path']:5s} workers {w} batch {b} keypoints in {row['keypoints_in'] or 'off'}: "
                    f"{row['photos_per_s']:.2f} photos/s"
                )
    plain = next((r for r in rows if r["path"] == "plain"), None)
    for r in rows:
        r["speedup_vs_plain"] = r["photos_per_s"] / plain["photos_per_s"] if plain else None
        net = r["seconds"].get("network")
        r["network_speedup_vs_plain"] = plain["seconds"]["network"] / net if plain and net else None
        trace_s = sum(v for k, v in r["seconds"].items() if k.startswith("trace"))
        r["traces_s_per_megapixel"] = trace_s / (pixels / 1e6) if trace_s and pixels else None
    return {
        "device": device_name(dev),
        "cores": cores,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": prec,
        "images": len(photos),
        "megapixels": pixels / 1e6,
        "copy_move": (pred.copy_move.settings() if pred.copy_move is not None else None),
        "traces": list(pred.traces),
        "rows": rows,
    }


_KEYPOINTS_IN: dict[str, bool | None] = {"auto": None, "main": False, "workers": True}


def _keypoints_placement(pred: Any) -> str | None:
    """Where this predictor's keypoint detector runs in a batch: "main", "workers" or None (off)."""
    if pred.copy_move is None or pred.copy_move.keypoints is None:
        return None
    return "workers" if pred.keypoint_job() is not None else "main"


def _warm_up(pred: Any, prepare: Callable[[dict], dict], photo: Path, tmp: Path) -> None:
    """One photo through the decoding side and the predictor, untimed: first-use costs (imports,
    the network's first call, the dense matcher's bf16 self-check) would otherwise fall on
    whichever row runs first. The decoding processes are new in every run and pay theirs there."""
    task = {"path": str(photo), "json": str(tmp / "warm-up.json"), "expected": [], "key": "", "overwrite": True}
    res = prepare({**task, "max_pixels": None, "keypoints": pred.keypoint_job(), "traces": pred.traces})
    if res["kind"] != "image":
        raise UsageError(res.get("error") or f"{photo}: cannot be scanned")
    pred.predict_parts([res["decoded"].rgb], [res["keypoints"]])


def _records(path: Path | None) -> list[dict[str, Any]]:
    import json

    if path is None:
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _limited_by(row: dict[str, Any], workers: int) -> str:
    """Which side set the run's pace: the main process when it was busy more than it waited for
    decoded photos, else the decoding processes (with ``workers`` 0 everything is the main one)."""
    return "main" if workers == 0 or row["main_wait_s"] < row["main_busy_s"] else "workers"


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
