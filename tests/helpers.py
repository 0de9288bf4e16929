"""Image makers shared by several test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import cv2
import numpy as np


def textured_photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured 'photo': smooth colour gradients plus blurred noise, so that every
    manipulation changes pixels visibly."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 200, yy / h * 200, (xx + yy) / (h + w) * 255], axis=2)
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return np.clip(base + noise + 20, 0, 255).astype(np.uint8)


def multiscale_photo(rng: np.random.Generator, size: int) -> np.ndarray:
    """Texture with detail at several scales, as uint8 RGB: SIFT finds keypoints in it."""
    layers = (cv2.GaussianBlur(rng.normal(0, 60 * s, (size, size, 3)).astype(np.float32), (0, 0), s) for s in (2, 4, 8))
    return np.clip(sum(layers) + 128, 0, 255).astype(np.uint8)


def transformed_copy(
    rgb: np.ndarray,
    angle: float,
    scale: float,
    flip: bool,
    source: tuple[int, int] = (70, 70),
    target: tuple[int, int] = (180, 175),
    radius: int = 36,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A disc of ``rgb`` around ``source`` pasted around ``target``, rotated by ``angle`` degrees,
    scaled and optionally mirrored: (image, source mask, copy mask)."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D(source, angle, scale)
    if flip:
        mirror = np.array([[-1.0, 0.0, 2.0 * source[0]], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        m = (np.vstack([m, [0, 0, 1]]) @ mirror)[:2]
    m[:, 2] += np.subtract(target, source)
    disc = np.zeros((h, w), np.uint8)
    cv2.circle(disc, source, radius, 1, -1)
    copy = cv2.warpAffine(disc, m, (w, h), flags=cv2.INTER_NEAREST).astype(bool)
    out = rgb.copy()
    out[copy] = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR)[copy]
    return out, disc.astype(bool), copy


def lookalike_copy(rgb: np.ndarray, angle: float, scale: float, seed: int = 0) -> np.ndarray:
    """``transformed_copy``'s image, but the disc pasted is taken from a slightly bent,
    independently grainy version of ``rgb``: a lookalike, as a second object of the same kind
    differs from the first in its shape and fine detail."""
    h, w = rgb.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    bent = cv2.remap(rgb, xs + 1.2 * np.sin(ys / 9.0), ys + 1.2 * np.cos(xs / 11.0), cv2.INTER_LINEAR)
    grain = cv2.GaussianBlur(np.random.default_rng(seed).normal(0, 10, rgb.shape).astype(np.float32), (0, 0), 1.0)
    out, source, _ = transformed_copy(np.clip(bent + grain, 0, 255).astype(np.uint8), angle, scale, False)
    out[source] = rgb[source]
    return out


def trained_looking(name: str = "sparsevit-test"):
    """A model with random weights, non-trivial BatchNorm statistics and layer scales, so that a
    wrong fold or a dropped part shows (the 1e-6 initial gammas would hide it)."""
    import torch

    from imlscan.models import create_model

    torch.manual_seed(0)
    m = create_model(name, layer_scale_init=0.3, head_gamma_init=0.5).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.normal_(1.0, 0.2)
                mod.bias.normal_(0, 0.2)
    return m
