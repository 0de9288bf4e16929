"""``imlscan bench``: images/s, latency, memory and speed-up, measured in one run."""

from __future__ import annotations

from pathlib import Path

import typer

from imlscan.cli import options
from imlscan.cli.app import app, err_console, stdout_json


@app.command()
def bench(
    model: str = typer.Option(
        None,
        "--model",
        help="Variant to time with random weights (speed does not depend on them), e.g. sparsevit-b.",
        show_default=False,
    ),
    weights: str = typer.Option(
        None,
        "--weights",
        help="Time a weights file or registered name. Default (neither option): the weights scan uses.",
        show_default=False,
    ),
    size: int = typer.Option(512, "--size", help="Square input size in pixels."),
    batch: str = typer.Option("1", "--batch", help="Comma-separated batch sizes, e.g. 1,8,32."),
    precision: str = typer.Option("fp32,bf16", "--precision", help="Comma-separated: fp32, bf16, fp16, auto."),
    device: str = options.DEVICE,
    compile: bool = typer.Option(False, "--compile", help="Also torch.compile the fast path (cached on disk)."),
    iters: int = typer.Option(10, "--iters", min=1, help="Timed iterations per setting."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed warm-up iterations per setting."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Skip the plain eager fp32 reference."),
    folder: Path = typer.Option(
        None, "--folder", help="End-to-end mode: decode + preprocess + model + write over this folder."
    ),
    limit: int = typer.Option(None, "--limit", help="End-to-end mode: at most this many images."),
    traces: str = typer.Option(
        "all", "--traces", help="End-to-end mode: forensic traces to time (adq,grid,ghost,noise,ela, all or none)."
    ),
    native: str = typer.Option(
        None, "--native", help="Native-resolution tiled scans of these sizes in megapixels, e.g. 1,6,12,24."
    ),
    cudnn: bool = typer.Option(
        False,
        "--cudnn",
        help="With --native on CUDA: scan with cuDNN on, as scans ran before (off by default: slow first scans).",
    ),
    copy_move: bool | None = typer.Option(
        None,
        "--copy-move/--no-copy-move",
        help="With --folder or --native: time the copy-move detectors too (default: as the weights say).",
        show_default=False,
    ),
    keypoints: bool | None = typer.Option(
        None,
        "--keypoints/--no-keypoints",
        help="With the copy-move detectors: time the keypoint detector too (default: as the weights say).",
        show_default=False,
    ),
    threads: int = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON on stdout."),
) -> None:
    """Benchmark inference speed and memory (warm-up, then images/s, latency p50/p95, peak
    memory and the speed-up against plain eager fp32 measured in the same run).

    Example: imlscan bench --model sparsevit-b --batch 1,8 --precision fp32,bf16
    """
    import torch

    from imlscan.errors import UsageError
    from imlscan.models import create_model
    from imlscan.scanning.bench import parse_int_list, run_benchmark, run_end_to_end, run_native_scaling
    from imlscan.weights.store import load_model

    if cudnn and not native:
        raise UsageError("--cudnn applies to --native scans only", hint="e.g. imlscan bench --native 1,12 --cudnn")
    if threads:
        torch.set_num_threads(threads)
    if model and weights:
        raise UsageError("give --model or --weights, not both", hint="--model times random weights of a variant")
    net = create_model(model) if model else load_model(weights, device="cpu")
    info = getattr(net, "weights_info", None)
    name = model or weights or (info.path if info is not None else "untrained default")
    if native:
        try:
            mps = [float(v) for v in native.split(",") if v.strip()]
        except ValueError:
            mps = []
        if not mps or any(v <= 0 for v in mps):
            raise UsageError(f"--native takes positive megapixel sizes like 1,6,24, got {native!r}")
        res = run_native_scaling(
            net,
            mps,
            device=device,
            precision=precision.split(",")[0].strip(),
            cudnn=cudnn,
            copy_move=copy_move,
            keypoints=keypoints,
            log=None if json_out else (lambda s: err_console.print(f"[dim]{s}[/]")),
        )
        res["model"] = name
        if json_out:
            stdout_json(res)
        return
    if folder is not None:
        prec = precision.split(",")[0].strip()
        from imlscan.scanning.traces import parse_trace_names

        res = run_end_to_end(
            net,
            folder,
            device=device,
            precision=prec,
            size=size,
            limit=limit,
            copy_move=copy_move,
            keypoints=keypoints,
            traces=parse_trace_names(traces),
        )
        res["model"] = name
        if json_out:
            stdout_json(res)
        else:
            err_console.print(
                f"[bold]{name}[/] end-to-end on {res['images']} images ({res['megapixels']:.1f} MP), "
                f"{res['device']}, {res['precision']}: [bold]{res['images_per_s']:.2f} images/s[/]"
            )
            for k, v in res["seconds"].items():
                err_console.print(f"  {k:12s} {v:8.2f} s  {100 * res['share'][k]:5.1f}%")
                if k == "copy_move":
                    for d, dv in res["copy_move_seconds"].items():
                        err_console.print(f"    {d:10s} {dv:8.2f} s  {dv / res['images']:.3f} s per photo")
            if res["traces_s_per_megapixel"] is not None:
                err_console.print(f"  traces together: {res['traces_s_per_megapixel']:.3f} s per megapixel")
        return
    res = run_benchmark(
        net,
        size=size,
        batches=parse_int_list(batch, "--batch"),
        precisions=[p.strip() for p in precision.split(",") if p.strip()],
        device=device,
        compile=compile,
        warmup=warmup,
        iters=iters,
        baseline=not no_baseline,
        log=None if json_out else (lambda s: err_console.print(f"[dim]{s}[/]")),
    )
    res["model"] = name
    if json_out:
        stdout_json(res)
        return
    from rich.table import Table

    t = Table(title=f"{name} at {size}x{size} on {res['device']} ({res['threads']} threads)")
    for col in ("path", "precision", "batch", "images/s", "p50 ms", "p95 ms", "peak MB", "TFLOP/s", "speed-up"):
        t.add_column(col, justify="right")
    for r in res["results"]:
        t.add_row(
            r["path"] + (" +compile" if r["compiled"] else ""),
            r["precision"],
            str(r["batch"]),
            f"{r['images_per_s']:.2f}",
            f"{r['latency_p50_ms']:.1f}",
            f"{r['latency_p95_ms']:.1f}",
            "n/a" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}",
            f"{r['tflops']:.3f}",
            "" if r["speedup_vs_plain_fp32"] is None else f"{r['speedup_vs_plain_fp32']:.2f}x",
        )
    err_console.print(t)
