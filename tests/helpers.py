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
