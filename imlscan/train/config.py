"""The configuration of a training run (``TrainConfig``), the names of its files, and how a
run's saved configuration is read back to resume it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from imlscan.errors import ImlscanError, UsageError

VAL_SEED = 20_250_101  # synthetic validation sets do not depend on --seed: runs stay comparable
CHECKPOINT = "last.pt"
# --select name -> validation metric the best checkpoint maximizes
SELECTION_METRICS = {"f1": "pixel_f1", "best-f1": "pixel_f1_best", "auc": "pixel_auc"}
BEST = "best.safetensors"
EXPORT_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
SYNTH_KEYS = {
    "regions",
    "negatives",
    "seed",
    "split",
    "kinds",
    "area",
    "post",
    "max_side",
    "host_resize",
    "forge_scale",
    "translate",
    "translate_objects",
    "val_fraction",
}
RESUMABLE = ("max_steps", "max_minutes", "workers", "threads", "val_every", "log_every", "save_every")
# A --max-minutes run sizes its cosine from the speed timed after step 5, over at least 20 steps
# and at least 5% of the time budget, at most 60 s (see sizing_window_done).
SIZING_STEPS = (5, 25)
SIZING_WINDOW = (0.05, 60.0)
MAX_BAD_STEPS_IN_A_ROW = 20  # non-finite updates skipped in a row before the run stops


@dataclass
class TrainConfig:
    """Every setting of a run (saved as ``RUN_DIR/config.json``; ``--resume`` reads it back)."""

    data: list[str]
    out: str
    data_weights: list[float] | None = None
    val: list[str] | None = None
    model: str | None = None  # default sparsevit-b, or the architecture of --init
    init: str | None = None
    size: int = 512
    crop: int | None = None
    select: str = "f1"
    batch_size: int = 8
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup: int | None = None
    max_steps: int | None = None
    max_minutes: float | None = None
    schedule_steps: int | None = None
    precision: str = "auto"
    device: str = "auto"
    dice: float = 0.0
    clip_grad: float = 1.0
    seed: int = 0
    augment: bool = True
    val_every: int = 500
    val_samples: int = 100
    log_every: int = 10
    save_every: int | None = None
    workers: int | None = None
    threads: int | None = None
    channels_last: bool = False
    export_dtype: str = "fp32"
    name: str | None = None
    freeze_stages: int = 0
    ema: float = 0.0  # decay of the weight average that is validated and exported; 0 = none

    def check(self) -> None:
        if not self.data:
            raise UsageError("give at least one --data SPEC", hint="e.g. --data synth:photos/ or --data pairs.json")
        if self.data_weights is not None:
            if len(self.data_weights) != len(self.data):
                raise UsageError(f"{len(self.data_weights)} --data-weight values for {len(self.data)} --data specs")
            if min(self.data_weights) < 0 or sum(self.data_weights) <= 0:
                raise UsageError("--data-weight values must be >= 0 and not all zero")
        if self.max_steps is None and self.max_minutes is None:
            raise UsageError("give --max-steps or --max-minutes (or both)")
        for key in ("size", "batch_size", "val_every", "log_every", "val_samples"):
            if getattr(self, key) < 1:
                raise UsageError(f"--{key.replace('_', '-')} must be at least 1")
        if self.size % 32:
            raise UsageError(f"--size must be a multiple of 32, got {self.size}")
        if self.crop is not None and (self.crop < 32 or self.crop % 32 or self.crop > self.size):
            raise UsageError(f"--crop must be a multiple of 32 between 32 and --size ({self.size}), got {self.crop}")
        if self.select not in SELECTION_METRICS:
            raise UsageError(f"unknown --select {self.select!r}", hint="use " + ", ".join(SELECTION_METRICS))
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError("--max-steps must be at least 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise UsageError("--max-minutes must be positive")
        if self.export_dtype not in EXPORT_DTYPES:
            raise UsageError(f"unknown --export-dtype {self.export_dtype!r}", hint="use fp32, fp16 or bf16")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise UsageError("need 0 <= --min-lr <= --lr and --lr > 0")
        if self.dice < 0:
            raise UsageError("--dice must be >= 0")
        if not 0 <= self.ema < 1:
            raise UsageError(f"--ema must be 0 (off) or a decay below 1 such as 0.998, got {self.ema}")
        if not 0 <= self.freeze_stages <= 4:
            raise UsageError(f"--freeze-stages must be 0 to 4 (encoder stages), got {self.freeze_stages}")


def load_run_config(run_dir: str | Path, overrides: dict) -> TrainConfig:
    """The saved config of a run, with the few settings a resume may change."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ImlscanError(f"{run_dir}: not a training run (no config.json)")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        cfg = TrainConfig(**saved)
    except (json.JSONDecodeError, TypeError) as e:
        raise ImlscanError(f"{path}: unreadable run config ({e})") from None
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in RESUMABLE:
            raise UsageError(
                f"--{k.replace('_', '-')} cannot change when resuming",
                hint="a resumed run keeps its settings; only "
                + ", ".join("--" + r.replace("_", "-") for r in RESUMABLE)
                + " may be given",
            )
        setattr(cfg, k, v)
    cfg.out = str(run_dir)
    return cfg
