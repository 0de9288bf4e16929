"""``imlscan train`` and ``imlscan synth``: thin layers over ``imlscan.train.trainer`` and
``imlscan.data.synth``; torch is imported only when a command runs."""

from __future__ import annotations

from pathlib import Path

import typer

from imlscan.cli import options
from imlscan.cli.app import app, err_console, stdout_json
from imlscan.cli.progress import ProgressBar
from imlscan.errors import ImlscanError, UsageError


@app.command(no_args_is_help=True)
def train(
    data: list[str] = typer.Option(
        None,
        "--data",
        "-d",
        help="Training data, repeatable: a dataset (pairs JSON or Tp/Gt folder, NAME=PATH to name it) "
        "or synth:PHOTOS_DIR[?regions=DIR&negatives=0.2&seed=N] for synthetic forgeries made on the fly.",
        show_default=False,
    ),
    data_weight: list[float] = typer.Option(
        None, "--data-weight", help="Sampling weight of each --data, in order Default: equal.", show_default=False
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Run folder (checkpoints, logs, best.safetensors).", show_default=False
    ),
    resume: Path = typer.Option(
        None, "--resume", help="Continue the run in this folder exactly where it stopped.", show_default=False
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="sparsevit-b (default), sparsevit-s, sparsevit-t or sparsevit-test.",
        show_default=False,
    ),
    init: Path = typer.Option(
        None, "--init", help="Start from these .safetensors weights (fine-tuning).", show_default=False
    ),
    val: list[str] = typer.Option(
        None,
        "--val",
        help="Validation data, repeatable (same syntax as --data; 'none' = no validation). Default: the held-out "
        "split of every --data.",
        show_default=False,
    ),
    size: int = typer.Option(
        None,
        "--size",
        help="Training side in pixels (images resized to SIZE x SIZE). Default: 512.",
        show_default=False,
    ),
    crop: int = typer.Option(
        None,
        "--crop",
        help="Train on random CROP x CROP windows of the SIZE x SIZE image: the pixel scale of SIZE at the cost "
        "of CROP. Validation uses whole SIZE x SIZE images. Default: no crop.",
        show_default=False,
    ),
    select: str = typer.Option(
        None,
        "--select",
        help="Which validation number picks best.safetensors: f1 (pixel F1 at 0.5, the paper's), best-f1 (F1 at "
        "the best threshold) or auc. Use best-f1 or auc for weights you will calibrate. Default: f1.",
        show_default=False,
    ),
    batch_size: int = typer.Option(
        None, "--batch-size", "-b", help="Images per step and process. Default: 8.", show_default=False
    ),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (AdamW). Default: 1e-4.", show_default=False),
    min_lr: float = typer.Option(
        None, "--min-lr", help="Learning rate at the end of the cosine. Default: 1e-6.", show_default=False
    ),
    weight_decay: float = typer.Option(
        None, "--weight-decay", help="AdamW decay on weights only. Default: 0.05.", show_default=False
    ),
    warmup: int = typer.Option(
        None, "--warmup", help="Warm-up steps. Default: 5% of the schedule, max 1000.", show_default=False
    ),
    max_steps: int = typer.Option(
        None, "--max-steps", help="Stop after this many steps (also the schedule length).", show_default=False
    ),
    max_minutes: float = typer.Option(
        None, "--max-minutes", help="Stop (checkpoint, validate, export) after this long.", show_default=False
    ),
    schedule_steps: int = typer.Option(
        None,
        "--schedule-steps",
        help="Cosine length if not --max-steps (default: sized from --max-minutes).",
        show_default=False,
    ),
    freeze_stages: int = typer.Option(
        None,
        "--freeze-stages",
        help="Fine-tune with the first N encoder stages frozen (0-4; 4 trains the head only): weights and "
        "BatchNorm statistics stay as --init left them. Default: 0.",
        show_default=False,
    ),
    ema: float = typer.Option(
        None,
        "--ema",
        help="Validate, select and export an exponential moving average of the weights with this decay "
        "(0.998 averages about the last 500 steps) instead of the trained weights, which are validated beside "
        "it. Default: 0 (off).",
        show_default=False,
    ),
    precision: str = typer.Option(
        None,
        "--precision",
        help="fp32, bf16, fp16 (CUDA) or auto (= fp32 for training). Default: auto.",
        show_default=False,
    ),
    device: str = typer.Option(None, "--device", help=f"{options.DEVICE_HELP} Default: auto.", show_default=False),
    dice: float = typer.Option(
        None, "--dice", help="Weight of a Dice loss added to BCE. Default: 0.", show_default=False
    ),
    clip_grad: float = typer.Option(
        None, "--clip-grad", help="Gradient-norm clipping. Default: 1.0.", show_default=False
    ),
    seed: int = typer.Option(
        None, "--seed", help="Seed of data, augmentation and initialization. Default: 0.", show_default=False
    ),
    augment: bool = typer.Option(
        None, "--augment/--no-augment", help="Augment real data. Default: on.", show_default=False
    ),
    val_every: int = typer.Option(
        None, "--val-every", help="Validate every N steps. Default: 500.", show_default=False
    ),
    val_samples: int = typer.Option(
        None, "--val-samples", help="Synthetic validation images. Default: 100.", show_default=False
    ),
    log_every: int = typer.Option(None, "--log-every", help="Log every N steps. Default: 10.", show_default=False),
    save_every: int = typer.Option(
        None, "--save-every", help="Checkpoint every N steps. Default: --val-every.", show_default=False
    ),
    workers: int = typer.Option(
        None, "--workers", "-j", help="Data-loader processes. Default: CPUs - 1, max 8.", show_default=False
    ),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads. Default: torch's.", show_default=False),
    channels_last: bool = typer.Option(
        None, "--channels-last/--no-channels-last", help="channels_last memory format.", show_default=False
    ),
    export_dtype: str = typer.Option(
        None,
        "--export-dtype",
        help="Storage of best.safetensors: fp32, fp16 or bf16. Default: fp32.",
        show_default=False,
    ),
    name: str = typer.Option(None, "--name", help="Name stored in the exported weights.", show_default=False),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON on stdout."),
) -> None:
    """Train or fine-tune a model on real and/or synthetic forgeries.

    Example: imlscan train --data synth:photos/ --model sparsevit-t --size 256 --max-minutes 60 --out runs/t1
    """
    given = {
        "data_weights": data_weight or None,
        "val": val or None,
        "model": model,
        "init": str(init) if init else None,
        "size": size,
        "crop": crop,
        "select": select,
        "batch_size": batch_size,
        "lr": lr,
        "min_lr": min_lr,
        "weight_decay": weight_decay,
        "warmup": warmup,
        "max_steps": max_steps,
        "max_minutes": max_minutes,
        "schedule_steps": schedule_steps,
        "freeze_stages": freeze_stages,
        "ema": ema,
        "precision": precision,
        "device": device,
        "dice": dice,
        "clip_grad": clip_grad,
        "seed": seed,
        "augment": augment,
        "val_every": val_every,
        "val_samples": val_samples,
        "log_every": log_every,
        "save_every": save_every,
        "workers": workers,
        "threads": threads,
        "channels_last": channels_last,
        "export_dtype": export_dtype,
        "name": name,
    }
    from imlscan.train.config import TrainConfig, load_run_config
    from imlscan.train.trainer import train as run_training

    if resume is not None:
        if data or out:
            raise UsageError("--resume continues a run with its saved settings: leave out --data and --out")
        cfg = load_run_config(resume, given)
    else:
        if not data:
            raise UsageError("give at least one --data SPEC", hint="e.g. --data synth:photos/ or --data pairs.json")
        if out is None:
            raise UsageError("give --out RUN_DIR", hint="every run writes its checkpoints and logs to its own folder")
        cfg = TrainConfig(data=list(data), out=str(out), **{k: v for k, v in given.items() if v is not None})

    def log(msg: str) -> None:
        err_console.print(msg, markup=False, highlight=False, soft_wrap=True)

    with ProgressBar("train", loss=True) as bar:
        summary = run_training(cfg, log=log, resume=resume is not None, progress=bar)
    if summary:
        if json_out:
            stdout_json(summary)
        if not summary["best_weights"]:
            raise ImlscanError(
                f"no weights exported: the run stopped at step {summary['steps']}, before a trained step was validated",
                hint=f"continue it with: imlscan train --resume {summary['run_dir']} --max-minutes M",
            )
        err_console.print(f"[green]done[/]: best weights {summary['best_weights']} (step {summary['best_step']})")


@app.command(no_args_is_help=True)
def synth(
    hosts: Path = typer.Argument(..., help="Folder of authentic photos (searched recursively)."),
    out: Path = typer.Argument(..., help="Output folder: images/, masks/, pairs.json, manifest.json."),
    n: int = typer.Option(..., "-n", "--count", help="Number of samples.", min=1),
    seed: int = typer.Option(0, "--seed", help="Sample i is a pure function of (seed, i)."),
    regions: Path = typer.Option(
        None, "--regions", help="Folder of PNG label maps: object-shaped regions.", show_default=False
    ),
    split: str = typer.Option(
        "train", "--split", help="Host photos to use: train (~90%), val (~10%, by file-name hash) or all."
    ),
    size: int = typer.Option(
        None,
        "--size",
        help="Resize hosts to SIZE x SIZE first (a fixed-size set). Default: keep their size.",
        show_default=False,
    ),
    max_side: int = typer.Option(1024, "--max-side", help="Downscale larger hosts so their long side is this."),
    negatives: float = typer.Option(0.2, "--negatives", min=0.0, max=1.0, help="Share of authentic samples."),
    host_resize: float = typer.Option(
        0.0,
        "--host-resize",
        min=0.0,
        max=1.0,
        help="Share of hosts downscaled (x0.5-0.9) before manipulating: erases their JPEG grid, a shortcut cue.",
    ),
    forge_scale: float = typer.Option(
        0.0,
        "--forge-scale",
        min=0.0,
        max=1.0,
        help="Share of samples forged on the host upsampled x1.25-2.5 per axis (long side at most --max-side), "
        "so the network sees the forgery downsampled, as in photos larger than its input (with --size: "
        "resized back to SIZE).",
    ),
    translate: float = typer.Option(
        0.3,
        "--translate",
        min=0.0,
        max=1.0,
        help="Share of splices and copy-moves pasted without scaling or rotation (no resampling trace).",
    ),
    translate_objects: bool = typer.Option(
        False,
        "--translate-objects",
        help="Translated pastes of the photo's own objects keep their size (real objects copied, as forgers do) "
        "instead of being rescaled to the drawn area (which resamples them).",
    ),
    history: float = typer.Option(
        0.0,
        "--history",
        min=0.0,
        max=1.0,
        help="Share of samples given a camera-style compression history: the host JPEG keeps its size and grid, "
        "pastes go on or off the 8x8 grid, and the result is saved again at a quality above, equal to or below "
        "the host's (authentic: the file itself, re-saved, or cropped and re-saved). For the JPEG traces.",
    ),
    post: bool = typer.Option(True, "--post/--no-post", help="Post-processing chains (JPEG, resize, blur, noise)."),
    area: str = typer.Option(
        None,
        "--area",
        help="Region size range MIN,MAX as fractions of the image, log-uniform, MIN >= 0.001. Default: 0.01,0.4.",
        show_default=False,
    ),
    kinds: str = typer.Option(
        None,
        "--kinds",
        help="Relative weights of splice,copymove,removal among manipulated samples. Default: 0.4,0.35,0.25.",
        show_default=False,
    ),
    val_fraction: float = typer.Option(
        0.1, "--val-fraction", min=0.0, max=1.0, help="Share of hosts in the val split."
    ),
    workers: int = typer.Option(0, "--workers", "-j", min=0, help="Parallel processes (0 = this one)."),
    json_out: bool = typer.Option(False, "--json", help="Print a summary as JSON on stdout."),
) -> None:
    """Write a fixed synthetic forgery set (images, masks, pairs.json, manifest.json).

    Example: imlscan synth photos/ synth-val/ -n 500 --split val --seed 1
    """
    from imlscan.data.synth import SynthConfig, SynthGenerator, parse_area, parse_fractions, write_dataset
    from imlscan.data.transforms import PostConfig

    shape: dict = {}
    if area is not None:
        shape.update(parse_area(area, "--area"))
    if kinds is not None:
        shape["kinds"] = parse_fractions(kinds, 3, "--kinds")
    cfg = SynthConfig(
        negatives=negatives,
        size=size,
        max_side=max_side,
        host_resize=host_resize,
        forge_scale=forge_scale,
        translate=translate,
        translate_objects=translate_objects,
        history=history,
        post=PostConfig() if post else PostConfig.disabled(),
        **shape,
    )
    gen = SynthGenerator.from_folder(
        hosts, split=split, regions_dir=regions, seed=seed, config=cfg, val_fraction=val_fraction
    )
    err_console.print(f"synth: {len(gen.hosts)} host photos ({split} split), {len(gen.regions)} region maps -> {out}")

    with ProgressBar("synth") as bar:
        summary = write_dataset(gen, out, n, workers=workers, progress=bar)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(summary["kinds"].items()))
    err_console.print(f"[green]wrote[/] {summary['pairs']}: {n} samples ({kinds}); {summary['generated']} new")
    if json_out:
        stdout_json(summary)
