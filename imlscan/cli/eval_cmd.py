"""``imlscan eval``: benchmark numbers (and ``--check`` of a dataset) from the command line.

A thin layer over ``imlscan.eval.evaluate`` and ``imlscan.data``; heavy imports wait until the
command runs so that ``imlscan --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from imlscan.cli import options
from imlscan.cli.app import app, err_console, stdout_json
from imlscan.cli.predictor import announce, load_predictor
from imlscan.cli.progress import ProgressBar
from imlscan.defaults import PAPER_SIZE
from imlscan.errors import ImlscanError, UsageError

GATE_EXIT_CODE = 3

EPILOG = (
    "Datasets: a JSON list of image/mask path pairs (mask 'Negative' = authentic; relative paths resolve "
    "against the JSON's folder), or a folder with Tp/ (images), Gt/ (masks, matched by stem with optional "
    "_gt/_mask suffix) and optional Au/ (authentic). NAME=PATH names a dataset. "
    "Exit codes: 0 ok, 1 error (or --check found problems), 2 usage, 3 a --fail-under gate failed."
)


def _unique_names(datasets: list[Any]) -> None:
    seen: dict[str, int] = {}
    for ds in datasets:
        k = seen.get(ds.name, 0)
        seen[ds.name] = k + 1
        if k:
            ds.name = f"{ds.name}-{k + 1}"


def _run_check(datasets: list[Any], fix: bool, out: Path | None, workers: int, json_out: bool) -> None:
    from rich.table import Table

    from imlscan.data.datasets import check_dataset

    results = []
    for ds in datasets:
        fix_dir = None
        if fix:
            base = out if out is not None else Path(f"{ds.name}-fixed")
            fix_dir = base / ds.name if (out is not None and len(datasets) > 1) else base
        with ProgressBar(f"checking {ds.name}", total=len(ds.items)) as bar:
            res = check_dataset(
                ds,
                fix_dir=fix_dir,
                workers=max(1, workers),
                log=lambda m: err_console.print(f"fix: {m}", markup=False, soft_wrap=True),
                progress=(lambda _n: bar.advance()) if bar.enabled else None,
            )
        results.append(res)
        head = f"{ds.name}: {len(ds.items)} images ({ds.n_manipulated} manipulated, {ds.n_authentic} authentic)"
        if not res.problems:
            err_console.print(f"[green]{head}: no problems found[/]", soft_wrap=True)
        else:
            table = Table(title=f"{head}: {len(res.problems)} problem(s)", title_justify="left")
            for col in ("problem", "file", "detail", "fixable"):
                table.add_column(col, overflow="fold")
            for p in res.problems:
                table.add_row(p.kind, p.path, p.detail, "yes (--fix-masks)" if p.fixable else "no")
            err_console.print(table)
        if res.fixed_dataset is not None:
            err_console.print(
                f"{len(res.fixes)} mask(s) fixed; evaluate the fixed dataset with: imlscan eval {res.fixed_dataset}",
                markup=False,
                soft_wrap=True,
            )
    if json_out:
        docs = [r.to_dict() for r in results]
        stdout_json(docs[0] if len(docs) == 1 else {"datasets": docs})
    if any(r.problems for r in results):
        raise typer.Exit(1)


CAPTION = "F1/AUC/IoU: pixel metrics, per image, averaged over manipulated images (pooled_* in metrics.json)"
SHORT = {
    "pixel_f1": "F1",
    "pixel_f1_flag_all_baseline": "F1 flag-all",
    "pixel_f1_best": "F1 best",
    "pixel_auc": "AUC",
    "pixel_iou": "IoU",
    "image_auc": "img AUC",
    "image_acc": "img acc",
}


def _above_reference_line(metrics: dict) -> str | None:
    """What a reader flagging photos by score_vs_authentic would get (clean setting), or None."""
    parts = []
    for key, label in (("tpr", "forgeries"), ("fpr", "authentic photos")):
        at = [metrics.get(f"image_{key}_above_reference_p{q}") for q in (95, 90)]
        if at[0] is not None:
            parts.append(f"{label} {100 * at[0]:.1f}% ({100 * at[1]:.1f}%)")
    if not parts:
        return None
    return "ranked above 95% (90%) of the weights' authentic references: " + ", ".join(parts)


def _print_tables(reports: list[dict]) -> None:
    from rich.table import Table

    from imlscan.eval.evaluate import _fmt, table_columns

    for r in reports:
        cols = table_columns([r])
        title = (
            f"{r['dataset']['name']}: {r['n_images']} images ({r['n_manipulated']} manipulated, "
            f"{r['n_authentic']} authentic), protocol {r['protocol']['name']}, p > {r['threshold']:g}"
        )
        err_console.print(title, markup=False, soft_wrap=True)
        table = Table()
        table.add_column("setting", no_wrap=True)
        for c in cols:
            table.add_column(SHORT[c], justify="right", no_wrap=True)
        for row in r["robustness"]:
            table.add_row(row["setting"], *(_fmt(row["metrics"].get(c)) for c in cols))
        err_console.print(table)
        cis = [f"{k} [{_fmt(a, 3)}, {_fmt(b, 3)}]" for k, (a, b) in r["ci"].items()]
        if cis:
            err_console.print("95% bootstrap intervals (clean): " + ", ".join(cis), markup=False, soft_wrap=True)
        if line := _above_reference_line(r["metrics"]):
            err_console.print(line, markup=False, soft_wrap=True)
        for w in r["warnings"]:
            err_console.print(f"[bold red]WARNING: {w}[/]", soft_wrap=True)
    if len(reports) > 1:
        cols = table_columns(reports)
        protocol = reports[0]["protocol"]["name"]
        err_console.print(f"Comparison (clean images, protocol {protocol})", markup=False, soft_wrap=True)
        table = Table()
        table.add_column("dataset", overflow="fold")
        table.add_column("images", justify="right")
        for c in cols:
            table.add_column(SHORT[c], justify="right", no_wrap=True)
        for r in reports:
            table.add_row(
                r["dataset"]["name"],
                str(r["n_images"]),
                *(_fmt(r["metrics"].get(c)) for c in cols),
            )
        err_console.print(table)
    err_console.print(CAPTION, style="dim", markup=False, soft_wrap=True)


@app.command("eval", epilog=EPILOG)
def eval_(
    datasets: list[str] = typer.Argument(
        ...,
        help="Dataset(s): a JSON list of image/mask pairs or a Tp/+Gt/ folder; NAME=PATH to name one.",
        show_default=False,
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write metrics.json, per_image.csv, metrics.md, plots and report.html here.",
        show_default=False,
    ),
    check: bool = typer.Option(False, "--check", help="Only validate the dataset(s) and report problems."),
    fix_masks: bool = typer.Option(
        False, "--fix-masks", help="With --check: write fixed masks and dataset.json to a NEW folder (--out)."
    ),
    protocol: str = typer.Option("paper", "--protocol", help="paper (512x512, as published tables) or native."),
    weights: str | None = options.WEIGHTS,
    device: str = options.DEVICE,
    precision: str = options.PRECISION,
    compile: str = options.COMPILE,
    threshold: float = options.THRESHOLD,
    batch_size: int = options.BATCH_SIZE,
    workers: int = options.WORKERS,
    tile: int = options.TILE,
    copy_move: bool | None = options.COPY_MOVE,
    keypoints: bool | None = options.KEYPOINTS,
    traces: str = typer.Option(
        None,
        "--traces",
        help="Forensic traces fused with the network, for ablations: NAME,... (only those terms of the weights' "
        "fusion rule), none (the network alone). Default: as the weights' rule says.",
        show_default=False,
    ),
    trace_alone: str = typer.Option(
        None,
        "--trace-alone",
        help="Score one trace's own map instead of the model's (adq, grid, ghost, noise, ela).",
        show_default=False,
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N images (a quick look)."),
    perturb: list[str] = typer.Option(
        [],
        "--perturb",
        help="Robustness setting(s): jpeg:50,70,90 blur:3,7 noise:3,7 resize:0.5 or resize:0.5+jpeg:70.",
    ),
    fail_under: list[str] = typer.Option(
        [], "--fail-under", help="METRIC=VALUE: exit 3 when the metric is below VALUE (repeatable), e.g. pixel_f1=0.45."
    ),
    save_predictions: bool = typer.Option(
        False, "--save-predictions", help="Write each probability map as a 16-bit PNG (round(p * 65535))."
    ),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for 95% intervals (0 = off)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and of the noise perturbation."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
) -> None:
    """Evaluate a model on benchmark dataset(s) with the field's metrics, robustness and a CI gate.

    Example: imlscan eval data/CASIAv1.json --out eval/ --fail-under pixel_f1=0.45
    """
    from imlscan.data.datasets import load_dataset

    if fix_masks and not check:
        raise UsageError("--fix-masks only works with --check", hint="imlscan eval --check DATASET --fix-masks")
    loaded = [load_dataset(d) for d in datasets]
    _unique_names(loaded)
    if check:
        _run_check(loaded, fix_masks, out, workers, json_out)
        return

    from imlscan.eval.evaluate import EvalOptions, check_gates, evaluate_dataset, parse_gates, write_comparison
    from imlscan.eval.perturb import parse_perturbations

    gates = parse_gates(fail_under)
    opts = EvalOptions(
        protocol=protocol,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
        limit=limit,
        perturbations=parse_perturbations(perturb),
        bootstrap=bootstrap,
        seed=seed,
        save_predictions=save_predictions,
        traces=None if traces is None else _trace_names(traces),
        trace_alone=trace_alone,
    )
    opts.validate()
    if save_predictions and out is None:
        raise UsageError("--save-predictions needs --out DIR")
    for ds in loaded:
        if ds.problems:
            p = ds.problems[0]
            raise ImlscanError(
                f"dataset {ds.name}: {len(ds.problems)} problem(s), first: {p.kind} {p.path}: {p.detail}",
                hint=f"run 'imlscan eval --check {ds.source}'",
            )

    predictor = load_predictor(
        weights,
        device,
        precision,
        mode="resize" if protocol == "paper" else "native",
        size=PAPER_SIZE if protocol == "paper" else None,
        tile=tile,
        batch_size=batch_size,
        copy_move=copy_move,
        keypoints=keypoints,
        compile=compile,
    )
    announce(predictor, protocol_notes=False)
    reports = []
    for ds in loaded:
        n = min(len(ds.items), limit or len(ds.items)) * (1 + len(opts.perturbations))
        sub = None if out is None else (out / ds.name if len(loaded) > 1 else out)
        with ProgressBar(f"eval {ds.name}", total=n) as bar:
            report, _ = evaluate_dataset(ds, predictor, opts, out_dir=sub, advance=bar.advance if bar.enabled else None)
        reports.append(report)
    if out is not None and len(reports) > 1:
        write_comparison(reports, out)
    _print_tables(reports)
    if out is not None:
        err_console.print(f"wrote {out}/", markup=False, soft_wrap=True)
    if json_out:
        stdout_json(reports[0] if len(reports) == 1 else {"datasets": reports})
    failures = [f for r in reports for f in check_gates(r, gates)]
    if failures:
        for f in failures:
            err_console.print(f"[bold red]gate failed:[/] {f}", soft_wrap=True)
        raise typer.Exit(GATE_EXIT_CODE)


def _trace_names(text: str) -> tuple[str, ...]:
    from imlscan.scanning.traces import parse_trace_names

    return parse_trace_names(text)
