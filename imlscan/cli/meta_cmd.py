"""``imlscan meta``: what photos say about themselves (metadata, edit history, EXIF thumbnail,
JPEG structure, Content Credentials), without running the model. A thin layer over
``imlscan.scanning.provenance``; every string it prints comes from the file, so none is read as
markup and control characters never reach the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from imlscan.cli.app import app, err_console, print_error, stdout_json
from imlscan.errors import ImlscanError


@app.command("meta")
def meta(
    photos: list[Path] = typer.Argument(..., help="Photos to read: JPEG, PNG, TIFF, WebP, HEIC...", show_default=False),
    json_out: bool = typer.Option(
        False, "--json", help="Print a JSON list on stdout, one object per file (like exiftool -json)."
    ),
    gps: bool = typer.Option(
        False, "--gps", help="Show GPS coordinates (by default only whether a position is recorded)."
    ),
) -> None:
    """Show what photos say about themselves: camera, times, software, edit history, EXIF thumbnail,
    JPEG tables and Content Credentials (C2PA), with short sourced findings. Metadata is easy to
    forge and to strip: these are leads, not verdicts.

    Exit code: 0 all read, 1 some file missing or not an image, 2 usage error.

    Example: imlscan meta IMG_0412.jpg --json
    """
    from imlscan.cli.scan_cmd import expand_inputs
    from imlscan.imageio import read_file
    from imlscan.scanning.provenance import CAVEAT, read_provenance

    records: list[dict[str, Any]] = []
    failed = 0
    for path in expand_inputs(photos):
        try:
            data = read_file(path)
        except ImlscanError as e:
            print_error(e.message, e.hint)
            failed += 1
            records.append({"SourceFile": str(path), "error": e.message})
            continue
        prov = read_provenance(data, gps=gps)
        if prov.format is None:
            message = f"{path}: not an image, or not a supported format"
            print_error(message)
            failed += 1
            records.append({"SourceFile": str(path), "error": message})
            continue
        record = {"SourceFile": str(path), "FileSize": len(data), **prov.to_dict()}
        records.append(record)
        _print_human(record)
    if any("error" not in r for r in records):
        err_console.print(f"note: {CAVEAT}", style="dim", markup=False, soft_wrap=True)
    if json_out:
        stdout_json(records)
    if failed:
        raise typer.Exit(1)


def _print_human(r: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    from imlscan.safetext import shown

    c = r.get("container") or {}
    size = f" {c['width']}x{c['height']}" if c.get("width") and c.get("height") else ""
    err_console.print(
        Text.assemble((shown(r["SourceFile"]), "bold"), f"  {r['format']}{size}, {r['FileSize']:,} bytes")
    )
    for f in r["findings"]:
        style = "yellow" if f["text"].startswith("unreadable:") else ""
        err_console.print(Text.assemble("  - ", (f["text"], style), (f"  ({f['source']})", "dim")), soft_wrap=True)
    table = Table(show_header=False, box=None, padding=(0, 1, 0, 4))
    for key, value in _fields(r):
        if value not in ("-", "none"):
            table.add_row(Text(key, style="bold"), Text(value))
    if table.row_count:
        err_console.print(table)


def _fields(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The fields a desk checks first, as (label, text), '-' where the file has none."""
    from imlscan.scanning.provenance.findings import camera_name

    e, x, t, k = r.get("exif") or {}, r.get("xmp") or {}, r.get("thumbnail") or {}, r.get("c2pa") or {}
    c = r.get("container") or {}
    camera = camera_name(e)
    captured = " ".join(str(e[f]) for f in ("date_time_original", "offset_time_original") if e.get(f))
    c2pa = "none"
    if k:
        c2pa = k.get("state_text", k.get("state", "?")) + (f" (signer {k['signer']})" if k.get("signer") else "")
    thumb = "none"
    if t:
        thumb = "not a readable JPEG" if not t.get("decodable", True) else f"{t.get('width')}x{t.get('height')}"
        if t.get("compared"):
            thumb += f", {'differs from' if t.get('mismatch') else 'matches'} the image (r={t.get('correlation')})"
    quality = "-"
    luma = next((q for q in c.get("quantization") or [] if q.get("role") == "luminance"), None)
    if luma:
        quality = f"{luma['ijg_quality']} ({'IJG standard tables' if luma['ijg_standard'] else 'own tables'})"
    gps = (e.get("gps") or {}).get("present")
    rows = [
        ("camera", camera or "-"),
        ("lens", str(e.get("lens_model") or "-")),
        ("captured", captured or "-"),
        ("software", str(e.get("software") or x.get("creator_tool") or "-")),
        ("edit history", f"{x['history']['count']} event(s)" if x.get("history") else "-"),
        ("GPS", "recorded" if gps else "-"),
        ("C2PA", c2pa),
        ("EXIF thumbnail", thumb),
        ("JPEG quality", quality),
        ("ICC profile", str((c.get("icc_profile") or {}).get("description") or "-")),
    ]
    return rows
