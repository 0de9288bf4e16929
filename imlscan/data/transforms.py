"""Pixel operations shared by the synthetic generator and the trainer: post-processing chains
(JPEG, resize, blur, noise) and the augmentations applied to real training data.

A chain is sampled once as a list of plain dicts (``{"op": "jpeg", "quality": 75}``) and then
applied; keeping the two apart makes every chain printable, storable in a manifest and
replayable, and keeps the randomness in one place (the sampler). Every geometric operation
takes the mask along, so the mask always describes the pixels the image holds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

# -- single operations ---------------------------------------------------------------------


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> tuple[np.ndarray, bytes]:
    """Encode as baseline JPEG (4:2:0, like most cameras and PIL's default) and decode again.
    Returns the decoded pixels and the encoded bytes, so a caller can save the exact file."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    data = buf.getvalue()
    return decode_jpeg(data), data


def decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def resize_pair(
    rgb: np.ndarray, mask: np.ndarray | None, width: int, height: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize an image and its mask together. The mask is resampled as a float coverage map and
    thresholded at 0.5: a pixel is positive when more than half of it came from positive
    pixels, which keeps the positive area unbiased under any scale factor."""
    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb, mask
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LINEAR
    out = cv2.resize(rgb, (width, height), interpolation=interp)
    if mask is not None:
        mask = resize_mask(mask, width, height)
    return out, mask


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = mask.shape[:2]
    if (w, h) == (width, height):
        return mask.astype(bool, copy=False)
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LINEAR
    return cv2.resize(mask.astype(np.float32), (width, height), interpolation=interp) > 0.5


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT_101)


def add_noise(rgb: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Additive Gaussian noise in grey levels; ``seed`` makes it a pure function."""
    noise = np.random.default_rng(seed).standard_normal(rgb.shape, dtype=np.float32)
    return np.clip(rgb + noise * np.float32(sigma) + np.float32(0.5), 0, 255).astype(np.uint8)


# -- post-processing chains ----------------------------------------------------------------


@dataclass(frozen=True)
class PostConfig:
    """Probabilities and ranges of the whole-image post-processing applied after a
    manipulation (and to negatives alike, so processing alone never signals a forgery)."""

    resize: float = 0.25
    resize_range: tuple[float, float] = (0.5, 1.5)
    blur: float = 0.15
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise: float = 0.15
    noise_sigma: tuple[float, float] = (1.0, 5.0)
    jpeg: float = 0.6
    jpeg_quality: tuple[int, int] = (50, 100)
    double_jpeg: float = 0.3

    @classmethod
    def disabled(cls) -> PostConfig:
        return cls(resize=0.0, blur=0.0, noise=0.0, jpeg=0.0, double_jpeg=0.0)


def sample_chain(rng: np.random.Generator, cfg: PostConfig) -> list[dict]:
    """Draw a chain: resize, blur and noise each with their probability, in random order, then
    JPEG last (once, or twice with two different qualities) so the final file can be the JPEG
    whose traces the pixels carry."""
    ops: list[dict] = []
    if rng.random() < cfg.resize:
        lo, hi = cfg.resize_range
        ops.append({"op": "resize", "factor": round(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), 4)})
    if rng.random() < cfg.blur:
        ops.append({"op": "blur", "sigma": round(float(rng.uniform(*cfg.blur_sigma)), 3)})
    if rng.random() < cfg.noise:
        ops.append(
            {"op": "noise", "sigma": round(float(rng.uniform(*cfg.noise_sigma)), 3), "seed": int(rng.integers(2**31))}
        )
    ops = [ops[i] for i in rng.permutation(len(ops))]
    if rng.random() < cfg.jpeg:
        qlo, qhi = cfg.jpeg_quality
        q1 = int(rng.integers(qlo, qhi + 1))
        if rng.random() < cfg.double_jpeg:
            q0 = int(rng.integers(qlo, qhi + 1))
            while q0 == q1 and qhi > qlo:
                q0 = int(rng.integers(qlo, qhi + 1))
            ops.append({"op": "jpeg", "quality": q0})
        ops.append({"op": "jpeg", "quality": q1})
    return ops


def apply_chain(
    rgb: np.ndarray, mask: np.ndarray, chain: list[dict], *, keep_size: bool = False
) -> tuple[np.ndarray, np.ndarray, bytes | None]:
    """Apply a sampled chain. Returns the image, the mask (following every resize) and, when
    the last operation is JPEG, the encoded bytes of that final JPEG (else ``None``).

    ``keep_size`` turns a resize into a round trip (down/up and back to the original size):
    the resampling trace is kept while a fixed-size dataset keeps its size; the geometry is the
    identity, so the mask is unchanged."""
    encoded = None
    for op in chain:
        encoded = None
        kind = op["op"]
        if kind == "resize":
            h, w = rgb.shape[:2]
            nw, nh = max(8, round(w * op["factor"])), max(8, round(h * op["factor"]))
            if keep_size:
                small = cv2.resize(
                    rgb, (nw, nh), interpolation=cv2.INTER_AREA if op["factor"] < 1 else cv2.INTER_LINEAR
                )
                rgb = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
            else:
                rgb, mask = resize_pair(rgb, mask, nw, nh)
        elif kind == "blur":
            rgb = gaussian_blur(rgb, op["sigma"])
        elif kind == "noise":
            rgb = add_noise(rgb, op["sigma"], op["seed"])
        elif kind == "jpeg":
            rgb, encoded = jpeg_roundtrip(rgb, op["quality"])
        else:
            raise ValueError(f"unknown post-processing op {kind!r}")
    return rgb, mask, encoded


# -- augmentation of real training data ----------------------------------------------------
