"""Robustness perturbations for ``imlscan eval --perturb``: parsing and applying them.

Grammar (strict; anything else is a usage error):

    SPEC  := KIND:VALUE[,VALUE...]      one setting per value, e.g. jpeg:50,70,90
           | KIND:VALUE(+KIND:VALUE)+   one chained setting, applied left to right, e.g. resize:0.5+jpeg:70
    KIND  := jpeg (quality 1-100) | blur (odd Gaussian kernel >= 3) | noise (Gaussian sigma > 0,
             on the 0-255 scale) | resize (scale factor, 0 < f <= 4)

Perturbations act on the image as stored, before the evaluation protocol resizes it; the mask
follows geometric changes (``resize``: nearest neighbour to the new size). Noise is drawn from a
generator seeded by (seed, image index, step), so every run perturbs every image identically.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import cv2
import numpy as np

from imlscan.errors import UsageError

KINDS = {
    "jpeg": "JPEG re-compression at quality Q (1-100)",
    "blur": "Gaussian blur with an odd kernel K >= 3 (sigma from K, as OpenCV)",
    "noise": "additive Gaussian noise with sigma S > 0 on the 0-255 scale",
    "resize": "bilinear resize by factor F (0 < F <= 4); the mask follows (nearest)",
}
GRAMMAR = "KIND:V[,V...] or a chain KIND:V+KIND:V with KIND in jpeg, blur, noise, resize (e.g. jpeg:50,70,90)"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


@dataclass(frozen=True)
class Step:
    kind: str
    value: float

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.value:g}"


@dataclass(frozen=True)
class Perturbation:
    """A chain of steps applied in order; one evaluation setting."""

    steps: tuple[Step, ...]

    @property
    def label(self) -> str:
        return "+".join(s.label for s in self.steps)

    @property
    def family(self) -> str:
        """The plot this setting belongs to: the chain with its last value left out."""
        head = "+".join(s.label for s in self.steps[:-1])
        return f"{head}+{self.steps[-1].kind}" if head else self.steps[-1].kind

    @property
    def strength(self) -> float:
        """The x value of this setting in its family's plot: the last step's value."""
        return self.steps[-1].value

    @property
    def geometric(self) -> bool:
        return any(s.kind == "resize" for s in self.steps)

    def apply(
        self, rgb: np.ndarray, mask: np.ndarray | None, *, seed: int = 0, index: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The perturbed image and its mask (resized with the image when the chain resizes)."""
        for k, step in enumerate(self.steps):
            rgb, mask = apply_step(step, rgb, mask, rng=np.random.default_rng([seed, index, k]))
        return rgb, mask

    def apply_file(
        self, rgb: np.ndarray, mask: np.ndarray | None, *, seed: int = 0, index: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None, bytes]:
        """Like ``apply``, with the file the perturbed photo would be: the JPEG itself when the
        chain ends with a JPEG step, else a PNG of the pixels (what the forensic traces read)."""
        data = None
        for k, step in enumerate(self.steps):
            if step.kind == "jpeg":
                rgb, data = _jpeg(rgb, int(step.value))
            else:
                rgb, mask = apply_step(step, rgb, mask, rng=np.random.default_rng([seed, index, k]))
                data = None
        if data is None:
            ok, buf = cv2.imencode(".png", rgb[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if not ok:
                raise RuntimeError("OpenCV could not encode PNG")
            data = buf.tobytes()
        return rgb, mask, data


def _value(kind: str, text: str, spec: str) -> float:
    if not _NUMBER.match(text.strip()):
        raise UsageError(f"bad --perturb {spec!r}: {text!r} is not a number", hint=GRAMMAR)
    v = float(text)
    if kind == "jpeg":
        if v != int(v) or not 1 <= v <= 100:
            raise UsageError(f"bad --perturb {spec!r}: JPEG quality must be an integer 1-100", hint=GRAMMAR)
    elif kind == "blur":
        if v != int(v) or v < 3 or int(v) % 2 == 0:
            raise UsageError(f"bad --perturb {spec!r}: blur kernel must be an odd integer >= 3", hint=GRAMMAR)
    elif kind == "noise":
        if not 0 < v <= 255:
            raise UsageError(f"bad --perturb {spec!r}: noise sigma must be in (0, 255]", hint=GRAMMAR)
    elif kind == "resize":
        if not 0 < v <= 4:
            raise UsageError(f"bad --perturb {spec!r}: resize factor must be in (0, 4]", hint=GRAMMAR)
    return v


def _step_parts(part: str, spec: str) -> tuple[str, list[str]]:
    if part.count(":") != 1:
        raise UsageError(f"bad --perturb {spec!r}: {part!r} is not KIND:VALUE", hint=GRAMMAR)
    kind, values = part.split(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise UsageError(f"bad --perturb {spec!r}: unknown kind {kind!r}", hint=GRAMMAR)
    vals = values.split(",")
    if any(not v.strip() for v in vals):
        raise UsageError(f"bad --perturb {spec!r}: empty value", hint=GRAMMAR)
    return kind, vals


def parse_perturbation(spec: str) -> list[Perturbation]:
    """The settings of one ``--perturb`` value (several for a value list, one for a chain)."""
    text = spec.strip()
    if not text:
        raise UsageError("empty --perturb value", hint=GRAMMAR)
    parts = text.split("+")
    if len(parts) == 1:
        kind, vals = _step_parts(parts[0], spec)
        return [Perturbation((Step(kind, _value(kind, v, spec)),)) for v in vals]
    steps = []
    for part in parts:
        kind, vals = _step_parts(part, spec)
        if len(vals) != 1:
            raise UsageError(f"bad --perturb {spec!r}: each step of a chain takes one value", hint=GRAMMAR)
        steps.append(Step(kind, _value(kind, vals[0], spec)))
    return [Perturbation(tuple(steps))]


def parse_perturbations(specs: list[str]) -> list[Perturbation]:
    """All settings of several ``--perturb`` values, in order, without duplicates."""
    out: list[Perturbation] = []
    for spec in specs:
        for p in parse_perturbation(spec):
            if p not in out:
                out.append(p)
    return out


def apply_step(
    step: Step, rgb: np.ndarray, mask: np.ndarray | None, *, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply one step to an ``H x W x 3`` uint8 RGB image and its (optional) bool mask."""
    if step.kind == "jpeg":
        return _jpeg(rgb, int(step.value))[0], mask
    if step.kind == "blur":
        k = int(step.value)
        return cv2.GaussianBlur(rgb, (k, k), 0), mask
    if step.kind == "noise":
        rng = rng or np.random.default_rng(0)
        noisy = rgb.astype(np.float32) + rng.normal(0.0, step.value, rgb.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mask
    if step.kind == "resize":
        h, w = rgb.shape[:2]
        nw, nh = max(1, int(math.floor(w * step.value + 0.5))), max(1, int(math.floor(h * step.value + 0.5)))
        out = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if mask is not None:
            mask = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
        return out, mask
    raise UsageError(f"unknown perturbation {step.kind!r}", hint=GRAMMAR)


def _jpeg(rgb: np.ndarray, quality: int) -> tuple[np.ndarray, bytes]:
    """A JPEG round trip with OpenCV's encoder: the decoded pixels and the file's bytes."""
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode JPEG")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]), buf.tobytes()
