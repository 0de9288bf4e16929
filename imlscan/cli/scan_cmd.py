"""``imlscan scan`` (a few photos, outputs a person can look at) and ``imlscan batch`` (a folder
of thousands, resumable and shardable). Both are thin layers over ``imlscan.scanning.predict``,
``imlscan.scanning.report`` and ``imlscan.scanning.batch``; heavy imports wait until a command runs so that
``imlscan --help`` stays instant.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import typer

from imlscan.cli import options
from imlscan.cli.app import app, err_console, print_error, sigterm_as_interrupt, stdout_json
from imlscan.cli.predictor import announce, load_predictor
from imlscan.cli.progress import ProgressBar
from imlscan.defaults import SMALL_IMAGE_SIDE
from imlscan.errors import ImlscanError, UsageError
from imlscan.safetext import shown


def _markup_safe(text: Any) -> str:
    """User text (a file name, an error quoting one) inside a rich markup string: control
    characters shown as escapes, brackets never read as markup."""
    from rich.markup import escape

    return escape(shown(text))


def _copy_move_cost_note(predictor: Any, workers: int) -> str | None:
    """What the copy-move detectors cost a batch on this device, and how to skip them (measured:
    CPU on 2 cores, GPU on an H200 machine with 16 cores; docs/performance.md)."""
    cm = predictor.copy_move
    if cm is None:
        return None
    both = cm.keypoints is not None
    if predictor.device.type == "cpu":
        from imlscan.scanning.copymove import bf16_prefilter_ok

        if bf16_prefilter_ok():  # the matcher's exact bf16 prefilter (imlscan.scanning.copymove) is faster
            cost = "matcher and keypoint detector add about 0.6 s" if both else "matcher adds about 0.4 s"
        else:
            cost = "matcher and keypoint detector add about 1 s" if both else "matcher adds about 0.8 s"
        skip = "--no-copy-move skips it"
        if both:
            skip = "--no-keypoints skips the detector (0.15 to 0.3 s), --no-copy-move both"
        return f"the copy-move {cost} per photo on a 2-core CPU (the network about 0.1 s); {skip}"
    if both:
        return (
            f"the keypoint copy-move detector runs on the CPU, in the {workers} decoding process(es): "
            "with 12 on an H200 machine a batch ran at half the speed it has without the copy-move "
            "detectors; raise --workers to your CPU cores, or --no-keypoints skips it"
        )
    return None


def expand_inputs(args: list[Path]) -> list[Path]:
    """Expand patterns the shell left alone (no match, or Windows): ``examples/*.png`` with no
    PNG is skipped with a note instead of failing as a missing file."""
    import glob

    paths: list[Path] = []
    for arg in args:
        text = str(arg)
        if arg.exists() or not glob.has_magic(text):
            paths.append(arg)
            continue
        matches = sorted(glob.glob(text))
        if not matches:
            err_console.print(f"note: no file matches {text}", markup=False, soft_wrap=True)
        paths += [Path(m) for m in matches]
    if not paths:
        raise UsageError("no images to scan", hint="give image files, e.g. imlscan scan photo.jpg")
    return paths


def output_names(paths: list[Path]) -> list[str]:
    """Output base names: the stem, or the full file name when two inputs share a stem, with
    a ``-2``, ``-3`` suffix if even that repeats, so no output overwrites another."""
    counts = Counter(p.stem for p in paths)
    used: set[str] = set()
    names = []
    for p in paths:
        base = p.stem if counts[p.stem] == 1 else p.name
        name, k = base, 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        names.append(name)
    return names


@app.command()
def scan(
    images: list[Path] = typer.Argument(
        ..., help="Photos to scan: JPEG, PNG, TIFF, WebP, BMP, GIF, HEIC/AVIF.", show_default=False
    ),
    out: Path = typer.Option(Path("outputs"), "--out", "-o", help="Folder for the outputs."),
    overlay: bool = options.OVERLAY,
    mask: bool = options.MASK,
    prob: bool = options.PROB,
    json_out: bool = typer.Option(False, "--json", help="Also print the JSON report on stdout."),
    html: bool = options.HTML,
    threshold: float = options.THRESHOLD,
    mode: str | None = options.MODE,
    size: int | None = options.SIZE,
    tile: int = options.TILE,
    tile_overlap: int = options.TILE_OVERLAP,
    copy_move: bool | None = options.COPY_MOVE,
    keypoints: bool | None = options.KEYPOINTS,
    traces: bool = options.TRACES,
    weights: str | None = options.WEIGHTS,
    device: str = options.DEVICE,
    precision: str = options.PRECISION,
    max_pixels: int = options.MAX_PIXELS,
) -> None:
    """Scan photos for manipulated regions; write NAME.json (always) and the pictures you ask for.

    Example: imlscan scan photo.jpg --overlay --html
    """
    from imlscan.fsutil import write_error
    from imlscan.scanning.predict import scan as scan_image
    from imlscan.scanning.report import claim_name, write_outputs

    images = expand_inputs(images)
    predictor = load_predictor(
        weights,
        device,
        precision,
        mode=mode,
        size=size,
        tile=tile,
        overlap=tile_overlap,
        copy_move=copy_move,
        keypoints=keypoints,
        traces=None if traces else (),
    )
    announce(predictor)
    reports: list[dict[str, Any]] = []
    failed = 0
    with sigterm_as_interrupt():
        for path, name in zip(images, output_names(images)):
            try:
                result = scan_image(path, predictor, threshold=threshold, max_pixels=max_pixels or None)
            except ImlscanError as e:
                if len(images) == 1:
                    raise
                print_error(e.message, e.hint)
                failed += 1
                reports.append({"input": {"path": str(path)}, "status": "error", "error": e.message})
                continue
            try:
                name = claim_name(out, name, path, result.input.get("sha256"))
                report = write_outputs(
                    result, out, name, overlay=overlay, mask=mask, prob=prob, html=html, extra={"status": "ok"}
                )
            except OSError as e:
                raise write_error(e, out) from None
            reports.append(report)
    _print_table(reports, out)
    _note_small(reports)
    if json_out:
        stdout_json(reports[0] if len(reports) == 1 else reports)
    if failed:
        raise typer.Exit(1)


def _note_small(reports: list[dict[str, Any]]) -> None:
    """The small-image caveat under the table, naming the photos (a count past three)."""
    from imlscan.scanning.predict import SMALL_IMAGE_WARNING

    small = [r["input"]["path"] or "(array)" for r in reports if SMALL_IMAGE_WARNING in r.get("warnings", ())]
    if small:
        which = ", ".join(small) if len(small) <= 3 else f"{len(small)} of {len(reports)} photos"
        err_console.print(f"[yellow]note: {_markup_safe(which)}: {SMALL_IMAGE_WARNING}[/]", soft_wrap=True)


def _percent_lower(report: dict[str, Any]) -> str:
    rank = report.get("score_vs_authentic")
    return f"{rank['percent_lower']:g}%" if rank else "-"


def _print_table(reports: list[dict[str, Any]], out: Path) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("image", overflow="fold")
    for col in ("score", "> authentic", "flagged", "regions"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("report", overflow="fold")
    for r in reports:
        path = _markup_safe(r["input"]["path"] or "(array)")
        if r.get("status") == "error":
            table.add_row(path, "[red]failed[/]", "", "", "", _markup_safe(r["error"]))
            continue
        table.add_row(
            path,
            f"{r['score']:.3f}",
            _percent_lower(r),
            f"{100 * r['mask_fraction']:.2f}%",
            str(r["regions_total"]),
            _markup_safe(out / r["outputs"]["json"]),
        )
    err_console.print(table)


@app.command()
def batch(
    input_dir: Path = typer.Argument(..., help="Folder of photos, scanned recursively.", show_default=False),
    out: Path = typer.Option(Path("outputs"), "--out", "-o", help="Output folder (mirrors the input tree)."),
    glob: list[str] = typer.Option(
        [], "--glob", help="Only files matching this pattern, e.g. '*.jpg' or 'day1/*' (repeatable)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo images already done with the same settings."),
    shard: str | None = typer.Option(
        None, "--shard", help="K/N: process only shard K of N (1 <= K <= N), for N parallel jobs.", show_default=False
    ),
    batch_size: int = options.BATCH_SIZE,
    workers: int = options.WORKERS,
    top: int = typer.Option(50, "--top", min=0, help="Images shown in the index.html contact sheet."),
    overlay: bool = options.OVERLAY,
    mask: bool = options.MASK,
    prob: bool = options.PROB,
    html: bool = options.HTML,
    threshold: float = options.THRESHOLD,
    mode: str | None = options.MODE,
    size: int | None = options.SIZE,
    tile: int = options.TILE,
    tile_overlap: int = options.TILE_OVERLAP,
    copy_move: bool | None = options.COPY_MOVE,
    keypoints: bool | None = options.KEYPOINTS,
    traces: bool = options.TRACES,
    weights: str | None = options.WEIGHTS,
    device: str = options.DEVICE,
    precision: str = options.PRECISION,
    compile: str = options.COMPILE,
    max_pixels: int = options.MAX_PIXELS,
) -> None:
    """Scan a folder of photos, resumably: results.jsonl, summary.csv and an index.html contact sheet.

    Exit code: 0 all fine, 1 some files failed (see results.jsonl), 2 usage error.

    Example: imlscan batch photos/ --out results/ --shard 1/4
    """
    from imlscan.scanning.batch import BatchOptions, parse_shard, run_batch

    shard_spec = parse_shard(shard) if shard is not None else None
    if not input_dir.is_dir():
        raise UsageError(f"{input_dir}: not a folder" if input_dir.exists() else f"{input_dir}: folder not found")
    predictor = load_predictor(
        weights,
        device,
        precision,
        mode=mode,
        size=size,
        tile=tile,
        overlap=tile_overlap,
        batch_size=batch_size,
        copy_move=copy_move,
        keypoints=keypoints,
        traces=None if traces else (),
        compile=compile,
    )
    announce(predictor)
    note = _copy_move_cost_note(predictor, workers)
    batch_options = BatchOptions(
        out_dir=out,
        globs=list(glob),
        overwrite=overwrite,
        shard=shard_spec,
        batch_size=batch_size,
        workers=workers,
        top=top,
        overlay=overlay,
        mask=mask,
        prob=prob,
        html=html,
        threshold=threshold,
        max_pixels=max_pixels or None,
    )
    with sigterm_as_interrupt(), ProgressBar("scanning", rate=True, transient=False) as bar:
        summary = run_batch(
            input_dir,
            predictor,
            batch_options,
            progress=bar,
            log=lambda m: err_console.print(shown(m), style="red", markup=False, soft_wrap=True),
            before_inference=(lambda: err_console.print(f"[yellow]note: {note}[/]", soft_wrap=True)) if note else None,
        )
    where = f" (shard {shard_spec[0]}/{shard_spec[1]})" if shard_spec else ""
    err_console.print(
        f"{summary.selected} of {summary.found} image(s){where}: {summary.processed} scanned, "
        f"{summary.skipped} already done, {summary.failed} failed. "
        f"Results: {shown(summary.results_path)}, {shown(summary.summary_path)}, {shown(summary.index_path)}",
        soft_wrap=True,
        markup=False,
    )
    if summary.small:
        err_console.print(
            f"[yellow]note: {summary.small} photo(s) under {SMALL_IMAGE_SIDE} px on the shorter side: a low score "
            "means little there (their reports say so; docs/scan.md, 'Small photos')[/]",
            soft_wrap=True,
        )
    if summary.selected == 0:
        err_console.print("note: this shard holds no image", soft_wrap=True)
    raise typer.Exit(summary.exit_code)
