"""``imlscan weights``: list, download, verify, inspect and convert weights files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from imlscan.cli.app import app, err_console, stdout_json
from imlscan.defaults import DEFAULT_FUSION_FORM, DEFAULT_FUSION_TRACES

weights_app = typer.Typer(
    help=(
        "Manage model weights: where they come from, and proof of which file a result used.\n\n"
        "Example: imlscan weights list"
    ),
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")

TARGET_HELP = "A .safetensors path, a registered name (see 'imlscan weights list') or hf-hub:ORG/REPO@REV::FILE."
DEFAULT_TARGET_HELP = TARGET_HELP + " Default: the default weights (what scan uses without --weights)."


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _table(rows: list[tuple[str, object]], title: str | None = None):
    from rich.table import Table

    t = Table(show_header=False, box=None, title=escape(title) if title else None, title_justify="left")
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    for k, v in rows:
        t.add_row(escape(k), "" if v is None else escape(str(v)))
    return t


@weights_app.command("list")
def list_weights(json_out: bool = typer.Option(False, "--json", help="Print as JSON on stdout.")) -> None:
    """List registered weights (cached or not, size, licence) and the default.

    Example: imlscan weights list --json
    """
    from imlscan.weights import hub
    from imlscan.weights.store import default_status

    entries = []
    for entry in sorted(hub.REGISTRY.values(), key=lambda e: e.name):
        cached = hub.cached_file(entry.ref)
        entries.append({**entry.to_dict(), "cached": str(cached) if cached else None})
    default = default_status()
    if json_out:
        stdout_json({"registered": entries, "default": default, "cache_dir": str(hub.hub_cache_dir())})
        return
    from rich.table import Table

    t = Table(title="registered weights", title_justify="left")
    for col in ("name", "variant", "size", "licence", "cached", "description"):
        t.add_column(col, overflow="fold")
    for e in entries:
        cells = (
            e["name"],
            e["variant"],
            _size(e["size"]),
            e["licence"],
            "yes" if e["cached"] else "no",
            e["description"],
        )
        t.add_row(*(escape(c) for c in cells))
    if not entries:
        t.add_row("(none yet)", "", "", "", "", "")
    err_console.print(t)
    err_console.print(
        f"default: {default.get('file') or '-'} -> {default['resolves_to']}", markup=False, soft_wrap=True
    )
    err_console.print(f"cache: {hub.hub_cache_dir()}  endpoint: {hub.hub_endpoint()}", markup=False, soft_wrap=True)


@weights_app.command("download")
def download(
    target: str = typer.Argument(
        None,
        help="A registered name or hf-hub:ORG/REPO@REV::FILE (@REV and ::FILE optional). Default: the default weights.",
    ),
    sha256: str = typer.Option(
        None, "--sha256", help="Expected sha256 of an hf-hub file (registered names are pinned)."
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Download weights into the Hugging Face cache and verify their sha256.

    Pre-download here, then run with HF_HUB_OFFLINE=1 (or copy the cache to an offline machine).

    Example: imlscan weights download hf-hub:org/repo@COMMIT --sha256 SHA256
    """
    from imlscan.errors import ImlscanError, UsageError
    from imlscan.weights import hub
    from imlscan.weights.store import default_weights_name, default_weights_path

    if target is None:
        name = default_weights_name()
        if default_weights_path() is not None:
            err_console.print(
                f"the default weights ({name}) are embedded in imlscan: nothing to download", markup=False
            )
            return
        if name is None or hub.registered(Path(name).stem) is None:
            raise ImlscanError("there are no default weights to download yet", hint=hub.registry_hint())
        target = Path(name).stem
    if sha256 is not None and not hub.SHA256_RE.fullmatch(sha256.lower()):
        raise UsageError(f"--sha256 must be 64 hex digits, not {sha256!r}")
    if hub.is_hf_hub_spec(target):
        ref = hub.parse_hf_hub(target)
        path = hub.fetch(ref, sha256=sha256.lower() if sha256 else None, force=force)
    elif hub.registered(target) is not None:
        if sha256 is not None and sha256.lower() != hub.registered(target).sha256:
            raise UsageError(f"--sha256 differs from the registry pin of {target}")
        path = hub.fetch_registered(target, force=force)
    else:
        raise ImlscanError(
            f"cannot download {target!r}: not a registered name or hf-hub reference", hint=hub.registry_hint()
        )
    result = {"target": target, "path": str(path), "size": path.stat().st_size, "sha256": hub.file_sha256(path)}
    if json_out:
        stdout_json(result)
    else:
        line = f"{target}: {path} ({_size(result['size'])}, sha256 {result['sha256']}, verified)"
        err_console.print(line, markup=False, soft_wrap=True)


@weights_app.command("verify")
def verify(
    target: str = typer.Argument(None, help=DEFAULT_TARGET_HELP, show_default=False),
    sha256: str = typer.Option(None, "--sha256", help="The sha256 the file must have."),
    json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON on stdout."),
) -> None:
    """Check a weights file: sha256, format, tensor checksum and a strict load.

    The sha256 is compared with --sha256 or the registry pin. Never downloads; exit code 1 on any failure.

    Example: imlscan weights verify model.safetensors --sha256 9f86d081884c7d65...
    """
    from imlscan.weights.store import verify_weights

    report = verify_weights(target, sha256=sha256)
    if json_out:
        stdout_json(report)
        return
    err_console.print(_table(list(report.items())))
    err_console.print(f"[bold green]OK[/] {escape(report['path'])}", soft_wrap=True)


@weights_app.command("info")
def info(
    target: str = typer.Argument(None, help=DEFAULT_TARGET_HELP, show_default=False),
    json_out: bool = typer.Option(False, "--json", help="Print the metadata as JSON on stdout."),
) -> None:
    """Show a weights file's identity and metadata as a table (or --json).

    Architecture, preprocessing, output, provenance and licence; reads the header only, never downloads.

    Example: imlscan weights info (the default weights); imlscan weights info model.safetensors --json
    """
    from imlscan.weights.store import describe_weights

    d = describe_weights(target)
    if json_out:
        stdout_json(d)
        return
    rows: list[tuple[str, object]] = []
    if "registry" in d:
        r = d["registry"]
        rows += [("registered", r["name"]), ("hub", r["hf_hub"]), ("pinned sha256", r["sha256"])]
        rows += [("pinned size", _size(r["size"])), ("description", r["description"])]
    if not d["downloaded"]:
        rows.append(("downloaded", f"no (imlscan weights download {d['target']})"))
        err_console.print(_table(rows, title=d["target"]))
        return
    meta = d["metadata"]
    rows += [("path", d["path"]), ("size", _size(d["size"])), ("sha256", d["sha256"])]
    rows += [(k, meta.get(k)) for k in ("name", "arch", "variant", "licence", "format_version", "storage_dtype")]
    prep = meta.get("preprocessing", {})
    rows += [(f"preprocessing.{k}", v) for k, v in prep.items()]
    rows += [(f"output.{k}", v) for k, v in meta.get("output", {}).items()]
    prov = meta.get("provenance", {})
    rows += [(f"provenance.{k}", "unknown" if v is None else v) for k, v in prov.items()]
    rows += _calibration_rows(meta.get("calibration") or {})
    cm = meta.get("copy_move")
    rows += [(f"copy_move.{k}", v) for k, v in cm.items()] if cm else [("copy_move", "off")]
    kp = meta.get("copy_move_keypoints")
    if cm:
        rows += [(f"copy_move_keypoints.{k}", v) for k, v in kp.items()] if kp else [("copy_move_keypoints", "off")]
    rows.append(("config", json.dumps(meta.get("config", {}), separators=(",", ":"))))
    rows.append(("tensors_sha256", meta.get("tensors_sha256") or "not recorded"))
    err_console.print(_table(rows, title=d["target"]))


def _calibration_rows(cal: dict[str, Any], prefix: str = "calibration.") -> list[tuple[str, Any]]:
    """Calibration fields as table rows, the authentic score reference summarised."""
    rows = []
    for k, v in cal.items():
        if k == "authentic_scores":
            v = f"{len(v)} stored, median {v[len(v) // 2]:.3f}" if v else "none"
        rows.append((prefix + k, v))
    return rows


@weights_app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="The authors' checkpoint (.pth holding {'model': state_dict})."),
    dst: Path = typer.Argument(..., help="Output .safetensors file."),
    name: str = typer.Option(None, help="Name stored in the metadata (default: DST's stem)."),
) -> None:
    """Convert an official SparseViT checkpoint to an imlscan safetensors file.

    Example: imlscan weights convert sparsevit_catnet.pth sparsevit-b-official.safetensors
    """
    from imlscan.weights.convert import convert_checkpoint_file

    sha = convert_checkpoint_file(src, dst, name=name)
    err_console.print(f"wrote {dst} (sha256 {sha})", markup=False)


@weights_app.command("calibrate")
def calibrate(
    src: Path = typer.Argument(..., help="Trained .safetensors file to calibrate."),
    dataset: str = typer.Argument(
        ..., help="Labelled calibration set (pairs.json or Tp/Gt folder), NOT your test set."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the calibrated copy."),
    max_authentic_fpr: float = typer.Option(
        0.02, help="Largest mean fraction of an authentic image's pixels allowed above the new 0.5 threshold."
    ),
    limit: int = typer.Option(None, help="Use only the first N images."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: int = typer.Option(4, help="Images per forward pass."),
    workers: int = typer.Option(2, help="Decoding processes."),
    json_out: bool = typer.Option(False, "--json", help="Print the calibration as JSON on stdout."),
) -> None:
    """Move the decision threshold to 0.5: shift the output bias so that masks at 0.5 equal the
    masks at the threshold with the best mean F1 on DATASET that keeps authentic images clean.

    Calibrate on data you will not evaluate on (e.g. 'imlscan synth --split train').

    Example: imlscan weights calibrate run/best.safetensors calib/pairs.json --out model.safetensors
    """
    from imlscan import calibrate as cal

    cal.check_output(src, out)
    c = cal.measure(
        src,
        dataset,
        max_authentic_fpr=max_authentic_fpr,
        limit=limit,
        device=device,
        batch_size=batch_size,
        workers=workers,
    )
    cal.apply(src, out, c)
    if json_out:
        stdout_json(c.to_dict())
    err_console.print(_table(_calibration_rows(c.to_dict(), prefix=""), title=f"calibration of {src}"))
    err_console.print(
        f"wrote {out}: threshold {c.threshold:.4f} -> 0.5 (logit offset {c.logit_offset:+.3f}); "
        f"mean F1 {c.f1_before:.4f} -> {c.f1_after:.4f} on the calibration set",
        markup=False,
    )


@weights_app.command("fuse")
def fuse(
    src: Path = typer.Argument(..., help="Trained (and calibrated) .safetensors file."),
    dataset: str = typer.Argument(
        ...,
        help="Labelled set from the TRAINING split with compression histories (e.g. 'imlscan synth --split train "
        "--history 0.7'), NOT your test set.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the copy that carries the fusion rule."),
    traces: str = typer.Option(
        ",".join(DEFAULT_FUSION_TRACES),
        "--traces",
        help="Traces to fit terms for, e.g. adq,grid,ghost,noise (ela never fuses).",
    ),
    references: str = typer.Option(
        None,
        "--references",
        help="Authentic set whose reference scores are recomputed with the fusion on. Default: the file's own.",
        show_default=False,
    ),
    pixels: int = typer.Option(4096, "--pixels", min=64, help="Pixels drawn per image (half inside the mask)."),
    penalty: float = typer.Option(1.0, "--penalty", min=0.0, help="L2 penalty on the terms, per image's pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pixel draw (the fit is deterministic)."),
    form: str = typer.Option(
        DEFAULT_FUSION_FORM,
        "--form",
        help="How each trace's map is read: logit (its confidence in logits), llr (adq by its likelihood ratio, "
        "the others by logit) or centered (map - 0.5, the first rule's form).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the rule as JSON on stdout."),
) -> None:
    """Fit the rule that fuses the forensic traces (imlscan traces) with the weights' map, and write a
    copy of the weights that carries it: scans with that file fuse the traces that apply to each photo,
    and report each one's contribution. Tensors are unchanged; a photo no trace applies to (a PNG for
    the JPEG traces) is scored exactly as before.

    Example: imlscan weights fuse model.safetensors synth-hist-train/pairs.json --out model-traces.safetensors
    """
    from imlscan.calibrate import fit_fusion
    from imlscan.cli.progress import ProgressBar
    from imlscan.scanning.traces import parse_trace_names

    with ProgressBar("fitting the fusion") as bar:
        rule = fit_fusion(
            src,
            dataset,
            out,
            traces=parse_trace_names(traces),
            references=references,
            pixels_per_image=pixels,
            penalty=penalty,
            seed=seed,
            form=form,
            progress=bar,
        )
    d = rule.to_dict()
    if json_out:
        stdout_json(d)
    rows = [(name, f"{v['bias']:+.3f}", f"{v['weight']:+.3f}", v["feature"]) for name, v in d["terms"].items()]
    for name, bias, weight, feature in rows:
        err_console.print(f"  {name:6s} bias {bias}  weight {weight}  ({feature})", markup=False)
    f = d["fitted"]
    err_console.print(
        f"wrote {out}: {len(rows)} trace term(s) fitted on {f['images']} images; pixel log-loss "
        f"{f['log_loss_network_alone']:.4f} (network alone) -> {f['log_loss_fused']:.4f} (fused)",
        markup=False,
    )


@weights_app.command("references")
def references(
    src: Path = typer.Argument(..., help="Calibrated .safetensors file."),
    dataset: str = typer.Argument(
        ..., help="The set whose authentic photos become the references (usually the calibration set)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the copy with the new reference scores."),
    json_out: bool = typer.Option(False, "--json", help="Print the new calibration entry as JSON on stdout."),
) -> None:
    """Recompute the authentic reference scores behind score_vs_authentic, with this imlscan's
    image score and the file's own settings; the tensors and every other entry are unchanged.

    For files calibrated before the score changed (their scans give no rank), or another reference set.

    Example: imlscan weights references model.safetensors calib/pairs.json --out model-new.safetensors
    """
    from imlscan.calibrate import recompute_references
    from imlscan.weights.store import read_metadata

    recompute_references(src, out, dataset)
    entry = read_metadata(out)["calibration"]
    if json_out:
        stdout_json(entry)
    scores = entry["authentic_scores"]
    err_console.print(
        f"wrote {out}: {len(scores)} authentic reference scores (score version {entry['score_version']}), "
        f"median {scores[len(scores) // 2]:.4f}",
        markup=False,
    )


@weights_app.command("copy-move")
def copy_move(
    src: Path = typer.Argument(..., help="Weights file to copy."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the copy with the fusion switched on."),
    threshold: float = typer.Option(0.7, help="Matcher evidence mapped to probability 0; 1 maps to 1."),
    radius: int = typer.Option(2, help="Cells around each cell whose match offset must agree."),
    tolerance: int = typer.Option(2, help="Pixels by which agreeing offsets may differ."),
    key_stride: int = typer.Option(2, help="Pixels between the patches each cell is matched against (2, 4 or 8)."),
    exclude: int = typer.Option(3, help="Cells around each cell that are never matched (too near to be a copy)."),
    size: int = typer.Option(512, help="Side the image is resized to for matching."),
    keypoints: bool = typer.Option(
        True, "--keypoints/--no-keypoints", help="Also fuse the keypoint detector (rotated, scaled, mirrored copies)."
    ),
    kp_min_inliers: int = typer.Option(5, help="Keypoint detector: matches a copy needs."),
    kp_corr: float = typer.Option(0.8, help="Keypoint detector: correlation a copied pixel needs."),
    kp_mirror: bool = typer.Option(
        True, "--kp-mirror/--kp-no-mirror", help="Keypoint detector: also look for mirrored copies."
    ),
    kp_verify: bool = typer.Option(
        True,
        "--kp-verify/--kp-no-verify",
        help="Keypoint detector: drop pairs that agree less than copies do (most lookalike objects).",
    ),
    references: str | None = typer.Option(
        None, help="The calibration set: recompute the authentic reference scores with the fusion on."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the settings as JSON on stdout."),
) -> None:
    """Switch on the copy-move fusion in a copy of a weights file: scans, batches and evals with it
    take the pixel-wise maximum of the model's map, a parameter-free copy-move matcher's and (unless
    --no-keypoints) a keypoint detector's for rotated, scaled or mirrored copies.

    Example: imlscan weights copy-move model.safetensors --out model-cm.safetensors --references calib/pairs.json
    """
    from imlscan.calibrate import attach_copy_move
    from imlscan.scanning.copymove import CopyMoveConfig
    from imlscan.scanning.copymove_keypoints import KeypointConfig
    from imlscan.weights.store import read_metadata

    config = CopyMoveConfig(
        size=size, key_stride=key_stride, exclude=exclude, radius=radius, tolerance=tolerance, threshold=threshold
    )
    kp = None
    if keypoints:
        kp = KeypointConfig(min_inliers=kp_min_inliers, corr=kp_corr, mirror=kp_mirror, verify=kp_verify)
    attach_copy_move(src, out, config, references=references, keypoints=kp)
    settings = {**config.to_dict(), "keypoints": kp.to_dict() if kp else None}
    if json_out:
        stdout_json(settings)
    err_console.print(f"wrote {out}: copy-move fusion on ({settings})", markup=False)
    if references is None and read_metadata(out).get("calibration"):
        err_console.print(
            "note: the authentic reference scores were computed without the fusion; "
            "pass --references CALIBRATION_SET to recompute them",
            markup=False,
        )
