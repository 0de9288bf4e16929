"""Training and fine-tuning SparseViT: data mixtures, the optimisation loop, validation,
checkpoints, exact resume and export.

Reproducibility is built on one idea: the training data is a pure function of a *global sample
index*. Step ``t`` of a run with batch ``B`` per process and ``W`` processes uses the indices
``(t * W + rank) * B + j``; each index picks its data source, its item and its augmentation from
its own seeded generator. Nothing depends on worker scheduling, so a run resumed at step ``t``
(model, optimizer, learning-rate position, RNG states restored) continues with exactly the
batches and the losses the uninterrupted run would have seen, and the same command shards the
stream over any number of ``torchrun`` processes.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from imlscan.device import autocast, cpu_has_native_bf16, device_name, resolve_device, resolve_precision
from imlscan.errors import ImlscanError, UsageError
from imlscan.fsutil import atomic_path, atomic_write_text
from imlscan.models.sparsevit import IMAGENET_MEAN, IMAGENET_STD
from imlscan.train.config import (
    BEST,
    CHECKPOINT,
    EXPORT_DTYPES,
    MAX_BAD_STEPS_IN_A_ROW,
    SELECTION_METRICS,
    SIZING_STEPS,
    SIZING_WINDOW,
    TrainConfig,
)
from imlscan.train.dist import agree_stop, broadcast_int, init_distributed, leave_distributed, mean_over_ranks
from imlscan.train.ema import WeightAverage
from imlscan.train.stream import StepSampler, TrainStream, build_sources, build_val, val_collate

# -- optimisation ----------------------------------------------------------------------------


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and conv kernels only: never on biases, norms or the
    layer-scale / fusion gammas (decaying those pulls the model towards switching blocks off)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or "gamma" in name.rsplit(".", 1)[-1] else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_at(step: int, *, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``min_lr`` at ``total``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t))


def loss_fn(logits: torch.Tensor, target: torch.Tensor, dice: float) -> tuple[torch.Tensor, dict]:
    """BCE on logits (the paper's loss), plus ``dice`` times a soft Dice loss per image."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    parts = {"bce": bce.detach()}
    total = bce
    if dice > 0:
        p = torch.sigmoid(logits)
        inter = (p * target).sum(dim=(1, 2, 3))
        den = p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
        d = (1.0 - (2.0 * inter + 1.0) / (den + 1.0)).mean()
        parts["dice"] = d.detach()
        total = total + dice * d
    return total, parts


# -- the run ---------------------------------------------------------------------------------


@dataclass
class RunState:
    step: int = 0
    total_steps: int | None = None
    warmup: int = 0
    best_score: float = -math.inf
    best_step: int | None = None
    best_metrics: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    last_val_step: int | None = None
    skipped_steps: int = 0


class Trainer:
    """One training run. ``run()`` trains until a stop condition, checkpoints, exports."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        log: Callable[[str], None] | None = None,
        resume: bool = False,
        progress: Callable[..., None] | None = None,
    ):
        cfg.check()
        self._progress = progress
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.resume = resume
        self._echo = log or (lambda m: None)
        self.dist = init_distributed(cfg.device)
        if self.dist.on and torch.cuda.is_available() and not cfg.device.startswith("cpu"):
            self.device = torch.device("cuda", self.dist.local_rank)
        else:
            self.device = resolve_device(cfg.device)
        self.precision = self._precision(cfg.precision)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.rows: list[dict] = []
        self.log_lines: list[str] = []
        self.val_loader = None
        self.state = RunState()
        self.ema: WeightAverage | None = None

    # -- setup

    def _precision(self, precision: str) -> str:
        """``auto`` trains in fp32 everywhere, unlike inference's ``auto``: every shipped weights
        file was trained in fp32, and on an H200 a bf16 run diverged (a NaN loss at step 622) where
        the same fp32 run did not, for 6% less speed on these small models."""
        p = "fp32" if (precision or "").lower() == "auto" else resolve_precision(precision, self.device)
        if p == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            raise UsageError(
                "bf16 on this CPU is emulated (no AMX/AVX512-BF16) and slower than fp32",
                hint="use --precision fp32 (or auto)",
            )
        return p

    def log(self, msg: str) -> None:
        if not self.dist.main:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.log_lines.append(f"{stamp} {msg}")
        self._echo(msg)
        atomic_write_text(self.out / "train.log", "\n".join(self.log_lines) + "\n")

    def _build_model(self) -> torch.nn.Module:
        from imlscan.models import create_model, list_models
        from imlscan.weights.store import model_from_file

        cfg = self.cfg
        if cfg.init:
            model, meta = model_from_file(cfg.init)
            self.variant = meta.get("variant", "custom")
            if cfg.model and cfg.model != self.variant:
                model = self._grow(model, cfg.model)
        else:
            name = cfg.model or "sparsevit-b"
            if name not in list_models():
                raise UsageError(f"unknown --model {name!r}", hint=f"use one of {', '.join(list_models())}")
            torch.manual_seed(cfg.seed)
            model = create_model(name)
            self.variant = name
        if cfg.freeze_stages:
            model.freeze_stages(cfg.freeze_stages)
            n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
            n_all = sum(p.numel() for p in model.parameters())
            self.log(f"froze encoder stages 1-{cfg.freeze_stages}: {n_train:,} of {n_all:,} parameters train")
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _grow(self, loaded: torch.nn.Module, name: str) -> torch.nn.Module:
        """``--model X --init F`` where X is F's architecture plus new modules (the duplication
        cue): F's weights everywhere, the new modules from their own (seeded) initialization."""
        from imlscan.errors import ImlscanError
        from imlscan.models import create_model, list_models
        from imlscan.models.convert import load_grown

        cfg = self.cfg
        hint = "leave --model out when fine-tuning: the weights decide the architecture"
        if f"{self.variant}-dup" in list_models():
            hint += f" (or --model {self.variant}-dup to add the duplication cue)"
        if name not in list_models():
            raise UsageError(f"unknown --model {name!r}", hint=f"use one of {', '.join(list_models())}")
        torch.manual_seed(cfg.seed)
        model = create_model(name)
        try:
            added = load_grown(model, loaded.state_dict())
        except ImlscanError:
            raise UsageError(f"--model {name} but --init {cfg.init} holds {self.variant!r}", hint=hint) from None
        self.log(f"grew {self.variant} into {name}: {len(added)} new tensors start from their initialization")
        self.variant = name
        return model

    def _loader(self, dataset, *, batch_sampler=None, batch_size=None, collate_fn=None):
        """Workers start from a fresh interpreter (forkserver/spawn), never by forking this one:
        a forked child of a process whose OpenMP/OpenCV thread pools run can deadlock."""
        workers = self.workers
        kw: dict = {}
        if workers > 0:
            kw = {
                "persistent_workers": True,
                "prefetch_factor": 4,
                "worker_init_fn": _worker_init,
                "multiprocessing_context": _mp_context(),
            }
        if batch_sampler is not None:
            kw["batch_sampler"] = batch_sampler
        else:
            kw["batch_size"] = batch_size
        return torch.utils.data.DataLoader(
            dataset,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=collate_fn,
            **kw,
        )

    # -- checkpoints

    def _save_checkpoint(self) -> None:
        rng = _rng_state()
        if self.dist.on:
            import torch.distributed as dist

            all_rng: list = [None] * self.dist.world
            dist.all_gather_object(all_rng, rng)
        else:
            all_rng = [rng]
        if not self.dist.main:
            return
        ckpt = {
            "format": 1,
            "state": asdict(self.state),
            "model": self.raw_model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": all_rng,
            "config": asdict(self.cfg),
        }
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        with atomic_path(self.out / CHECKPOINT) as tmp:
            tmp.write_bytes(buf.getvalue())

    def _load_checkpoint(self) -> None:
        path = self.out / CHECKPOINT
        if not path.is_file():
            raise ImlscanError(f"{self.out}: no {CHECKPOINT} to resume from", hint="start a new run with --out")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same user problem
            raise ImlscanError(f"{path}: cannot read the checkpoint ({type(e).__name__})") from None
        self.raw_model.load_state_dict(ckpt["model"])
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise ImlscanError(f"{path}: the run has --ema but its checkpoint holds no weight average")
            self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = RunState(**ckpt["state"])
        rngs = ckpt["rng"]
        _set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0], self.device)
        self.rows = [r for r in _read_jsonl(self.out / "metrics.jsonl") if r.get("step", 0) <= self.state.step]
        log_path = self.out / "train.log"
        if log_path.is_file():
            self.log_lines = log_path.read_text(encoding="utf-8").splitlines()

    # -- metrics, export

    def _record(self, row: dict) -> None:
        if not self.dist.main:
            return
        self.rows.append(row)
        atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows))

    @functools.cached_property
    def hardware(self) -> str:
        """Recorded with every export and summary, so each stage of a weights file says where it ran."""
        return f"{self.dist.world} x {device_name(self.device)}"

    def _export(self, path: Path, metrics: dict) -> str:
        from imlscan.weights.store import save_weights

        cfg = self.cfg
        name = cfg.name or f"{self.variant}-{self.out.name}"
        sha = save_weights(
            self.ema.model if self.ema is not None else self.raw_model,
            path,
            name=name,
            variant=self.variant,
            preprocessing={"mode": "resize", "size": cfg.size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            provenance={
                "data": self.data_description,
                "steps": self.state.step,
                "samples_seen": self.state.step * cfg.batch_size * self.dist.world,
                "init": cfg.init,
            },
            extra={
                "training": {
                    "config": asdict(cfg),
                    "validation": self.val_description,
                    "val_metrics": metrics,
                    "step": self.state.step,
                    "precision": self.precision,
                    "world_size": self.dist.world,
                    "hardware": self.hardware,
                }
            },
            dtype=EXPORT_DTYPES[cfg.export_dtype],
        )
        return sha

    @torch.inference_mode()
    def validate(self, model: torch.nn.Module | None = None) -> dict:
        """Metrics of ``model`` (default: the trained weights) on the fixed validation set."""
        from imlscan.eval.metrics import MetricAccumulator

        model = model if model is not None else self.raw_model
        was_training = model.training
        model.eval()
        acc = MetricAccumulator(bins=1000)
        t0 = time.monotonic()
        neg_fp: list[float] = []
        if self.val_loader is None:
            self.val_loader = self._loader(self.val_set, batch_size=self.cfg.batch_size, collate_fn=val_collate)
        for x, masks in self.val_loader:
            logits = self._forward(x, model)
            probs = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
            for p, m in zip(probs, masks):
                h, w = m.shape
                if p.shape != (h, w):
                    p = cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)
                row = acc.update(np.clip(p, 0, 1), m)
                if not row["manipulated"]:
                    neg_fp.append(row["pixel_fpr"])
        model.train(was_training)
        res = acc.compute()
        out = {
            "pixel_f1": res["pixel_f1"],
            "pixel_auc": res["pixel_auc"],
            "pixel_iou": res["pixel_iou"],
            "pixel_f1_best": res["pixel_f1_best"],
            "pooled_pixel_f1": res["pooled_pixel_f1"],
            "authentic_fpr": float(np.mean(neg_fp)) if neg_fp else math.nan,
            "n_images": len(acc.rows),
            "n_manipulated": acc.n_manipulated,
        }
        self.val_seconds = time.monotonic() - t0
        # A metric that cannot be computed (no authentic photo, a NaN map) is None: JSON null, not NaN.
        return {k: (round(v, 6) if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in out.items()}

    def _forward(self, x_uint8: torch.Tensor, model: torch.nn.Module | None = None) -> torch.Tensor:
        x = x_uint8.to(self.device, non_blocking=True).float()
        x = (x - self.mean) / self.std
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            return (model or self.model)(x)

    def _skipped(self, loss_v: float, gnorm: float, bad_in_a_row: int) -> int:
        """Count and report a dropped update; stop the run when they no longer look like a
        one-off (a rare batch that overflows) but like a diverged model."""
        st = self.state
        st.skipped_steps += 1
        bad_in_a_row += 1
        self.log(
            f"warning: step {st.step}: loss {loss_v:.4g}, gradient norm {gnorm:.4g}: update skipped "
            f"({st.skipped_steps} in this run, {bad_in_a_row} in a row)"
        )
        if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
            raise ImlscanError(
                f"the loss or its gradient was not finite for {bad_in_a_row} steps in a row (step {st.step})",
                hint="lower --lr, use --precision fp32, or resume from the last checkpoint",
            )
        return bad_in_a_row

    def _refit_schedule(self, segment: tuple[float, int], remaining_s: float) -> None:
        """Fit the cosine of a time-sized run to the time left, from the speed of the training
        since the last validation and the time this validation took.

        The first sizing sees only the first steps and the first validation, which pays one-off
        costs (loader workers starting, first runs of each shape): an H200 run sized that way
        counted 12.9 s per validation against 3 s later, ended its cosine at step 7,019 and ran
        to 8,524 at the minimum learning rate. Re-fitting at each validation keeps the end of the
        cosine at the end of the budget; the learning rate moves by a few percent at a re-fit."""
        st = self.state
        seconds, steps = segment
        total = st.total_steps
        if self.dist.main and steps > 0 and st.step >= st.warmup:
            per_step = seconds / steps
            fitted = _estimate_total(st.step, per_step, remaining_s, self.val_seconds, self.cfg.val_every)
            if abs(fitted - total) > 0.01 * total:
                total = max(st.step + 1, fitted)
        if self.dist.on:
            total = broadcast_int(total, self.device)
        if total != st.total_steps:
            self.log(
                f"schedule: re-fitted to the time left ({seconds / max(steps, 1):.3f}s/step) -> cosine to step {total}"
            )
            st.total_steps = total

    def _run_validation(self) -> None:
        st = self.state
        if self.dist.main and self.val_set is not None:
            t0 = time.monotonic()
            metrics = self.validate()
            if self.ema is not None:
                trained = metrics
                metrics = self.validate(self.ema.model)
                self.log(
                    f"val step {st.step}, trained weights: F1 {_fmt(trained['pixel_f1'])}  best-threshold F1 "
                    f"{_fmt(trained.get('pixel_f1_best', math.nan))}  AUC {_fmt(trained['pixel_auc'])}"
                )
                metrics = {**metrics, **{f"trained_{k}": v for k, v in trained.items() if not k.startswith("n_")}}
            self.val_seconds = time.monotonic() - t0  # both validations: the time budget reserves them
            score = selection_score(metrics, self.cfg.select)
            # the untrained baseline (step 0 of a fresh run) is logged but never "best"
            improved = st.step > 0 and (st.best_step is None or score > st.best_score)
            self._record({"type": "val", "step": st.step, **metrics, "val_s": round(self.val_seconds, 2)})
            self.log(
                f"val step {st.step}{', average' if self.ema is not None else ''}: F1 {_fmt(metrics['pixel_f1'])}  "
                f"best-threshold F1 "
                f"{_fmt(metrics.get('pixel_f1_best', math.nan))}  AUC {_fmt(metrics['pixel_auc'])}  "
                f"IoU {_fmt(metrics['pixel_iou'])}  authentic FPR {_fmt(metrics['authentic_fpr'])}"
                f"  ({self.val_seconds:.1f}s){'  * best' if improved else ''}"
            )
            if improved:
                st.best_score, st.best_step, st.best_metrics = score, st.step, metrics
                self._export(self.out / BEST, metrics)
        st.last_val_step = st.step
        if self.dist.on:
            import torch.distributed as dist

            dist.barrier()

    # -- main loop

    def setup(self) -> None:
        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = cfg.workers if cfg.workers is not None else min(8, max(0, cpu_count - 1))
        torch.manual_seed(cfg.seed + self.dist.rank)
        random.seed(cfg.seed + self.dist.rank)
        self.raw_model = self._build_model()
        self.raw_model.train()
        self.model = self.raw_model
        self.ema = WeightAverage(self.raw_model, cfg.ema) if cfg.ema else None
        if self.dist.on:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # depthwise-conv grads differ from their bucket only in the stride of a size-1 dim
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.raw_model, device_ids=ids, gradient_as_bucket_view=True)
        self.opt = torch.optim.AdamW(param_groups(self.raw_model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255.0
        sources, implied = build_sources(cfg)
        self.stream = TrainStream(sources, cfg.data_weights, cfg.size, cfg.seed, cfg.crop)
        self.val_set, self.val_description = build_val(cfg, implied)
        weights = cfg.data_weights or [1.0] * len(sources)
        self.data_description = [{**s.describe(), "weight": w} for s, w in zip(sources, weights)]
        if self.resume:
            self._load_checkpoint()
        if self.dist.main:
            atomic_write_text(self.out / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        st = self.state
        if st.total_steps is None:
            st.total_steps = cfg.schedule_steps or cfg.max_steps
            st.warmup = cfg.warmup if cfg.warmup is not None else _default_warmup(st.total_steps)

    def run(self) -> dict:
        """Train; SIGTERM (e.g. from ``timeout`` or a job scheduler) is handled like Ctrl-C:
        the checkpoint is saved before exiting."""
        if threading.current_thread() is not threading.main_thread():
            return self._run()
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return self._run()
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _run(self) -> dict:
        self.setup()
        cfg, st = self.cfg, self.state
        size, b = cfg.size, cfg.batch_size
        self.log(
            f"{'resuming' if self.resume else 'training'} {self.variant} at step {st.step}: {len(self.stream.sources)} "
            f"source(s), batch {b} x {self.dist.world} process(es), {size}px"
            f"{f' cropped to {cfg.crop}px' if cfg.crop else ''}, {self.precision} on {self.device}, "
            f"{self.workers} loader worker(s), {torch.get_num_threads()} thread(s); "
            f"val: {len(self.val_set) if self.val_set else 0} images"
        )
        if self.val_set is not None and st.step == 0 and st.last_val_step is None:
            self._run_validation()  # the untrained baseline, and the time one validation costs
        loader = self._loader(self.stream, batch_sampler=StepSampler(st.step, b, self.dist.rank, self.dist.world))
        it = iter(loader)
        budget = cfg.max_minutes * 60.0 if cfg.max_minutes else math.inf
        session_start, session_step0 = time.monotonic(), st.step
        elapsed0 = st.elapsed_s
        window: dict = {"t": time.monotonic(), "n": 0, "ok": 0, "loss": 0.0, "bce": 0.0, "dice": 0.0}
        sizing_t0 = None
        time_sized = st.total_steps is None and bool(cfg.max_minutes)
        seg = (time.monotonic(), st.step)  # training time and step since the last validation
        stop_reason = None
        bad_in_a_row = 0
        progress = self._progress if self.dist.main else None
        try:
            while True:
                now = time.monotonic()
                spent = now - session_start
                reserve = getattr(self, "val_seconds", 0.0) if self.val_set is not None else 0.0
                if cfg.max_steps is not None and st.step >= cfg.max_steps:
                    stop_reason = "max_steps"
                elif spent + reserve >= budget:
                    stop_reason = "max_minutes"
                if self.dist.on:
                    stop_reason = agree_stop(stop_reason, self.device)
                if stop_reason:
                    break
                x, y = next(it)
                lr = lr_at(st.step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=st.warmup, total=st.total_steps or 10**9)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                logits = self._forward(x)
                target = y.to(self.device, non_blocking=True).float()
                loss, parts = loss_fn(logits, target, cfg.dice)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(self.opt)
                else:
                    loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.clip_grad)
                loss_v = float(loss.detach())
                applied = apply_update(self.opt, gnorm, self.scaler)
                if applied and self.ema is not None:
                    self.ema.update(self.raw_model)
                st.step += 1
                window["n"] += 1
                if applied and math.isfinite(loss_v):
                    bad_in_a_row = 0
                    window["ok"] += 1
                    window["loss"] += loss_v
                    window["bce"] += float(parts["bce"])
                    window["dice"] += float(parts.get("dice", 0.0))
                else:
                    bad_in_a_row = self._skipped(loss_v, float(gnorm), bad_in_a_row)
                if progress:
                    progress(st.step, cfg.max_steps or st.total_steps or 0, loss=loss_v)

                # size the schedule from measured speed when only a time budget was given
                if st.total_steps is None and cfg.max_minutes:
                    done = st.step - session_step0
                    if done == SIZING_STEPS[0]:
                        sizing_t0 = time.monotonic()
                    elif sizing_t0 is not None and sizing_window_done(
                        done - SIZING_STEPS[0], time.monotonic() - sizing_t0, budget
                    ):
                        per_step = (time.monotonic() - sizing_t0) / (done - SIZING_STEPS[0])
                        st.total_steps = _estimate_total(
                            st.step,
                            per_step,
                            budget - (time.monotonic() - session_start),
                            getattr(self, "val_seconds", 0.0) if self.val_set else 0.0,
                            cfg.val_every,
                        )
                        if self.dist.on:
                            st.total_steps = broadcast_int(st.total_steps, self.device)
                        if cfg.warmup is None and st.step < st.warmup:
                            # a provisional warm-up still under way becomes 5% of the sized schedule
                            st.warmup = max(st.step, _default_warmup(st.total_steps))
                        self.log(
                            f"schedule: {per_step:.2f}s/step measured -> warm-up {st.warmup}, "
                            f"cosine to step {st.total_steps}"
                        )

                if st.step % cfg.log_every == 0:
                    if self.dist.on:
                        window.update(mean_over_ranks(window, ("ok", "loss", "bce", "dice"), self.device))
                    dt = time.monotonic() - window["t"]
                    n, ok = window["n"], max(1, window["ok"])
                    row = {
                        "type": "train",
                        "step": st.step,
                        "loss": round(window["loss"] / ok, 6),
                        "bce": round(window["bce"] / ok, 6),
                        "dice": round(window["dice"] / ok, 6) if cfg.dice > 0 else None,
                        "lr": lr,
                        "grad_norm": round(float(gnorm), 4),
                        "samples_per_s": round(n * b * self.dist.world / dt, 3),
                        "elapsed_s": round(elapsed0 + time.monotonic() - session_start, 1),
                    }
                    self._record(row)
                    total = f"/{st.total_steps}" if st.total_steps else ""
                    self.log(
                        f"step {st.step}{total}  loss {row['loss']:.4f}  lr {lr:.2e}  "
                        f"{row['samples_per_s']:.1f} samples/s"
                    )
                    window = {"t": time.monotonic(), "n": 0, "ok": 0, "loss": 0.0, "bce": 0.0, "dice": 0.0}
                if self.val_set is not None and st.step % cfg.val_every == 0:
                    seg_s = time.monotonic() - seg[0]
                    self._run_validation()
                    if time_sized and st.total_steps is not None:
                        self._refit_schedule((seg_s, st.step - seg[1]), budget - (time.monotonic() - session_start))
                    seg = (time.monotonic(), st.step)
                if st.step % (cfg.save_every or cfg.val_every) == 0:
                    st.elapsed_s = elapsed0 + time.monotonic() - session_start
                    self._save_checkpoint()
        except KeyboardInterrupt:
            if self.dist.on:  # the other ranks may be anywhere: a collective save could hang
                self.log(f"interrupted at step {st.step}: the last periodic checkpoint stands")
                raise
            self.log(f"interrupted at step {st.step}: saving the checkpoint")
            st.elapsed_s = elapsed0 + time.monotonic() - session_start
            self._save_checkpoint()
            raise
        finally:
            del it, loader

        st.elapsed_s = elapsed0 + time.monotonic() - session_start
        self.log(f"stopped at step {st.step} ({stop_reason})")
        if self.val_set is not None and st.last_val_step != st.step:
            self._run_validation()
        self._save_checkpoint()
        self.val_loader = None  # shuts its workers down
        summary = self._finish(stop_reason)
        if self.dist.on:
            import torch.distributed as dist

            dist.barrier()
        return summary

    def _finish(self, stop_reason: str) -> dict:
        st = self.state
        if not self.dist.main:
            return {}
        if self.val_set is None:  # nothing to choose by: the final model is the best one
            st.best_step, st.best_metrics = st.step, {}
            self._export(self.out / BEST, {})
        train_rows = [r for r in self.rows if r["type"] == "train"]
        val_rows = [r for r in self.rows if r["type"] == "val"]
        _write_csv(self.out / "metrics.csv", self.rows)
        self._plots(train_rows, val_rows)
        rates = [r["samples_per_s"] for r in train_rows[-20:]]
        summary = {
            "run_dir": str(self.out),
            "model": self.variant,
            "steps": st.step,
            "stop_reason": stop_reason,
            "elapsed_s": round(st.elapsed_s, 1),
            "samples_per_s": round(float(np.median(rates)), 3) if rates else None,
            "best_step": st.best_step,
            "best_val": st.best_metrics,
            "best_weights": str(self.out / BEST) if (self.out / BEST).exists() else None,
            "checkpoint": str(self.out / CHECKPOINT),
            "precision": self.precision,
            "device": str(self.device),
            "hardware": self.hardware,
            "skipped_steps": st.skipped_steps,
        }
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        if summary["best_weights"]:
            self.log(f"best: step {st.best_step} {json.dumps(st.best_metrics)} -> {self.out / BEST}")
        else:
            self.log(f"no weights exported: the run stopped before a trained step was validated (step {st.step})")
        return summary

    def _plots(self, train_rows: list[dict], val_rows: list[dict]) -> None:
        from imlscan.eval.plot import line_plot

        try:
            if len(train_rows) >= 2:
                xs = [r["step"] for r in train_rows]
                series = {"loss": (xs, [r["loss"] for r in train_rows])}
                if self.cfg.dice > 0:
                    series["bce"] = (xs, [r["bce"] for r in train_rows])
                line_plot(series, self.out / "loss.png", title="training loss", xlabel="step", ylabel="loss")
            if len(val_rows) >= 2:
                xs = [r["step"] for r in val_rows]
                series = {k: (xs, [_num(r[k]) for r in val_rows]) for k in ("pixel_f1", "pixel_auc", "pixel_iou")}
                if self.ema is not None:  # the average's curves, and the trained weights' beside them
                    series = {f"average {k}": v for k, v in series.items()}
                    for k in ("pixel_f1", "pixel_auc"):
                        series[f"trained {k}"] = (xs, [_num(r.get(f"trained_{k}")) for r in val_rows])
                line_plot(series, self.out / "val.png", title="validation", xlabel="step", ylabel="score", ylim=(0, 1))
        except Exception as e:  # noqa: BLE001 - a failed plot must not lose a finished run
            self.log(f"warning: could not draw the plots ({type(e).__name__}: {e})")


# -- helpers ---------------------------------------------------------------------------------


def apply_update(opt: torch.optim.Optimizer, grad_norm: torch.Tensor, scaler=None) -> bool:
    """Take the optimizer step unless the gradient is not finite; then clear the gradients.

    Why: one non-finite gradient, clipped, turns every weight into NaN, and a run used to end at
    the first NaN loss. In the default weights' GPU stage, bf16 training ended both runs that way
    after finite losses (steps 622 and 801; whether a gradient or the forward pass went first was
    not observed). Skipping the update is what a gradient scaler does for fp16; the scaler, when
    there is one, keeps deciding for itself. The norm is taken after the gradients are averaged
    across processes, so every rank skips the same steps."""
    if scaler is not None:  # its skips while it searches for a scale are routine, not counted
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return True
    ok = bool(torch.isfinite(grad_norm))
    if ok:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return ok


def selection_score(metrics: dict, select: str = "f1") -> float:
    """The number the best checkpoint maximizes; pixel AUC breaks ties, which matters early on
    when every map is below 0.5 and F1 is 0.

    ``f1`` (mean pixel F1 at 0.5) is the paper's metric and right for weights used as they come.
    Weights that ``imlscan weights calibrate`` will re-threshold are better chosen by a number the
    threshold does not move: ``best-f1`` (mean F1 at the single best threshold) or ``auc``.
    """

    def finite(key: str) -> float:
        v = metrics.get(key)
        return v if isinstance(v, float) and math.isfinite(v) else 0.0

    auc = finite("pixel_auc")
    return auc if select == "auc" else finite(SELECTION_METRICS[select]) + 1e-3 * auc


def sizing_window_done(steps_timed: int, seconds_timed: float, budget_s: float) -> bool:
    """Whether the speed measured so far may size the cosine of a ``--max-minutes`` run.

    Twenty steps are enough on a CPU, but not where many loader workers start up while the GPU is
    already fast: a 7-minute H200 run sized from its steps 5-25 got a cosine of 10,133 steps, ran
    11,558, and spent its last 12% at the minimum learning rate. So the window also lasts a share of
    the budget, which covers the workers' start-up without delaying long CPU runs by more than a
    minute."""
    share, cap = SIZING_WINDOW
    return steps_timed >= SIZING_STEPS[1] - SIZING_STEPS[0] and seconds_timed >= min(cap, share * budget_s)


def _default_warmup(total: int | None) -> int:
    """5% of the schedule (at most 1000 steps); 100 steps when the length is not known yet."""
    if total is None:
        return 100
    return max(1, min(1000, total // 20))


def _estimate_total(step: int, per_step: float, remaining_s: float, val_s: float, val_every: int) -> int:
    """Steps that fit in the remaining time, validation included."""
    per = per_step + (val_s / val_every if val_every else 0.0)
    return step + max(1, int(0.97 * max(0.0, remaining_s - val_s) / max(per, 1e-6)))


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def _mp_context():
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["imlscan.train.trainer"])  # workers fork from a server that has imported us
        return ctx
    return mp.get_context("spawn")


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _rng_state() -> dict:
    st = {
        "torch": torch.get_rng_state(),
        "python": _py_state_to_list(random.getstate()),
        "numpy": _np_state_to_list(np.random.get_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def _set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    version, internal, gauss = st["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in st and device.type == "cuda":
        torch.cuda.set_rng_state(st["cuda"], device)


def _py_state_to_list(s: tuple) -> list:
    return [s[0], list(s[1]), s[2]]


def _np_state_to_list(s: tuple) -> list:
    return [s[0], s[1].tolist(), int(s[2]), int(s[3]), float(s[4])]


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _num(v) -> float:
    return v if isinstance(v, float) else float("nan")


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else "n/a"


def train(
    cfg: TrainConfig,
    *,
    log: Callable[[str], None] | None = None,
    resume: bool = False,
    progress: Callable[..., None] | None = None,
) -> dict:
    """Run (or resume) training; returns the summary written to ``RUN_DIR/summary.json``.

    ``progress(step, total_steps, loss=...)`` is called after each step on the main process."""
    out = Path(cfg.out)
    if not resume and (out / CHECKPOINT).exists():
        raise ImlscanError(
            f"{out} already holds a run ({CHECKPOINT})",
            hint=f"continue it with --resume {out}, or choose another --out",
        )
    trainer = None
    try:
        trainer = Trainer(cfg, log=log, resume=resume, progress=progress)
        return trainer.run()
    except ImlscanError as e:
        raise _clean(e) from None
    finally:
        if trainer is not None:
            leave_distributed(trainer.dist)


def _clean(e: ImlscanError) -> ImlscanError:
    """An error re-raised from a data-loader worker carries a traceback in its message: keep
    the original one-line message."""
    lines = [ln for ln in e.message.splitlines() if ln.strip()]
    if len(lines) <= 1:
        return e
    last = lines[-1]
    for prefix in ("imlscan.errors.ImlscanError: ", "imlscan.errors.UsageError: "):
        if last.startswith(prefix):
            last = last[len(prefix) :]
    return ImlscanError(last, hint=e.hint, exit_code=e.exit_code)
