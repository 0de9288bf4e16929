"""From RGB pixels to a tamper-probability map: preprocessing, resolution modes, batching,
device and precision. The network stays a plain ``nn.Module``; ``Predictor`` (like SAM's
``SamPredictor``) owns everything around it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from imlscan.device import autocast, resolve_device, resolve_precision
from imlscan.errors import UsageError

MODES = ("resize", "native")


class Predictor:
    """Runs a loaded model on images given as ``H x W x 3`` uint8 RGB arrays.

    ``mode="resize"`` is the paper's protocol (the whole image resized to the model's training
    size, the map resized back); ``mode="native"`` runs at full resolution. Output maps are
    always float32 in [0, 1] at the input's resolution.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str | torch.device | None = None,
        precision: str | None = None,
        mode: str | None = None,
        size: int | None = None,
    ):
        info = getattr(model, "weights_info", None)
        prep = info.preprocessing if info is not None else {}
        self.model = model.eval()
        self.device = resolve_device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.precision = resolve_precision(precision or getattr(model, "precision", "fp32"), self.device)
        self.mode = mode or prep.get("mode", "resize")
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}", hint=f"use one of {', '.join(MODES)}")
        self.size = int(size or prep.get("size", 512))
        mean = prep.get("mean", (0.485, 0.456, 0.406))
        std = prep.get("std", (0.229, 0.224, 0.225))
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255.0

    def to_tensor(self, rgbs: Sequence[np.ndarray]) -> torch.Tensor:
        """Stack equally sized uint8 RGB arrays into a normalized ``B x 3 x H x W`` tensor."""
        x = torch.from_numpy(np.ascontiguousarray(np.stack(rgbs))).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.model(x).float()

    def model_input(self, rgb: np.ndarray) -> np.ndarray:
        """The image as the network sees it in the current mode (before normalization)."""
        if self.mode == "resize" and rgb.shape[:2] != (self.size, self.size):
            return cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return rgb

    def predict_prob(self, rgb: np.ndarray) -> np.ndarray:
        """Probability map ``H x W`` float32 in [0, 1] for one ``H x W x 3`` uint8 image."""
        return self.predict_batch([rgb])[0]

    def predict_batch(self, rgbs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probability maps for several images; same-sized model inputs run as one batch."""
        inputs = [self.model_input(_check_rgb(r)) for r in rgbs]
        out: list[np.ndarray | None] = [None] * len(inputs)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(inputs):
            by_shape.setdefault(x.shape[:2], []).append(i)
        for idx in by_shape.values():
            probs = torch.sigmoid(self.logits(self.to_tensor([inputs[i] for i in idx])))[:, 0]
            for i, p in zip(idx, probs.cpu().numpy()):
                out[i] = _to_original(p, rgbs[i].shape[:2])
        return out  # type: ignore[return-value]


def _to_original(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if prob.shape != (h, w):
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(prob, 0.0, 1.0).astype(np.float32, copy=False)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        desc = f"{getattr(rgb, 'shape', '?')} {getattr(rgb, 'dtype', type(rgb).__name__)}"
        raise UsageError(f"expected an H x W x 3 uint8 RGB array, got {desc}")
    return rgb
