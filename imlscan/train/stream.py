"""The training data: sources (synthetic forgeries made on the fly, real datasets), the stream
that turns a global sample index into one augmented sample, the step sampler that shards it over
processes, and the fixed validation set.

The training data is a pure function of the global sample index (see ``trainer``), so a resumed
or sharded run sees exactly the batches an uninterrupted single-process run would."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from urllib.parse import parse_qsl

import cv2
import numpy as np
import torch

from imlscan.data.augment import AugmentConfig, augment_real
from imlscan.data.synth import SynthConfig, SynthGenerator, host_split, parse_area, parse_fractions
from imlscan.data.transforms import PostConfig, resize_mask
from imlscan.errors import UsageError
from imlscan.train.config import SYNTH_KEYS, VAL_SEED, TrainConfig

# -- data ------------------------------------------------------------------------------------


class Source:
    """One ``--data`` entry: ``get(g)`` returns (RGB uint8, mask bool) for global index ``g``."""

    name: str
    kind: str

    def get(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError


class SynthSource(Source):
    kind = "synth"

    def __init__(self, spec: str, gen: SynthGenerator):
        self.spec, self.gen, self.name = spec, gen, f"synth:{Path(gen.hosts_dir).name}"

    def get(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.gen.sample(g)
        return s.image, s.mask

    def describe(self) -> dict:
        return {"spec": self.spec, "kind": "synth", **self.gen.describe()}


class RealSource(Source):
    """Items of a real dataset, drawn uniformly with replacement (a pure function of ``g``)."""

    kind = "real"

    def __init__(self, spec: str, name: str, items: list, seed: int, augment: bool, held_out: int = 0):
        self.spec, self.name, self.items, self.seed = spec, name, items, seed
        self.augment = AugmentConfig() if augment else None
        self.held_out = held_out

    def get(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, g, 11])
        item = self.items[int(rng.integers(len(self.items)))]
        rgb, mask = read_item(item)
        if self.augment is not None:
            rgb, mask = augment_real(rgb, mask, rng, self.augment)
        return rgb, mask

    def describe(self) -> dict:
        n_man = sum(s.mask_path is not None for s in self.items)
        return {
            "spec": self.spec,
            "kind": "real",
            "name": self.name,
            "n_images": len(self.items),
            "n_manipulated": n_man,
            "held_out_for_val": self.held_out,
            "augment": asdict(self.augment) if self.augment else None,
        }


def read_item(item) -> tuple[np.ndarray, np.ndarray]:
    """A dataset sample as (RGB, bool mask), the mask resampled if its size differs."""
    from imlscan.data import read_mask, read_rgb

    rgb = read_rgb(item.image_path)
    h, w = rgb.shape[:2]
    if item.mask_path is None:
        return rgb, np.zeros((h, w), bool)
    mask = read_mask(item.mask_path)
    if mask.shape != (h, w):
        mask = resize_mask(mask, w, h)
    return rgb, mask


def _flag(value: str, key: str) -> bool:
    """A spec's on/off option: 1/on/true/yes or 0/off/false/no."""
    v = value.strip().lower()
    if v in ("1", "on", "true", "yes"):
        return True
    if v in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{key} must be 1 or 0, got {value!r}")


def parse_synth_spec(spec: str, *, seed: int, split: str) -> SynthGenerator:
    """``synth:HOSTS_DIR[?regions=DIR&negatives=0.2&seed=N&...]`` -> a generator."""
    body = spec[len("synth:") :]
    path, _, query = body.partition("?")
    if not path:
        raise UsageError(f"{spec!r}: no folder after 'synth:'", hint="e.g. synth:photos/?regions=regions/")
    opts = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    unknown = set(opts) - SYNTH_KEYS
    if unknown:
        raise UsageError(
            f"{spec!r}: unknown option(s) {', '.join(sorted(unknown))}", hint=f"known: {sorted(SYNTH_KEYS)}"
        )
    try:
        kw: dict = {}
        if "negatives" in opts:
            kw["negatives"] = float(opts["negatives"])
        if "kinds" in opts:
            kw["kinds"] = parse_fractions(opts["kinds"], 3, f"{spec!r}: kinds (splice,copymove,removal)")
        if "area" in opts:
            kw.update(parse_area(opts["area"], f"{spec!r}: area (min,max)"))
        if "max_side" in opts:
            kw["max_side"] = int(opts["max_side"])
        if "host_resize" in opts:
            kw["host_resize"] = float(opts["host_resize"])
        if "forge_scale" in opts:
            kw["forge_scale"] = float(opts["forge_scale"])
        if "translate" in opts:
            kw["translate"] = float(opts["translate"])
        if "translate_objects" in opts:
            kw["translate_objects"] = _flag(opts["translate_objects"], "translate_objects")
        if not _flag(opts.get("post", "1"), "post"):
            kw["post"] = PostConfig.disabled()
        sseed = int(opts.get("seed", seed))
        val_fraction = float(opts.get("val_fraction", 0.1))
    except ValueError as e:
        raise UsageError(f"{spec!r}: {e}") from None
    split = opts.get("split", split)
    return SynthGenerator.from_folder(
        path,
        split=split,
        regions_dir=opts.get("regions") or None,
        seed=sseed,
        config=SynthConfig(**kw),
        val_fraction=val_fraction,
    )


def build_sources(cfg: TrainConfig) -> tuple[list[Source], list]:
    """Training sources, and the validation sets they imply (synthetic val split of hosts,
    hash-held-out 10% of real datasets) unless ``--val`` names them."""
    from imlscan.data import load_dataset

    sources: list[Source] = []
    implied_val: list = []
    for k, spec in enumerate(cfg.data):
        if spec.startswith("synth:"):
            gen = parse_synth_spec(spec, seed=cfg.seed * 1000 + k, split="train")
            sources.append(SynthSource(spec, gen))
            implied_val.append(("synth", spec))
        else:
            ds = load_dataset(spec)
            items, held = list(ds.items), []
            if cfg.val is None and len(items) >= 20:
                held = [s for s in items if host_split(s.image_path) == "val"]
                items = [s for s in items if host_split(s.image_path) != "val"]
            sources.append(RealSource(spec, ds.name, items, cfg.seed * 1000 + k, cfg.augment, len(held)))
            if held:
                implied_val.append(("items", ds.name, held))
    return sources, implied_val


class TrainStream(torch.utils.data.Dataset):
    """Map-style dataset indexed by the global sample index; items are ``size x size``, or a
    random ``crop x crop`` window of that when ``crop`` is given.

    Cropping keeps the pixel scale the model sees at inference (the whole image resized to
    ``size``) while costing what a ``crop``-sized step costs: resizing whole images down to a
    small training side instead would blur away the traces (JPEG grid, noise) the model learns."""

    def __init__(
        self, sources: list[Source], weights: list[float] | None, size: int, seed: int, crop: int | None = None
    ):
        self.sources, self.size, self.seed, self.crop = sources, size, seed, crop
        w = np.asarray(weights if weights is not None else [1.0] * len(sources), np.float64)
        self.p = w / w.sum()

    def __len__(self) -> int:  # the stream is endless; the sampler decides the indices
        return 2**62

    def __getitem__(self, g: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = 0 if len(self.sources) == 1 else int(np.random.default_rng([self.seed, g, 7]).choice(len(self.p), p=self.p))
        rgb, mask = self.sources[k].get(int(g))
        x, y = to_model_size(rgb, mask, self.size)
        if self.crop is None or self.crop == self.size:
            return x, y
        top, left = np.random.default_rng([self.seed, g, 11]).integers(0, self.size - self.crop + 1, size=2)
        window = (slice(None), slice(int(top), int(top) + self.crop), slice(int(left), int(left) + self.crop))
        return x[window].contiguous(), y[window].contiguous()


def to_model_size(rgb: np.ndarray, mask: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's protocol, as ``Predictor`` applies it: the whole image resized to
    ``size x size`` (bilinear); the mask as coverage > 0.5. uint8 tensors (normalized on the
    device: four times less to copy)."""
    if rgb.shape[:2] != (size, size):
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    mask = resize_mask(mask, size, size)
    x = torch.from_numpy(_writable(rgb)).permute(2, 0, 1)
    y = torch.from_numpy(mask.astype(np.uint8))[None]
    return x, y


def _writable(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()


class StepSampler(torch.utils.data.Sampler):
    """Endless batches of global indices, from ``start_step`` on, for one rank."""

    def __init__(self, start_step: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.b, self.rank, self.world = start_step, batch_size, rank, world

    def __iter__(self):
        t = self.start
        while True:
            base = (t * self.world + self.rank) * self.b
            yield list(range(base, base + self.b))
            t += 1


class ValSet(torch.utils.data.Dataset):
    """Fixed validation samples: model input at ``size`` plus the mask at full resolution
    (metrics are computed at the original resolution, the paper's protocol)."""

    def __init__(self, entries: list[tuple], size: int):
        self.entries, self.size = entries, size

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, j: int):
        kind, obj, key = self.entries[j]
        if kind == "synth":
            s = obj.sample(key)
            rgb, mask = s.image, s.mask
        else:
            rgb, mask = read_item(obj)
        if rgb.shape[:2] != (self.size, self.size):
            rgb = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(_writable(rgb)).permute(2, 0, 1), mask


def val_collate(batch):
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


def build_val(cfg: TrainConfig, implied: list) -> tuple[ValSet | None, list[dict]]:
    """The validation set: ``--val`` specs, else the held-out splits implied by ``--data``."""
    from imlscan.data import load_dataset

    if cfg.val is not None and [v.lower() for v in cfg.val] == ["none"]:
        return None, []
    specs: list = []
    if cfg.val is not None:
        for spec in cfg.val:
            if spec.startswith("synth:"):
                specs.append(("synth", spec))
            else:
                ds = load_dataset(spec)
                specs.append(("items", ds.name, list(ds.items)))
    else:
        specs = implied
    entries: list[tuple] = []
    described: list[dict] = []
    n_synth = sum(s[0] == "synth" for s in specs)
    for s in specs:
        if s[0] == "synth":
            split = "all" if cfg.val is not None and "split=" in s[1] else "val"
            gen = parse_synth_spec(s[1], seed=VAL_SEED, split=split)
            gen.seed = VAL_SEED
            n = max(1, cfg.val_samples // n_synth)
            entries += [("synth", gen, i) for i in range(n)]
            described.append({"spec": s[1], "kind": "synth", "split": gen.split, "samples": n, "seed": VAL_SEED})
        else:
            entries += [("item", it, 0) for it in s[2]]
            described.append({"name": s[1], "kind": "real", "images": len(s[2])})
    if not entries:
        return None, []
    return ValSet(entries, cfg.size), described
