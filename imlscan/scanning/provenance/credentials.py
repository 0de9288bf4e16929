"""Content Credentials (C2PA), read and validated with the official ``c2pa-python`` bindings.

The reader never goes online: remote manifests and OCSP revocation checks are switched off (a
file must not make imlscan contact an address it names). No trust list ships with imlscan, so a
correctly signed manifest reads "signer not in the trust list" unless a PEM bundle of trust
anchors is named in ``IMLSCAN_C2PA_TRUST_ANCHORS`` (for example the C2PA trust list).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from imlscan.scanning.provenance.model import MAX_ITEMS, Problems, capped, prune, text_of

TRUST_ENV = "IMLSCAN_C2PA_TRUST_ANCHORS"
MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "HEIF": "image/heic",
    "AVIF": "image/avif",
    "GIF": "image/gif",
}
STATES = {
    "valid": "signature valid and the signer is in the trust list",
    "untrusted_signer": "signature valid, but the signer is not in the trust list, so who signed cannot be confirmed",
    "content_changed": "the content no longer matches the signature: it changed after signing",
    "invalid": "the manifest does not validate",
    "unreadable": "a manifest store is present but could not be read",
}
SOURCE_TYPES = {
    "trainedAlgorithmicMedia": "made by a generative AI model",
    "compositeWithTrainedAlgorithmicMedia": "composite that includes generative AI content",
    "algorithmicMedia": "made by an algorithm without sampled training data",
    "compositeSynthetic": "composite that includes synthetic content",
    "algorithmicallyEnhanced": "algorithmically enhanced",
    "digitalCapture": "captured by a camera or scanner",
    "computationalCapture": "computational capture (e.g. a phone's multi-frame processing)",
    "negativeFilm": "scanned from a film negative",
    "positiveFilm": "scanned from film",
    "print": "scanned from a print",
    "minorHumanEdits": "captured, with minor human edits",
    "compositeCapture": "composite of captures",
    "digitalArt": "drawn or painted digitally by a person",
    "screenCapture": "screenshot",
    "composite": "composite",
    "dataDrivenMedia": "made from data (e.g. a chart)",
    "virtualRecording": "recording of a virtual event",
}
_context_cache: dict[str, Any] = {}


def source_type_note(uri: Any) -> str:
    """``trainedAlgorithmicMedia (made by a generative AI model)`` from an IPTC URI."""
    name = str(uri).rstrip("/").rsplit("/", 1)[-1]
    note = SOURCE_TYPES.get(name)
    return f"{name} ({note})" if note else name


def read_c2pa(data: bytes, fmt: str | None, problems: Problems, hint: str | None) -> dict[str, Any] | None:
    """The C2PA section: ``None`` when the file carries no manifest store. ``hint`` says why one
    is looked for: "container" (the container holds a JUMBF/C2PA block: finding none is a
    finding), "bytes" (the bytes contain "c2pa" somewhere) or None (not looked for)."""
    if hint is None or fmt not in MIME:
        return None
    unreadable = {"present": True, "state": "unreadable", "state_text": STATES["unreadable"]}
    try:
        import c2pa

        reader = c2pa.Reader.try_create(MIME[fmt], io.BytesIO(data), None, _context())
        if reader is None:
            if hint == "container":
                problems.add("C2PA manifest store", "a JUMBF/C2PA block is present but holds no manifest store")
                return unreadable
            return None
        with reader:
            store = json.loads(reader.json())
    except Exception as e:  # noqa: BLE001 - native library errors on hostile bytes become findings
        problems.add("C2PA manifest store", f"c2pa: {e}" if str(e).strip() else e)
        return unreadable
    try:
        return summarize(store)
    except Exception as e:  # noqa: BLE001 - a store of unexpected shape
        problems.add("C2PA manifest store", e)
        return unreadable


def _context() -> Any:
    import c2pa

    anchors = os.environ.get(TRUST_ENV) or ""
    if anchors not in _context_cache:
        settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
        if anchors:
            with open(anchors, encoding="utf-8") as f:
                settings["trust"] = {"trust_anchors": f.read()}
        _context_cache[anchors] = c2pa.Context(c2pa.Settings.from_dict(settings))
    return _context_cache[anchors]


def summarize(store: dict[str, Any]) -> dict[str, Any]:
    """The parts of a c2pa Reader's JSON that a reader of the report needs."""
    manifests = store.get("manifests") or {}
    label = store.get("active_manifest")
    m = manifests.get(label) or {}
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures = [f.get("code") for f in results.get("failure") or [] if isinstance(f, dict)]
    if not results:
        failures = [s.get("code") for s in store.get("validation_status") or [] if isinstance(s, dict)]
    failures = [text_of(c, 100) for c in failures if c]
    state = _state(store.get("validation_state"), failures)
    sig = m.get("signature_info") or {}
    actions, types = [], []
    assertions = []
    for a in m.get("assertions") or []:
        if not isinstance(a, dict):
            continue
        assertions.append(text_of(a.get("label"), 100))
        if str(a.get("label", "")).startswith("c2pa.actions"):
            for act in (a.get("data") or {}).get("actions") or []:
                if isinstance(act, dict):
                    actions.append(_action(act))
                    if act.get("digitalSourceType"):
                        types.append(text_of(act["digitalSourceType"], 200))
    ingredients = [_ingredient(i) for i in m.get("ingredients") or [] if isinstance(i, dict)]
    for i in m.get("ingredients") or []:
        if isinstance(i, dict) and i.get("digitalSourceType"):
            types.append(text_of(i["digitalSourceType"], 200))
    return prune(
        {
            "present": True,
            "state": state,
            "state_text": STATES[state],
            "validation_state": text_of(store.get("validation_state") or "", 40),
            "failures": failures[:MAX_ITEMS],
            "trust_list": os.environ.get(TRUST_ENV) and f"anchors from {TRUST_ENV}" or "none loaded",
            "manifests": len(manifests),
            "active_manifest": text_of(label or "", 200),
            "claim_generator": _generator(m),
            "title": text_of(m.get("title") or "", 200),
            "signer": text_of(sig.get("common_name") or sig.get("issuer") or "", 200) or None,
            "issuer": text_of(sig.get("issuer") or "", 200),
            "signed_at": text_of(sig.get("time") or "", 60),
            "algorithm": text_of(sig.get("alg") or "", 20),
            "actions": capped(actions) if actions else None,
            "ingredients": capped(ingredients, 20) if ingredients else None,
            "digital_source_types": sorted(set(types))[:MAX_ITEMS],
            "assertions": assertions[:MAX_ITEMS],
        }
    )


def _state(validation_state: Any, failures: list[str]) -> str:
    if any(c.endswith("Hash.mismatch") for c in failures):
        return "content_changed"
    if any(c != "signingCredential.untrusted" for c in failures):
        return "invalid"
    if "signingCredential.untrusted" in failures:
        return "untrusted_signer"
    if str(validation_state) in ("Valid", "Trusted"):
        return "valid"
    return "invalid"


def _generator(m: dict[str, Any]) -> str | None:
    if m.get("claim_generator"):
        return text_of(m["claim_generator"], 200)
    names = []
    for g in m.get("claim_generator_info") or []:
        if isinstance(g, dict) and g.get("name"):
            names.append(" ".join(text_of(g[k], 100) for k in ("name", "version") if g.get(k)))
    return "; ".join(names[:5]) or None


def _action(act: dict[str, Any]) -> dict[str, Any]:
    agent = act.get("softwareAgent")
    if isinstance(agent, dict):
        agent = agent.get("name")
    return prune(
        {
            "action": text_of(act.get("action") or "", 100),
            "software_agent": text_of(agent, 200) if agent else None,
            "when": text_of(act.get("when") or "", 60),
            "digital_source_type": text_of(act.get("digitalSourceType") or "", 200),
            "description": text_of(act.get("description") or "", 200),
        }
    )


def _ingredient(i: dict[str, Any]) -> dict[str, Any]:
    status = [s.get("code") for s in i.get("validation_status") or [] if isinstance(s, dict)]
    return prune(
        {
            "title": text_of(i.get("title") or "", 200),
            "format": text_of(i.get("format") or "", 60),
            "relationship": text_of(i.get("relationship") or "", 40),
            "has_manifest": bool(i.get("active_manifest") or i.get("manifest_data")) or None,
            "validation": [text_of(c, 100) for c in status[:10] if c],
        }
    )
