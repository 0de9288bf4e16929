"""Findings: short, neutral, sourced statements built from the sections a ``Provenance`` holds.

A finding says what the file records and where ("Saved by Adobe Photoshop 25.1", source "EXIF
Software"); where a fact has a usual explanation it names the explanations, never a verdict.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from imlscan.scanning.provenance.credentials import STATES, source_type_note
from imlscan.scanning.provenance.model import Finding

MAX_FINDINGS = 40
# Software that edits or re-encodes pictures (the EXIF Software field also holds camera firmware
# versions, which are not listed here and are reported without "Saved by").
EDITORS = re.compile(
    r"photoshop|lightroom|camera raw|gimp|affinity|pixelmator|snapseed|paint\.net|capture one|darktable|"
    r"rawtherapee|luminar|canva|picsart|facetune|acdsee|corel|paintshop|photoscape|fotor|krita|photopea|"
    r"meitu|vsco|picmonkey|befunky|imagemagick|graphicsmagick|libvips|squoosh|jpegmini|photodirector|"
    r"gimp|dxo|on1 |skylum|topaz|remini|lensa|airbrush|youcam|inshot|polarr|capcut|stable diffusion|comfyui|"
    r"midjourney|dall-?e|firefly",
    re.IGNORECASE,
)
GENERATION_TEXT_KEYS = {"parameters", "prompt", "workflow", "Dream", "sd-metadata", "invokeai_metadata"}


def build_findings(p: Any, image_size: tuple[int, int] | None) -> list[Finding]:
    """Findings in reading order: Content Credentials, capture, software and history, the
    thumbnail, the container. ``image_size`` is (width, height) as displayed, when known."""
    out: list[Finding] = []
    _c2pa(p.c2pa, p.xmp, out)
    _capture(p.exif, p.xmp, p.format, image_size, out)
    _software(p.exif, p.xmp, p.iptc, p.container, out)
    _thumbnail(p.thumbnail, out)
    _container(p.format, p.container, out)
    return out[:MAX_FINDINGS]


def _c2pa(c: dict[str, Any] | None, xmp: dict[str, Any] | None, out: list[Finding]) -> None:
    if c and c.get("state") != "unreadable":
        who = c.get("signer") or "an unnamed signer"
        if c.get("issuer") and c.get("issuer") != who:
            who += f" (issuer {c['issuer']})"
        extra = []
        if c.get("claim_generator"):
            extra.append(f"claim generator {c['claim_generator']}")
        actions = [a.get("action", "").removeprefix("c2pa.") for a in (c.get("actions") or {}).get("items", [])]
        if actions:
            extra.append("actions: " + ", ".join(dict.fromkeys(a for a in actions if a)))
        if c.get("signed_at"):
            extra.append(f"signed {c['signed_at']}")
        tail = ("; " + "; ".join(extra)) if extra else ""
        state = c["state"]
        codes = ", ".join(c.get("failures") or [])
        source = "C2PA manifest" + (f" (c2pa: {codes})" if codes else "")
        if state == "valid":
            out.append(Finding(f"Content Credentials: valid signature by {who}, in the trust list{tail}", source))
        elif state == "untrusted_signer":
            out.append(Finding(f"Content Credentials signed by {who}; {STATES[state]}{tail}", source))
        elif state == "content_changed":
            out.append(Finding(f"Content Credentials by {who}: {STATES[state]}{tail}", source))
        else:
            out.append(Finding(f"Content Credentials by {who}: {STATES[state]}{tail}", source))
        for t in c.get("digital_source_types") or []:
            text = f"Content Credentials declare the digital source type {source_type_note(t)}"
            out.append(Finding(text, "C2PA actions (IPTC digitalSourceType)"))
        ingredients = (c.get("ingredients") or {}).get("items") or []
        if ingredients:
            names = ", ".join(i.get("title", "?") for i in ingredients[:5])
            n = c["ingredients"]["count"]
            out.append(Finding(f"Content Credentials list {n} ingredient(s): {names}", "C2PA ingredients"))
    if xmp and xmp.get("c2pa_remote_manifest"):
        out.append(
            Finding(
                f"Points to Content Credentials stored elsewhere: {xmp['c2pa_remote_manifest']} (not fetched)",
                "XMP dcterms:provenance",
            )
        )


def _capture(
    exif: dict[str, Any] | None,
    xmp: dict[str, Any] | None,
    fmt: str | None,
    size: tuple[int, int] | None,
    out: list[Finding],
) -> None:
    e = exif or {}
    x = xmp or {}
    camera = camera_name(e)
    if camera:
        lens = e.get("lens_model")
        out.append(Finding(f"Camera: {camera}" + (f", lens {lens}" if lens else ""), "EXIF Make, Model, LensModel"))
    captured = e.get("date_time_original")
    if captured:
        offset = e.get("offset_time_original") or ""
        out.append(Finding(f"Captured {captured}{' ' + offset if offset else ''}", "EXIF DateTimeOriginal"))
    modified = e.get("modify_date")
    if captured and modified and modified != captured:
        gap = _gap(captured, modified)
        out.append(Finding(f"Modified {modified}{gap}", "EXIF ModifyDate"))
    gps = e.get("gps") or {}
    if gps.get("present"):
        where = f"{gps['latitude']}, {gps['longitude']}" if "latitude" in gps else "withheld; --gps shows it"
        out.append(Finding(f"GPS position recorded ({where})", "EXIF GPS"))
    dims = e.get("pixel_dimensions")
    if dims and size and sorted(dims) != sorted(size):
        out.append(
            Finding(
                f"EXIF records {dims[0]}x{dims[1]} pixels but the image is {size[0]}x{size[1]}: it was resized "
                "or cropped after the EXIF block was written, or the block comes from another file",
                "EXIF PixelXDimension, PixelYDimension",
            )
        )
    if not (camera or captured or x.get("make") or x.get("date_time_original")) and fmt is not None:
        out.append(
            Finding(
                "No camera metadata (no make, model or capture time): typical of screenshots, messaging apps and "
                "social networks, which strip it, and of pictures exported or generated by software",
                "EXIF" if exif else "EXIF (none in the file)",
            )
        )


def camera_name(exif: dict[str, Any] | None) -> str:
    """Make and model as one name ("Canon EOS R5", not "Canon Canon EOS R5"), or ''."""
    make, model = (str((exif or {}).get(k) or "") for k in ("make", "model"))
    if make and model.lower().startswith(make.split()[0].lower()):
        return model
    return " ".join(v for v in (make, model) if v)


def _software(
    exif: dict[str, Any] | None,
    xmp: dict[str, Any] | None,
    iptc: dict[str, Any] | None,
    container: dict[str, Any] | None,
    out: list[Finding],
) -> None:
    e, x, c = exif or {}, xmp or {}, container or {}
    software = e.get("software")
    if software:
        verb = "Saved by" if EDITORS.search(str(software)) else "Software recorded:"
        out.append(Finding(f"{verb} {software}", "EXIF Software"))
    tool = x.get("creator_tool")
    if tool and tool != software:
        out.append(Finding(f"Created with {tool}", "XMP xmp:CreatorTool"))
    history = x.get("history")
    if history:
        events = [_event(ev) for ev in history["items"][:6]]
        more = f", and {history['count'] - 6} more" if history["count"] > 6 else ""
        out.append(
            Finding(f"Edit history of {history['count']} event(s): " + "; ".join(events) + more, "XMP xmpMM:History")
        )
    if x.get("derived_from"):
        ref = x["derived_from"].get("document_id") or x["derived_from"].get("instance_id") or "not named"
        out.append(Finding(f"Derived from another document ({ref})", "XMP xmpMM:DerivedFrom"))
    ancestors = x.get("document_ancestors")
    if ancestors:
        out.append(
            Finding(
                f"Photoshop lists {ancestors['count']} ancestor document(s): files whose content was pasted or "
                "placed into this one",
                "XMP photoshop:DocumentAncestors",
            )
        )
    if x.get("camera_raw_settings"):
        out.append(Finding("Developed in Adobe Camera Raw or Lightroom (crs: settings present)", "XMP crs"))
    if x.get("digital_source_type"):
        note = source_type_note(x["digital_source_type"])
        out.append(Finding(f"IPTC digital source type: {note}", "XMP Iptc4xmpExt:DigitalSourceType"))
    for key, value in (c.get("png_text") or {}).items():
        if key in GENERATION_TEXT_KEYS:
            out.append(
                Finding(
                    f"PNG text '{key}' holds what looks like image-generation settings (as Stable Diffusion and "
                    f"ComfyUI front-ends write): {value[:160]}",
                    f"PNG text {key}",
                )
            )
        elif key.lower() == "software":
            out.append(Finding(f"Software recorded: {value}", "PNG text Software"))
    iptc = iptc or {}
    for record, where in ((iptc.get("iim"), "IPTC IIM"), (iptc.get("xmp"), "XMP (IPTC Core)")):
        if not record:
            continue
        by = record.get("by_line")
        by = ", ".join(by) if isinstance(by, list) else by
        said = [f"by-line {by}" if by else "", f"credit {record['credit']}" if record.get("credit") else ""]
        if any(said):
            out.append(Finding("IPTC " + "; ".join(s for s in said if s), where))


def _thumbnail(t: dict[str, Any] | None, out: list[Finding]) -> None:
    if not t or not t.get("compared"):
        return
    src = "EXIF thumbnail (IFD1)"
    r = t.get("correlation")
    r_text = f"correlation {r:.2f}" if r is not None else "correlation undefined (flat picture)"
    if not t.get("orientation_matches"):
        out.append(Finding("EXIF thumbnail is turned 90 degrees relative to the image", src))
    elif not t.get("aspect_matches"):
        out.append(
            Finding(
                f"EXIF thumbnail has another aspect ratio ({t['aspect_thumbnail']:.2f} against the image's "
                f"{t['aspect_image']:.2f}): the picture was framed differently when the thumbnail was written",
                src,
            )
        )
    if not (t.get("orientation_matches") and t.get("aspect_matches")):
        return  # framed or turned otherwise: the content cannot be laid over the image
    if not t.get("content_matches"):
        out.append(Finding(f"EXIF thumbnail differs from the image ({r_text} at {t['width']}x{t['height']})", src))
    elif t.get("area_differs"):
        i, j = t["most_different_cell"]
        out.append(
            Finding(
                f"EXIF thumbnail differs from the image in one area, around {12 + 25 * j}% from the left and "
                f"{12 + 25 * i}% from the top ({r_text} overall)",
                src,
            )
        )
    elif not t.get("mismatch"):
        out.append(Finding(f"EXIF thumbnail matches the image ({r_text})", src))


def _container(fmt: str | None, c: dict[str, Any] | None, out: list[Finding]) -> None:
    c = c or {}
    if fmt == "JPEG":
        luma = next((q for q in c.get("quantization") or [] if q["role"] == "luminance"), None)
        if luma:
            if luma["ijg_standard"]:
                text = (
                    f"Quantization tables are libjpeg's standard tables at quality {luma['ijg_quality']}: written "
                    "by libjpeg-based software (editors, converters, web services); cameras mostly use their own"
                )
            else:
                text = (
                    f"Quantization tables are not libjpeg's standard ones (closest quality {luma['ijg_quality']}): "
                    "cameras and some editors (e.g. Photoshop) write their own"
                )
            out.append(Finding(text, "JPEG DQT"))
        if c.get("process") == "progressive":
            out.append(
                Finding(
                    "Progressive JPEG: cameras write baseline JPEGs; editors and web services often write progressive",
                    "JPEG SOF2",
                )
            )
        for seg in c.get("segments") or []:
            if seg.get("kind") == "Ducky (Photoshop Save for Web)":
                out.append(Finding("Saved with Photoshop's 'Save for Web' (Ducky segment)", "JPEG APP12"))
                break
        for comment in (c.get("comments") or [])[:3]:
            out.append(Finding(f"JPEG comment: {comment}", "JPEG COM"))
        after = c.get("after_end")
        mpf = c.get("mpf_images")
        if after:
            text = f"{after['bytes']:,} bytes after the end of the JPEG image: {after['kind']}"
            if mpf:
                text += (
                    f"; an MPF index declares {mpf} images, normal for many phones and cameras (depth map, gain "
                    "map, preview)"
                )
            elif after.get("jpeg_starts"):
                text += "; no MPF index declares further pictures"
            out.append(Finding(text, "JPEG data after EOI"))
    elif fmt == "PNG" and c.get("after_end"):
        out.append(Finding(f"{c['after_end']['bytes']:,} bytes after the PNG's last chunk (IEND)", "PNG structure"))


def _event(ev: dict[str, Any]) -> str:
    text = ev.get("action", "event")
    if ev.get("software_agent"):
        text += f" with {ev['software_agent']}"
    if ev.get("when"):
        text += f" at {ev['when']}"
    if ev.get("changed"):
        text += f" (changed {ev['changed']})"
    return text


def _gap(captured: str, modified: str) -> str:
    """', 3 days after capture' from two EXIF times (``YYYY:MM:DD HH:MM:SS``), or ''."""
    try:
        a = datetime.strptime(str(captured)[:19], "%Y:%m:%d %H:%M:%S")
        b = datetime.strptime(str(modified)[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return ", not the capture time"
    seconds = (b - a).total_seconds()
    if seconds < 0:
        return ", before the capture time"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f", {n} {unit}{'s' if n > 1 else ''} after capture"
    return f", {int(seconds)} s after capture"
