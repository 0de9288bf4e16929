"""Device and precision choice: CUDA when available, bf16 only where the hardware has it."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from collections.abc import Iterator

import torch

from imlscan.errors import UsageError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit device must exist."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {device!r}", hint="use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA was asked for but torch sees no CUDA GPU", hint="use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"no GPU {dev.index}: torch sees {torch.cuda.device_count()}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("MPS was asked for but is not available", hint="use --device cpu")
    return dev


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX512-BF16): elsewhere bf16 autocast
    is emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` (fp32, bf16, fp16 or auto) for ``device``; ``auto`` is bf16 on
    CUDA and on CPUs with native bf16, fp32 elsewhere."""
    p = (precision or "fp32").lower()
    if p == "auto":
        if device.type == "cuda":
            return "bf16"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if p not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}", hint="use fp32, bf16, fp16 or auto")
    if p == "fp16" and device.type == "cpu":
        raise UsageError("fp16 is not supported on the CPU", hint="use bf16 or fp32")
    return p


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for inference/training; a no-op for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=PRECISIONS[precision]):
        yield


@contextlib.contextmanager
def cudnn_enabled(device: torch.device, enabled: bool) -> Iterator[None]:
    """Turn cuDNN on or off for the work inside (CUDA only; elsewhere a no-op).

    Inference leaves it off: on an H200 its per-shape set-up made the first scan at each new image
    size take 2-5 s, against 0.05-0.2 s without it, while repeated scans were at most 9% faster
    with it (docs/performance.md; ``lab/scripts/first_scan_cause.py``)."""
    if device.type != "cuda" or torch.backends.cudnn.enabled == enabled:
        yield
        return
    before = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = before


def device_name(dev: torch.device) -> str:
    """What a measurement ran on, for reports and weights provenance: the GPU's name, or the CPU
    model and its logical core count."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    model_name = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model_name = line.split(":", 1)[1].strip()
                    break
    return f"{dev.type} ({model_name or platform.processor() or 'unknown'}, {os.cpu_count()} logical cores)"
