"""``imlscan traces``: every forensic trace of a photo, as pictures with a legend and as JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from imlscan.cli import options
from imlscan.cli.app import app, err_console, print_error, stdout_json
from imlscan.errors import ImlscanError

TRACES_HELP = "Traces to compute, comma-separated: adq, grid, ghost, noise, ela, or all."


@app.command("traces")
def traces(
    images: list[Path] = typer.Argument(
        ..., help="Photos (JPEG for the JPEG traces; any format for noise).", show_default=False
    ),
    out: Path = typer.Option(
        Path("outputs"), "--out", "-o", help="Folder for NAME.trace-TRACE.png and NAME.traces.json."
    ),
    names: str = typer.Option("all", "--traces", help=TRACES_HELP),
    json_out: bool = typer.Option(False, "--json", help="Also print the results as JSON on stdout."),
    max_pixels: int = options.MAX_PIXELS,
) -> None:
    """Compute the training-free forensic traces of photos at their own resolution: where the JPEG
    was compressed once in a photo compressed twice, where its 8x8 grid is shifted, JPEG ghosts, noise
    that differs from the rest, and error level analysis (a view only).

    Example: imlscan traces photo.jpg --out traces/
    """
    from rich.table import Table
    from rich.text import Text

    from imlscan.cli.scan_cmd import expand_inputs, output_names
    from imlscan.fsutil import atomic_write_text
    from imlscan.imageio import decode_bytes, read_file
    from imlscan.safetext import dumps_json, shown
    from imlscan.scanning.trace_views import write_trace_pictures
    from imlscan.scanning.traces import Photo, compute_traces, parse_trace_names

    chosen = parse_trace_names(names)
    paths = expand_inputs(images)
    table = Table(title="forensic traces", title_justify="left")
    for col in ("photo", "trace", "applies", "score", "what it found"):
        table.add_column(col, overflow="fold")
    reports, failed = [], 0
    for path, stem in zip(paths, output_names(paths)):
        try:
            data = read_file(path)
            decoded = decode_bytes(data, name=str(path), max_pixels=max_pixels or None)
        except ImlscanError as e:
            failed += 1
            print_error(e.message, e.hint)
            continue
        results = compute_traces(Photo(data, decoded), chosen)
        pictures = write_trace_pictures(results, decoded.rgb, out, stem)
        report = {
            "input": {"path": str(path), "sha256": decoded.sha256, "width": decoded.width, "height": decoded.height},
            "traces": {n: {**r.to_dict(), "picture": pictures[n].name} for n, r in results.items()},
        }
        atomic_write_text(out / f"{stem}.traces.json", dumps_json(report, indent=2) + "\n")
        reports.append(report)
        for n, r in results.items():
            score = "" if r.score is None else f"{r.score:.2f}"
            table.add_row(Text(shown(path)), n, "yes" if r.applies else "no", score, Text(r.reason))
    err_console.print(table)
    if json_out:
        stdout_json(reports[0] if len(reports) == 1 else {"photos": reports})
    if failed:
        raise typer.Exit(1)
