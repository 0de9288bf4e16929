"""What a person reads after a scan: the overlay picture, the JSON report, the self-contained
HTML report and the batch contact sheet.

Rendering only: everything here works from a ``ScanResult`` (or the JSON records of one), whose
score and regions ``result`` computed. It never runs the model and does not import torch, so batch
workers and report tools stay light.
"""

from __future__ import annotations

import base64
import html as htmllib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from imlscan.fsutil import atomic_write_bytes, atomic_write_text, fit_name, name_max, short_hash
from imlscan.imageio import encode_jpeg, encode_png, write_mask_png, write_png, write_prob_png
from imlscan.safetext import dumps_json, href
from imlscan.scanning.result import REGIONS_DEFINITION, SCORE_DEFINITION, Region, ScanResult
from imlscan.scanning.trace_views import render_trace, trace_panels_html

COPY_MOVE_NOTE = (
    "copy-move detectors: the share of the region that the copy-move detectors flagged. They mark "
    "content that occurs twice in the photo, so such regions come in pairs (the copy and its source, "
    "which they cannot tell apart); look for the other one. Two genuinely similar objects can be "
    "flagged the same way"
)
DISPLAY_MAX_SIDE = 1600
THUMB_MAX_SIDE = 320
OUTLINE_RGB = (0, 255, 255)
DUPLICATE_RGB = (255, 0, 255)  # labels of regions the copy-move detectors found (a copy or its source)
BANNER_RGB = (200, 0, 0)
HOW_TO_READ = [
    "The overlay colours each pixel by the model's estimated probability that it belongs to an edited "
    "region (dark purple = low, yellow = high); outlined areas are above the threshold.",
    "A high score or a flagged region is a pointer for a closer human look, not proof: the model also "
    "reacts to heavy compression, resizing, screenshots, text, logos, sky and other smooth areas.",
    "Absence of evidence is not evidence of absence: a low score does not show that a photo is authentic. "
    "Skilled edits, edits of kinds the model was not trained on, or a photo re-saved, resized or "
    "screenshotted after editing can leave no trace the model can see.",
    "Check the provenance below (which weights, which preprocessing) before quoting a result, and "
    "corroborate with other methods: the original file, its source, metadata, other photos of the scene.",
]


def _copy_move_cell(region: Region) -> str:
    share = region.copy_move_share
    return "" if share is None else f"<td>{100 * share:.0f}%</td>"


# --- pictures -------------------------------------------------------------------------------------


def render_overlay(
    rgb: np.ndarray,
    prob: np.ndarray,
    mask: np.ndarray | None = None,
    regions: Sequence[Region] = (),
    *,
    alpha: float = 0.65,
    untrained: bool = False,
) -> np.ndarray:
    """The photo under a perceptual heat map (inferno) whose opacity grows with the probability,
    flagged areas outlined and numbered like the regions table; a red banner if untrained.

    A region mostly flagged by the copy-move detectors is labelled "N dup" in magenta: it is a
    copy or the source of one, and its twin is another "dup" region, which a reader of the
    picture alone could not otherwise tell."""
    heat = cv2.applyColorMap(np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    heat = heat[:, :, ::-1].astype(np.float32)
    a = (alpha * np.clip(prob, 0, 1))[:, :, None].astype(np.float32)
    out = np.round(rgb.astype(np.float32) * (1 - a) + heat * a).astype(np.uint8)
    h, w = prob.shape
    thick = max(1, round(min(h, w) / 400))
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, OUTLINE_RGB, thick, lineType=cv2.LINE_AA)
    scale = max(0.35, min(h, w) / 900)
    for r in list(regions)[:20]:
        org = (r.x, max(r.y - 4, int(14 * scale)))
        dup = r.copy_move_share is not None and r.copy_move_share >= 0.5
        text, colour = (f"{r.id} dup", DUPLICATE_RGB) if dup else (str(r.id), OUTLINE_RGB)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    if untrained:
        _banner(out, "UNTRAINED MODEL - THIS MAP IS NOISE")
    return out


def _banner(img: np.ndarray, text: str) -> None:
    h, w = img.shape[:2]
    bh = max(12, h // 14)
    img[:bh] = BANNER_RGB
    scale = bh / 32
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    scale *= min(1.0, (w - 8) / max(tw, 1))
    cv2.putText(img, text, (4, int(bh * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def downscale(a: np.ndarray, max_side: int, *, nearest: bool = False) -> np.ndarray:
    h, w = a.shape[:2]
    f = max_side / max(h, w)
    if f >= 1:
        return a
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(a, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def thumbnail_jpeg(rgb: np.ndarray, max_side: int = THUMB_MAX_SIDE) -> bytes:
    return encode_jpeg(downscale(rgb, max_side), quality=85)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --- files ----------------------------------------------------------------------------------------

OUTPUT_SUFFIXES = {
    "overlay": ".overlay.png",
    "mask": ".mask.png",
    "prob": ".prob.png",
    "html": ".html",
    "thumbnail": ".thumb.jpg",
    "json": ".json",
}


_LONGEST_SUFFIX = max(len(s.encode("utf-8")) for s in OUTPUT_SUFFIXES.values())


def output_base(out_dir: str | os.PathLike, name: str, limit: int | None = None) -> str:
    """The base of an image's output names in ``out_dir``: ``name``, or, when ``name`` plus the
    longest suffix would pass the file system's limit on a name, ``name`` shortened with a stable
    hash of it (a 255-byte photo name must not stop a run).

    Arguments:
        out_dir: the folder the outputs go to.
        name: the wanted base (``photo`` or ``photo.jpg``).
        limit: the file system's limit in bytes, if the caller knows it (``fsutil.name_max``).

    Returns:
        The base to pass to ``output_paths`` and ``write_outputs``.
    """
    return fit_name(name, _LONGEST_SUFFIX, limit if limit is not None else name_max(out_dir))


def _report_of(json_path: Path, source: str | os.PathLike, sha256: str | None) -> bool | None:
    """Whether the report at ``json_path`` is one of this input (the same bytes or the same
    file): None when there is none, False when it is another file's or not an imlscan report."""
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return False
    inp = record.get("input") if isinstance(record, dict) else None
    if not isinstance(inp, dict):
        return False
    if sha256 and inp.get("sha256") == sha256:
        return True
    recorded = inp.get("path")
    return isinstance(recorded, str) and Path(recorded).resolve() == Path(source).resolve()


def claim_name(out_dir: str | os.PathLike, name: str, source: str | os.PathLike, sha256: str | None) -> str:
    """The output base for the file ``source`` in ``out_dir``, never taking another file's:
    ``name`` when it is free or its report is of the same input (a re-scan replaces its own
    report), else ``name-HASH`` with a hash of the absolute source path (stable, so a re-scan of
    that file finds its report again). Two ``x.jpg`` from two folders keep both reports.

    Arguments:
        out_dir: the output folder.
        name: the wanted base (``output_names`` of the CLI).
        source: the input file.
        sha256: the input's sha256, if known.

    Returns:
        The base to pass to ``write_outputs``.
    """
    base = output_base(out_dir, name)
    if _report_of(Path(out_dir) / f"{base}{OUTPUT_SUFFIXES['json']}", source, sha256) is not False:
        return base
    return output_base(out_dir, f"{name}-{short_hash(str(Path(source).resolve()), 8)}")


def output_paths(out_dir: str | os.PathLike, name: str, kinds: Sequence[str]) -> dict[str, Path]:
    """Where each requested output of the image called ``name`` goes (``json`` always)."""
    kinds = [k for k in OUTPUT_SUFFIXES if k in kinds or k == "json"]
    return {k: Path(out_dir) / f"{name}{OUTPUT_SUFFIXES[k]}" for k in kinds}


def write_outputs(
    result: ScanResult,
    out_dir: str | os.PathLike,
    name: str,
    *,
    overlay: bool = True,
    mask: bool = False,
    prob: bool = False,
    html: bool = False,
    thumbnail: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the requested files, each atomically, the JSON report last (its presence means the
    image is complete). Returns the report dict, whose ``outputs`` names the sibling files."""
    kinds = [k for k, on in (("overlay", overlay), ("mask", mask), ("prob", prob), ("html", html)) if on]
    if thumbnail:
        kinds.append("thumbnail")
    paths = output_paths(out_dir, name, kinds)
    outputs = {k: p.name for k, p in paths.items()}
    report = {**result.to_dict(), **(extra or {}), "outputs": outputs}
    picture = None
    if overlay or html or thumbnail:
        picture = render_overlay(result.image, result.prob, result.mask, result.regions, untrained=not result.trained)
    if overlay:
        write_png(paths["overlay"], picture)
    if mask:
        write_mask_png(paths["mask"], result.mask)
    if prob:
        write_prob_png(paths["prob"], result.prob)
    if thumbnail:
        atomic_write_bytes(paths["thumbnail"], thumbnail_jpeg(picture))
    if html:
        atomic_write_text(paths["html"], render_html(result, report, overlay=picture))
    atomic_write_text(paths["json"], dumps_json(report, indent=2, default=str) + "\n")
    return report


# --- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:1.4em;word-break:break-all}h2{font-size:1.1em;margin-top:1.6em}
.warn{background:#b00020;color:#fff;padding:10px 14px;border-radius:6px;margin:8px 0;font-weight:600}
.note{background:#fff4ce;padding:8px 12px;border-radius:6px;margin:8px 0}
.score{font-size:1.3em;margin:12px 0}.score b{font-size:1.4em}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs figure{margin:0;flex:1 1 300px;max-width:32%}
.figs img{width:100%;height:auto;border:1px solid #ccc;background:#eee}
figcaption{font-size:.9em;color:#555;text-align:center}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f3f3f3}code{word-break:break-all}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:14px}
.card{border:1px solid #ddd;border-radius:6px;padding:6px;font-size:.85em}.card img{width:100%;height:auto}
.card .s{font-weight:700;font-size:1.1em}.path{word-break:break-all;color:#333}
.figs figure.thumb{flex:0 1 200px;max-width:200px}.src{color:#666;font-size:.9em}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}.findings li{margin:3px 0}
.traces{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:14px}
.trace{margin:0;border:1px solid #ddd;border-radius:6px;padding:6px}.trace img{width:100%;height:auto}
.trace figcaption{text-align:left}
"""


def _e(x: Any) -> str:
    return htmllib.escape("" if x is None else str(x), quote=True)


def _kv_table(d: dict[str, Any]) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v, default=str)
        rows.append(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def render_html(result: ScanResult, report: dict[str, Any] | None = None, *, overlay: np.ndarray | None = None) -> str:
    """A single self-contained HTML file (images embedded as base64) for one scanned photo."""
    report = report or result.to_dict()
    if overlay is None:
        overlay = render_overlay(result.image, result.prob, result.mask, result.regions, untrained=not result.trained)
    inp = result.input
    name = Path(inp.get("path") or "image").name
    original = data_uri(encode_jpeg(downscale(result.image, DISPLAY_MAX_SIDE), 90), "image/jpeg")
    over = data_uri(encode_jpeg(downscale(overlay, DISPLAY_MAX_SIDE), 90), "image/jpeg")
    mask_img = np.where(result.mask, 255, 0).astype(np.uint8)
    mask_uri = data_uri(encode_png(downscale(mask_img, DISPLAY_MAX_SIDE, nearest=True)), "image/png")
    parts = [f"<h1>imlscan report: {_e(name)}</h1>"]
    parts += [f'<div class="warn">{_e(w)}</div>' for w in result.warnings]
    parts.append(
        f'<div class="score">Manipulation score: <b>{result.score:.3f}</b> '
        f"&middot; flagged area {100 * result.mask_fraction:.2f}% at threshold {result.threshold:g} "
        f"&middot; {result.regions_total} region(s)</div>"
    )
    parts.append(f'<p class="note">{_e(SCORE_DEFINITION)}</p>')
    rank = result.authentic_rank
    if rank:
        parts.append(
            f"<p>Score higher than <b>{rank['percent_lower']:g}%</b> of the {rank['n_authentic']} authentic "
            f'reference photos stored with the weights.</p><p class="note">{_e(rank["definition"])}.</p>'
        )
    parts.append('<div class="figs">')
    for uri, cap in ((original, "original"), (over, "overlay (heat map + outlines)"), (mask_uri, "mask")):
        parts.append(f'<figure><img src="{uri}" alt="{_e(cap)}"><figcaption>{_e(cap)}</figcaption></figure>')
    parts.append(_exif_thumbnail_figure(result))
    parts.append("</div>")
    h, w = result.prob.shape
    if max(h, w) > DISPLAY_MAX_SIDE:
        parts.append(
            f"<p><small>Pictures downscaled to {DISPLAY_MAX_SIDE} px for display; the image is {w}x{h}.</small></p>"
        )
    parts.append(_provenance_section(report.get("provenance")))
    parts.append("<h2>How to read this</h2><ul>" + "".join(f"<li>{_e(t)}</li>" for t in HOW_TO_READ) + "</ul>")
    parts.append(f"<h2>Regions</h2><p><small>{_e(REGIONS_DEFINITION)}</small></p>")
    if result.regions:
        rows = "".join(
            f"<tr><td>{r.id}</td><td>{r.x}, {r.y}, {r.width} x {r.height}</td><td>{100 * r.area_fraction:.3f}%</td>"
            f"<td>{r.mean_prob:.3f}</td><td>{r.max_prob:.3f}</td>{_copy_move_cell(r)}</tr>"
            for r in result.regions
        )
        dup_head = "<th>copy-move detectors</th>" if result.regions[0].copy_move_share is not None else ""
        parts.append(
            "<table><tr><th>#</th><th>box (x, y, w x h)</th><th>area</th><th>mean p</th><th>max p</th>"
            f"{dup_head}</tr>{rows}</table>"
        )
        if dup_head:
            parts.append(f"<p><small>{_e(COPY_MOVE_NOTE)}</small></p>")
    else:
        parts.append("<p>No region above the threshold.</p>")
    if result.traces:
        parts.append(_traces_section(result))
    if inp.get("notes"):
        parts.append("<h2>Input conversions</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in inp["notes"]) + "</ul>")
    parts.append(
        "<h2>Provenance of this scan</h2><h3>Input</h3>" + _kv_table({k: v for k, v in inp.items() if k != "notes"})
    )
    parts.append("<h3>Model</h3>" + _kv_table({k: v for k, v in result.model.items() if k != "provenance"}))
    if result.model.get("provenance"):
        parts.append(
            "<details><summary>How the weights were trained (their own provenance record)</summary>"
            + _kv_table(result.model["provenance"])
            + "</details>"
        )
    parts.append("<h3>Preprocessing</h3>" + _kv_table(result.preprocessing))
    parts.append(
        "<h3>Run</h3>" + _kv_table({"threshold": result.threshold, **result.timings, "created": result.created})
    )
    parts.append("<h3>Versions</h3>" + _kv_table(result.versions))
    if report.get("outputs"):
        parts.append("<h3>Files</h3>" + _kv_table(report["outputs"]))
    return _page(f"imlscan: {name}", "\n".join(parts))


def _traces_section(result: ScanResult) -> str:
    """The forensic traces: whether and how they entered the map, then one panel per trace."""
    pictures = {
        name: data_uri(encode_jpeg(render_trace(r, result.image), 88), "image/jpeg")
        for name, r in result.traces.items()
        if result.image is not None
    }
    fusion = result.fusion or {}
    line = fusion.get("reason", "")
    if fusion.get("contributions_logit"):
        moved = fusion.get("pixels_moved") or {}
        parts = []
        for k, v in fusion["contributions_logit"].items():
            part = f"{k} {v:+.2f} on average"
            if k in moved:
                raised, lowered = 100 * moved[k]["raised_share"], 100 * moved[k]["lowered_share"]
                part += f", raising {raised:.1f}% of the pixels and lowering {lowered:.1f}% by a logit or more"
            parts.append(part)
        line += ": " + "; ".join(parts) + " (logits each trace added to the map above)"
    if fusion.get("note"):
        line += f". Note: {fusion['note']}"
    return trace_panels_html(result.traces, pictures) + (f"<p class='note'>Fusion: {_e(line)}</p>" if line else "")


def _exif_thumbnail_figure(result: ScanResult) -> str:
    """The EXIF thumbnail beside the photo (decoded and re-encoded, never the file's own bytes)."""
    prov = result.provenance
    if prov is None or not prov.thumbnail_jpeg:
        return ""
    facts = prov.thumbnail or {}
    cap = "EXIF thumbnail (the preview stored in the file)"
    if facts.get("compared"):
        cap += ": differs from the image" if facts.get("mismatch") else ": matches the image"
    uri = data_uri(prov.thumbnail_jpeg, "image/jpeg")
    return f'<figure class="thumb"><img src="{uri}" alt="EXIF thumbnail"><figcaption>{_e(cap)}</figcaption></figure>'


def _provenance_section(prov: dict[str, Any] | None) -> str:
    """What the file says about itself: the findings, then every field read, folded."""
    from imlscan.scanning.provenance import CAVEAT

    head = "<h2>Provenance of the file</h2>"
    if not prov:
        return head + "<p>Not read: the input was pixels (an array or a PIL image), not a file.</p>"
    items = "".join(
        f'<li>{_e(f.get("text"))} <span class="src">({_e(f.get("source"))})</span></li>'
        for f in prov.get("findings") or []
    )
    body = f'<ul class="findings">{items}</ul>' if items else "<p>No metadata found.</p>"
    sections = (
        ("Content Credentials (C2PA)", "c2pa"),
        ("EXIF", "exif"),
        ("XMP", "xmp"),
        ("IPTC", "iptc"),
        ("EXIF thumbnail", "thumbnail"),
        ("Container", "container"),
    )
    tables = "".join(f"<h3>{label}</h3>" + _kv_table(prov[key]) for label, key in sections if prov.get(key))
    folded = f"<details><summary>Every field read from the file</summary>{tables}</details>" if tables else ""
    return head + body + f'<p class="note">{_e(CAVEAT)}</p>' + folded


def render_contact_sheet(
    entries: Sequence[dict[str, Any]],
    *,
    title: str,
    total: int,
    failed: Sequence[dict[str, Any]] = (),
    warnings: Sequence[str] = (),
) -> str:
    """The batch index page: the top-ranked images as thumbnails (embedded), then failures.

    Each entry: ``relpath``, ``score``, ``mask_fraction``, ``thumb`` (JPEG bytes or None) and
    ``link`` (a path relative to the page, or None).
    """
    parts = [f"<h1>{_e(title)}</h1>"]
    parts += [f'<div class="warn">{_e(w)}</div>' for w in warnings]
    parts.append(
        f"<p>{total} image(s) in this run, {len(failed)} failed. Showing the top {len(entries)} by score "
        "(see summary.csv for all). A high score is a pointer for a closer look, not proof; a low score "
        "is not proof of authenticity.</p>"
    )
    parts.append(_tag_filter(entries))
    parts.append('<div class="grid">')
    for rank, e in enumerate(entries, 1):
        img = f'<img src="{data_uri(e["thumb"], "image/jpeg")}" alt="">' if e.get("thumb") else "<p>(no picture)</p>"
        if e.get("link"):
            img = f'<a href="{_e(href(e["link"]))}">{img}</a>'
        parts.append(
            f'<div class="card" data-tags="{_e(" ".join(e.get("tags") or []))}">'
            f'{img}<div class="s">#{rank} &middot; {e["score"]:.3f}</div>'
            f"<div>flagged {100 * e.get('mask_fraction', 0.0):.2f}%</div>"
            f'<div class="path">{_e(e["relpath"])}</div></div>'
        )
    parts.append("</div>")
    if failed:
        shown = list(failed)[:500]
        rows = "".join(f"<tr><td>{_e(f.get('relpath'))}</td><td>{_e(f.get('error'))}</td></tr>" for f in shown)
        more = f"<p>... and {len(failed) - len(shown)} more in results.jsonl</p>" if len(failed) > len(shown) else ""
        parts.append(f"<h2>Failed</h2><table><tr><th>file</th><th>error</th></tr>{rows}</table>{more}")
    return _page(title, "\n".join(parts))


def _tag_filter(entries: Sequence[dict[str, Any]]) -> str:
    """A menu that shows only the cards with one provenance tag (imlscan.scanning.provenance.TAGS)."""
    from imlscan.scanning.provenance import TAGS

    counts = {t: sum(t in (e.get("tags") or ()) for e in entries) for t in TAGS}
    if not any(counts.values()):
        return ""
    options = "".join(
        f'<option value="{_e(t)}">{_e(label)} ({counts[t]})</option>' for t, label in TAGS.items() if counts[t]
    )
    script = (
        "var t=this.value;document.querySelectorAll('.card').forEach(function(c){"
        "c.style.display=(!t||(' '+c.dataset.tags+' ').indexOf(' '+t+' ')>=0)?'':'none';});"
    )
    return (
        f'<p><label>Show: <select id="tag-filter" onchange="{_e(script)}"><option value="">all photos shown</option>'
        f"{options}</select></label> <small>(what the files say about themselves: metadata is easy to forge and "
        "strip)</small></p>"
    )
