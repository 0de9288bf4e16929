"""XMP, parsed as XML with ``defusedxml`` (no DTD, hence no entity expansion and no external
entities): the creating tool, the edit history (``xmpMM:History``), document identifiers and
what the document was derived from, Photoshop's list of ancestor documents, the IPTC fields
written in XMP and an IPTC digital source type.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, ParseError

from imlscan.scanning.provenance.model import MAX_ITEMS, Problems, capped, prune, text_of

MAX_XMP_BYTES = 2 << 20
MAX_DESCRIPTIONS = 200
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS = {
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
    "stRef": "http://ns.adobe.com/xap/1.0/sType/ResourceRef#",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "dcterms": "http://purl.org/dc/terms/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
    "crs": "http://ns.adobe.com/camera-raw-settings/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "exifEX": "http://cipa.jp/exif/1.0/",
    "aux": "http://ns.adobe.com/exif/1.0/aux/",
    "GIMP": "http://www.gimp.org/xmp/",
    "GCamera": "http://ns.google.com/photos/1.0/camera/",
    "GContainer": "http://ns.google.com/photos/1.0/container/",
    "hdrgm": "http://ns.adobe.com/hdr-gain-map/1.0/",
    "plus": "http://ns.useplus.org/ldf/xmp/1.0/",
}
_PREFIX = {uri: prefix for prefix, uri in NS.items()}


def read_xmp(packet: bytes | None, problems: Problems) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The XMP section and the IPTC fields found in XMP, or (None, None) without a packet."""
    if not packet:
        return None, None
    if len(packet) > MAX_XMP_BYTES:
        problems.add("XMP", f"packet of {len(packet):,} bytes, over the {MAX_XMP_BYTES:,} read")
        return {"bytes": len(packet), "readable": False}, None
    root = _parse(packet, problems)
    if root is None:
        return {"bytes": len(packet), "readable": False}, None
    descriptions = list(root.iter(f"{{{RDF}}}Description"))
    if len(descriptions) > MAX_DESCRIPTIONS:  # real packets have a handful
        problems.add("XMP", f"{len(descriptions):,} rdf:Description elements; the first {MAX_DESCRIPTIONS} were read")
        descriptions = descriptions[:MAX_DESCRIPTIONS]

    def get(prefix: str, name: str) -> Any:
        tag = f"{{{NS[prefix]}}}{name}"
        for d in descriptions:
            if d.get(tag) is not None:
                return text_of(d.get(tag))
            child = d.find(tag)
            if child is not None:
                return _value(child)
        return None

    def element(prefix: str, name: str) -> Element | None:
        tag = f"{{{NS[prefix]}}}{name}"
        for d in descriptions:
            child = d.find(tag)
            if child is not None:
                return child
        return None

    history = _history(element("xmpMM", "History"))
    ancestors = element("photoshop", "DocumentAncestors")
    ancestor_ids = (
        [text_of(li.text or "", 120) for li in ancestors.iter(f"{{{RDF}}}li")] if ancestors is not None else []
    )
    out = {
        "bytes": len(packet),
        "creator_tool": get("xmp", "CreatorTool"),
        "create_date": get("xmp", "CreateDate"),
        "modify_date": get("xmp", "ModifyDate"),
        "metadata_date": get("xmp", "MetadataDate"),
        "document_id": get("xmpMM", "DocumentID"),
        "instance_id": get("xmpMM", "InstanceID"),
        "original_document_id": get("xmpMM", "OriginalDocumentID"),
        "derived_from": _ref(element("xmpMM", "DerivedFrom")),
        "history": capped(history) if history else None,
        "document_ancestors": capped(ancestor_ids, 10) if ancestor_ids else None,
        "digital_source_type": get("Iptc4xmpExt", "DigitalSourceType") or get("plus", "DigitalSourceType"),
        "c2pa_remote_manifest": get("dcterms", "provenance"),
        "camera_raw_settings": any(k.startswith(f"{{{NS['crs']}}}") for d in descriptions for k in d.keys()) or None,
        "make": get("tiff", "Make"),
        "model": get("tiff", "Model"),
        "date_time_original": get("exif", "DateTimeOriginal"),
        "namespaces": sorted({_prefix(k) for d in descriptions for k in [*d.keys(), *(c.tag for c in d)]} - {None}),
    }
    out["namespaces"] = out["namespaces"][:MAX_ITEMS]
    iptc = prune(
        {
            "by_line": get("dc", "creator"),
            "credit": get("photoshop", "Credit"),
            "source": get("photoshop", "Source"),
            "caption": get("dc", "description"),
            "title": get("dc", "title"),
            "rights": get("dc", "rights"),
            "headline": get("photoshop", "Headline"),
        }
    )
    return prune(out), iptc or None


def _parse(packet: bytes, problems: Problems) -> Element | None:
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    start = packet.find(b"<")
    if start < 0:
        problems.add("XMP", "no XML in the packet")
        return None
    body = packet[start:]
    end = body.rfind(b"<?xpacket end")
    if end >= 0:
        close = body.find(b"?>", end)
        body = body[: close + 2] if close >= 0 else body
    else:
        body = body.rstrip(b"\x00 \t\r\n")
    try:
        return DET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        problems.add("XMP", f"refused: {type(e).__name__} (a DTD or entity; XMP needs neither)")
    except (ParseError, ValueError, UnicodeError) as e:
        problems.add("XMP", f"not well-formed XML ({text_of(str(e), 120)})")
    except RecursionError:
        problems.add("XMP", "nested too deeply")
    return None


def _prefix(tag: str) -> str | None:
    if not tag.startswith("{"):
        return None
    uri = tag[1:].partition("}")[0]
    if uri == RDF:
        return None
    return _PREFIX.get(uri, text_of(uri, 100))


def _value(el: Element) -> Any:
    """A property's value: its text, the items of an rdf:Alt/Seq/Bag (one item: as a string), or
    an rdf:resource."""
    items = [text_of(li.text or "") for li in el.iter(f"{{{RDF}}}li")]
    if items:
        items = [i for i in items if i][:MAX_ITEMS]
        return items[0] if len(items) == 1 else items or None
    if el.get(f"{{{RDF}}}resource") is not None:
        return text_of(el.get(f"{{{RDF}}}resource"))
    return text_of(el.text or "") or None


def _field(node: Element, prefix: str, name: str) -> str | None:
    """A structure's field, written as an attribute, a child element, or inside an rdf:Description."""
    tag = f"{{{NS[prefix]}}}{name}"
    for n in (node, *node.findall(f"{{{RDF}}}Description")):
        if n.get(tag) is not None:
            return text_of(n.get(tag), 200)
        child = n.find(tag)
        if child is not None:
            return text_of(child.text or "", 200) or None
    return None


def _history(el: Element | None) -> list[dict[str, Any]]:
    if el is None:
        return []
    events = []
    for li in el.iter(f"{{{RDF}}}li"):
        event = prune(
            {
                "action": _field(li, "stEvt", "action"),
                "software_agent": _field(li, "stEvt", "softwareAgent"),
                "when": _field(li, "stEvt", "when"),
                "changed": _field(li, "stEvt", "changed"),
                "parameters": _field(li, "stEvt", "parameters"),
                "instance_id": _field(li, "stEvt", "instanceID"),
            }
        )
        if event:
            events.append(event)
        if len(events) > 10 * MAX_ITEMS:
            break
    return events


def _ref(el: Element | None) -> dict[str, Any] | None:
    if el is None:
        return None
    ref = prune(
        {
            "document_id": _field(el, "stRef", "documentID"),
            "instance_id": _field(el, "stRef", "instanceID"),
            "original_document_id": _field(el, "stRef", "originalDocumentID"),
        }
    )
    return ref or {"present": True}
