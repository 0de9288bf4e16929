"""Augmenting real training images: flips, blur, recompression, resizing, and an extra copy-move
or removal drawn by the synthetic-forgery generator.

Its own module because it builds on both ``transforms`` (the post-processing operations) and
``synth`` (the forgeries), and ``synth`` itself builds on ``transforms``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imlscan.data import synth
from imlscan.data.transforms import apply_chain


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentations for real (annotated) training images, modelled on the recipe of the
    SparseViT/IML-ViT training code: flips, blur, JPEG, a resampling round trip, and a simple
    extra copy-move or inpainting whose region is added to the mask."""

    hflip: float = 0.5
    vflip: float = 0.5
    blur: float = 0.2
    jpeg: float = 0.2
    jpeg_quality: tuple[int, int] = (70, 100)
    resize: float = 0.2
    resize_range: tuple[float, float] = (0.5, 1.5)
    copy_move: float = 0.1
    inpaint: float = 0.1

    @classmethod
    def disabled(cls) -> AugmentConfig:
        return cls(hflip=0, vflip=0, blur=0, jpeg=0, resize=0, copy_move=0, inpaint=0)


def augment_real(
    rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly augment a real image and its mask (a pure function of the generator's state)."""
    cfg = cfg or AugmentConfig()
    mask = mask.astype(bool, copy=False)
    if rng.random() < cfg.copy_move:
        out = synth.copy_move(rgb, rng, synth.SynthConfig())
        if out is not None:
            rgb, extra, _ = out
            mask = mask | extra
    elif rng.random() < cfg.inpaint:
        out = synth.removal(rgb, rng, synth.SynthConfig())
        if out is not None:
            rgb, extra, _ = out
            mask = mask | extra
    if rng.random() < cfg.hflip:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    if rng.random() < cfg.vflip:
        rgb, mask = rgb[::-1], mask[::-1]
    rgb, mask = np.ascontiguousarray(rgb), np.ascontiguousarray(mask)
    chain: list[dict] = []
    if rng.random() < cfg.resize:
        lo, hi = cfg.resize_range
        chain.append({"op": "resize", "factor": float(np.exp(rng.uniform(np.log(lo), np.log(hi))))})
    if rng.random() < cfg.blur:
        chain.append({"op": "blur", "sigma": float(rng.uniform(0.3, 1.5))})
    if rng.random() < cfg.jpeg:
        chain.append({"op": "jpeg", "quality": int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))})
    if chain:
        rgb, mask, _ = apply_chain(rgb, mask, chain, keep_size=True)
    return rgb, mask
