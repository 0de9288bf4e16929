"""``imlscan env``: the facts a user pastes into a bug report."""

from __future__ import annotations

import platform
import sys

import typer

from imlscan._version import __version__
from imlscan.cli.app import app, err_console, stdout_json


def collect_env() -> dict:
    """imlscan/torch/CUDA versions, devices, CPU bf16 support and cache paths (no network)."""
    import torch
    from huggingface_hub import constants as hf_constants

    from imlscan.device import cpu_has_native_bf16, resolve_device
    from imlscan.scanning.copymove import bf16_prefilter_ok
    from imlscan.weights.hub import hub_cache_dir, hub_endpoint, offline_mode
    from imlscan.weights.store import default_weights_path

    cuda = torch.cuda.is_available()
    return {
        "imlscan": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "default_device": str(resolve_device("auto")),
        "cpu_threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "copy_move_bf16_prefilter": bf16_prefilter_ok(),  # the dense matcher's CPU speed-up (docs/performance.md)
        "hf_home": hf_constants.HF_HOME,
        "hf_hub_cache": str(hub_cache_dir()),
        "hf_endpoint": hub_endpoint(),
        "hf_hub_offline": offline_mode(),
        "default_weights": str(default_weights_path() or "none (untrained model)"),
    }


@app.command("env")
def env(json_out: bool = typer.Option(False, "--json", help="Print as JSON on stdout.")) -> None:
    """Print torch/CUDA/device/cache facts for bug reports.

    Example: imlscan env --json
    """
    info = collect_env()
    if json_out:
        stdout_json(info)
        return
    from rich.table import Table

    t = Table(show_header=False, box=None)
    for k, v in info.items():
        t.add_row(f"[bold]{k}[/]", str(v))
    err_console.print(t)
