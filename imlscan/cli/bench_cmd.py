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
    compile: bool = typer.Option(
        False, "--compile", help="torch.compile the fast path, its default variant (kernels cached on disk)."
    ),
    compile_variants: str = typer.Option(
        None,
        "--compile-variants",
        help="Time these ways of running the fast path in one run, comma-separated: eager, compile, freeze, "
        "autotune, freeze-autotune.",
        show_default=False,
    ),
    matmul_size: int = typer.Option(
        2048,
        "--matmul-size",
        min=0,
        help="Side of the square matrix products that measure this machine's rate (0: skip).",
    ),
    interleave: bool = typer.Option(
        False,
        "--interleave",
        help="Time the settings of each batch size call by call in turn (fair ratios on a loaded machine; "
        "peak memory not measured).",
    ),
    iters: int = typer.Option(10, "--iters", min=1, help="Timed iterations per setting."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed warm-up iterations per setting."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Skip the plain eager fp32 reference."),
    folder: Path = typer.Option(
        None,
        "--folder",
        help="End-to-end mode: time 'imlscan batch' itself over this folder (photos/s, each stage's share).",
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="End-to-end mode: the first N photos only."),
    traces: str = typer.Option(
        "all", "--traces", help="End-to-end mode: forensic traces to time (adq,grid,ghost,noise,ela, all or none)."
    ),
    workers: str = typer.Option(
        "2", "--workers", help="End-to-end mode: batch's decoding processes; comma-separated to compare, e.g. 0,1,2."
    ),
    batch_size: str = typer.Option(
        "4", "--batch-size", help="End-to-end mode: batch's --batch-size; comma-separated to compare."
    ),
    keypoints_in: str = typer.Option(
        "auto",
        "--keypoints-in",
        help="End-to-end mode: where the keypoint detector runs: auto (batch's choice), main, workers; "
        "comma-separated to compare.",
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
    if compile and compile_variants:
        raise UsageError("give --compile or --compile-variants, not both", hint="e.g. --compile-variants eager,freeze")
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
        from imlscan.scanning.traces import parse_trace_names

        res = run_end_to_end(
            net,
            folder,
            device=device,
            precision=precision.split(",")[0].strip(),
            size=size,
            limit=limit,
            copy_move=copy_move,
            keypoints=keypoints,
            traces=parse_trace_names(traces),
            workers=_int_list(workers, "--workers", minimum=0),
            batch_sizes=parse_int_list(batch_size, "--batch-size"),
            keypoints_in=[k.strip() for k in keypoints_in.split(",") if k.strip()],
            baseline=not no_baseline,
            log=None if json_out else (lambda s: err_console.print(f"[dim]{s}[/]")),
        )
        res["model"] = name
        if json_out:
            stdout_json(res)
        else:
            _print_end_to_end(name, res)
        return
    res = run_benchmark(
        net,
        size=size,
        batches=parse_int_list(batch, "--batch"),
        precisions=[p.strip() for p in precision.split(",") if p.strip()],
        device=device,
        compile=[v.strip() for v in compile_variants.split(",") if v.strip()] if compile_variants else compile,
        warmup=warmup,
        iters=iters,
        baseline=not no_baseline,
        matmul_size=matmul_size or None,
        interleave=interleave,
        log=None if json_out else (lambda s: err_console.print(f"[dim]{s}[/]")),
    )
    res["model"] = name
    if json_out:
        stdout_json(res)
        return
    from rich.table import Table

    t = Table(title=f"{name} at {size}x{size} on {res['device']} ({res['threads']} threads)")
    cols = ("path", "precision", "batch", "images/s", "p50 ms", "p95 ms", "peak MB", "TFLOP/s", "of matmul", "speed-up")
    for col in cols:
        t.add_column(col, justify="right")
    for r in res["results"]:
        frac = r["fraction_of_matmul_rate"]
        t.add_row(
            r["path"] + ("" if r["compile_variant"] == "eager" else f" +{r['compile_variant']}"),
            r["precision"],
            str(r["batch"]),
            f"{r['images_per_s']:.2f}",
            f"{r['latency_p50_ms']:.1f}",
            f"{r['latency_p95_ms']:.1f}",
            "n/a" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}",
            f"{r['tflops']:.3f}",
            "" if frac is None else f"{100 * frac:.1f}%",
            "" if r["speedup_vs_plain_fp32"] is None else f"{r['speedup_vs_plain_fp32']:.2f}x",
        )
    err_console.print(t)
    if res["matmul_tflops"]:
        rates = ", ".join(f"{k} {v:.3f}" for k, v in res["matmul_tflops"].items())
        err_console.print(
            f"matrix-product rate here ({res['matmul_size']}x{res['matmul_size']}, {res['threads']} threads): "
            f"{rates} TFLOP/s; 'of matmul' is each row's TFLOP/s over the rate in its precision"
        )


def _int_list(text: str, what: str, *, minimum: int) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``, each at least ``minimum``; anything else is a usage error."""
    from imlscan.errors import UsageError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < minimum:
        raise UsageError(f"{what} takes integers >= {minimum}, comma-separated, got {text!r}")
    return values


def _print_end_to_end(name: str, res: dict) -> None:
    """The end-to-end rows (photos/s, speed-up, which side limits), then each stage per photo."""
    from rich.table import Table

    rows, n = res["rows"], res["images"]
    title = (
        f"{name}: imlscan batch over {n} photos ({res['megapixels']:.1f} MP) on {res['device']}, "
        f"{res['cores']} cores, {res['threads']} torch threads"
    )
    # One column per setting, so that several settings still fit a terminal 80 columns wide.
    t = Table(title=title)
    t.add_column("setting")
    for i in range(1, len(rows) + 1):
        t.add_column(f"#{i}", justify="right")
    cells = {
        "path": lambda r: f"{r['path']} {r['precision']}",
        "workers": lambda r: str(r["workers"]),
        "batch size": lambda r: str(r["batch_size"]),
        "keypoints in": lambda r: r["keypoints_in"] or "off",
        "photos/s": lambda r: f"{r['photos_per_s']:.2f}",
        "photos/s started": lambda r: f"{r['photos_per_s_started']:.2f}",
        "vs plain": lambda r: "" if r["speedup_vs_plain"] is None else f"{r['speedup_vs_plain']:.2f}x",
        "main busy s": lambda r: f"{r['main_busy_s']:.1f}",
        "main waits s": lambda r: f"{r['main_wait_s']:.1f}",
        "workers busy s": lambda r: f"{r['worker_busy_s']:.1f}",
        "CPU use": lambda r: f"{100 * r['cpu_use']:.0f}%",
        "CPU s/photo": lambda r: f"{r['cpu_s_per_photo']:.2f}",
        "limited by": lambda r: r["limited_by"],
    }
    for label, cell in cells.items():
        t.add_row(label, *(cell(r) for r in rows))
    err_console.print(t)
    err_console.print(
        "photos/s started: once the first decoded photo was in (without the processes' start); CPU use: of "
        "all cores over the run (low on a shared machine); CPU s/photo: every process's CPU time per photo"
    )
    s = Table(title="each stage: seconds per photo (share of all stages' seconds); w: in the decoding processes")
    s.add_column("stage")
    for i in range(1, len(rows) + 1):
        s.add_column(f"#{i}", justify="right")
    for k in dict.fromkeys(k for r in rows for k in r["seconds"]):
        cells = [
            f"{r['seconds'][k] / n:.3f} ({100 * r['share'][k]:.0f}%){' w' if r['side'][k] == 'workers' else ''}"
            if k in r["seconds"]
            else "-"
            for r in rows
        ]
        s.add_row(k, *cells)
    err_console.print(s)
    fast = next((r for r in rows if r["path"] == "fast" and r["network_speedup_vs_plain"] is not None), None)
    if fast is not None:
        err_console.print(f"the network alone, fast against plain (#1): {fast['network_speedup_vs_plain']:.2f}x")
