"""One map from the network, the copy-move detectors and the forensic traces: the fusion rule.

The rule is a per-pixel logistic model with the network's map as a fixed offset:

    logit(fused) = logit(p) + sum over the traces t that apply of (bias_t + weight_t * f_t(m_t))

where ``p`` is the map the weights produce today (the network fused with the copy-move detectors),
``m_t`` is trace ``t``'s map and ``f_t`` reads it as evidence (``FEATURES``):

- ``centered``: ``m - 0.5`` (rule version 1; a trace's say is bounded by ``weight / 2`` logits);
- ``logit``: ``logit(m)`` with ``m`` clipped to [0.01, 0.99], so a confident map counts as much as
  its confidence (up to +-4.6 times its weight);
- ``llr``: for a trace whose map is a posterior with a per-photo prior (``details["prior"]``, the
  aligned double JPEG's empirical Bayes prior), its log-likelihood ratio ``logit(m) - logit(prior)``
  clipped to +-6: zero where the trace saw nothing, whatever the prior; no bias.

Why this shape:

- a trace that does not apply (a PNG for the JPEG traces) adds nothing, so such a photo is scored
  exactly as without the traces, and so is every photo scanned with weights that carry no rule;
- two numbers per trace, fitted on the training split's forgeries by penalized maximum
  likelihood: few fitted parameters, little room to learn the generator rather than the traces;
- ``bias_t`` lets a trace that applies and finds nothing lower the network's false alarms, and
  ``weight_t`` says how much its map is worth beside the network's;
- every input's contribution is a number in logits, which the report shows.

The rule lives in the weights file's metadata under ``fusion`` with its version, so a result
reproduces from the file alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imlscan.errors import UsageError
from imlscan.scanning.traces import TRACE_VERSIONS, TRACES, TraceResult

FUSION_VERSION = 2  # 2: each term names its feature; 1 (every feature "centered") still reads
ENTRY = "fusion"
FEATURES = ("centered", "logit", "llr")
FEATURE_EPS = 0.01  # maps are clipped to [0.01, 0.99] before their logit: 8-bit maps, +-4.6 logits at most
LLR_CLIP = 6.0
EPS = 1e-4  # probabilities are clipped to [EPS, 1 - EPS] before their logit (about +-9.2)
MAX_LOGIT_TERM = 20.0  # a fitted bias or weight beyond this is a degenerate fit, refused


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float32), EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))).astype(np.float32)


@dataclass(frozen=True)
class FusionRule:
    """The fitted rule: per trace, the logit added where it applies (see the module docstring).

    Attributes:
        terms: trace name -> (bias, weight).
        features: trace name -> how its map is read (``FEATURES``; default ``centered``).
        version: the rule's form (``FUSION_VERSION``; version 1 files read as all ``centered``).
        fitted: how it was fitted (dataset, images, pixels, penalty), recorded with the rule.
    """

    terms: dict[str, tuple[float, float]]
    version: int = FUSION_VERSION
    fitted: dict[str, Any] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", {n: self.features.get(n, "centered") for n in self.terms})
        if self.version not in (1, FUSION_VERSION):
            raise UsageError(
                f"fusion rule version {self.version} is not {FUSION_VERSION}", hint="upgrade imlscan or refit the rule"
            )
        for name, (b, w) in self.terms.items():
            if name not in TRACES:
                raise UsageError(f"fusion rule names an unknown trace {name!r}")
            if not (np.isfinite(b) and np.isfinite(w) and abs(b) <= MAX_LOGIT_TERM and abs(w) <= MAX_LOGIT_TERM):
                raise UsageError(f"fusion rule term for {name!r} is not a finite number within +-{MAX_LOGIT_TERM}")
            if self.feature(name) not in FEATURES or (self.version == 1 and self.feature(name) != "centered"):
                raise UsageError(f"fusion rule term for {name!r} reads its map as {self.feature(name)!r}: unknown")

    @property
    def traces(self) -> tuple[str, ...]:
        return tuple(self.terms)

    def feature(self, name: str) -> str:
        return self.features.get(name, "centered")

    def stale_traces(self) -> dict[str, tuple[int, int]]:
        """Traces whose map has changed since the rule was fitted: name -> (fitted on, running).
        A rule that records no versions was fitted on version 1 of every trace."""
        recorded = self.fitted.get("trace_versions") or {}
        out = {}
        for name in self.terms:
            was, now = int(recorded.get(name, 1)), TRACE_VERSIONS.get(name, 1)
            if was != now:
                out[name] = (was, now)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "form": "logit(fused) = logit(p) + sum_t [bias_t + weight_t * f_t(map_t)] over applicable traces",
            "terms": {
                k: {"bias": round(b, 6), "weight": round(w, 6), "feature": self.feature(k)}
                for k, (b, w) in self.terms.items()
            },
            "fitted": self.fitted,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FusionRule:
        try:
            entries = dict(d["terms"])
            terms = {str(k): (float(v["bias"]), float(v["weight"])) for k, v in entries.items()}
            features = {str(k): str(v.get("feature", "centered")) for k, v in entries.items()}
            version = int(d.get("version", FUSION_VERSION))
            return cls(terms=terms, version=version, fitted=dict(d.get("fitted") or {}), features=features)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UsageError(f"bad fusion entry in the weights metadata: {e}") from None

    @classmethod
    def of(cls, metadata: Mapping[str, Any] | None) -> FusionRule | None:
        """The rule a weights file's metadata carries, or None (the map is the network's)."""
        entry = (metadata or {}).get(ENTRY)
        return cls.from_dict(entry) if entry else None

    def restricted(self, names: Iterable[str]) -> FusionRule | None:
        """The same rule with only the terms of ``names`` (None when none is left)."""
        keep = set(names)
        terms = {n: t for n, t in self.terms.items() if n in keep}
        if not terms:
            return None
        features = {n: f for n, f in self.features.items() if n in keep}
        return FusionRule(terms=terms, version=self.version, fitted=self.fitted, features=features)


FORMS = ("centered", "logit", "llr")
PRIOR_TRACES = ("adq",)  # traces whose map is a posterior with its prior in details["prior"]


def form_features(form: str, names: Iterable[str]) -> dict[str, str]:
    """Each trace's feature under a named rule form: ``centered`` (version 1) and ``logit`` read
    every map alike; ``llr`` reads the traces with a prior by their log-likelihood ratio and the
    others by their logit."""
    if form not in FORMS:
        raise UsageError(f"unknown fusion form {form!r}", hint=f"use one of {', '.join(FORMS)}")
    if form == "llr":
        return {n: "llr" if n in PRIOR_TRACES else "logit" for n in names}
    return dict.fromkeys(names, form)


def feature_of(kind: str, result: TraceResult) -> np.ndarray:
    """Trace ``result``'s map read as the rule's feature ``kind`` (see the module docstring)."""
    m = np.asarray(result.map, np.float32)
    if kind == "centered":
        return m - np.float32(0.5)
    if kind == "logit":
        return _logit_clipped(m)
    prior = (result.details or {}).get("prior")
    if prior is None or not np.isfinite(prior):
        prior = 0.5
    llr = _logit_clipped(m) - _logit_clipped(np.float32(prior))
    return np.clip(llr, -LLR_CLIP, LLR_CLIP).astype(np.float32)


def _logit_clipped(m: np.ndarray) -> np.ndarray:
    m = np.clip(np.asarray(m, np.float32), FEATURE_EPS, 1.0 - FEATURE_EPS)
    return np.log(m / (1.0 - m)).astype(np.float32)


def usable(traces: Mapping[str, TraceResult], names: Iterable[str]) -> list[str]:
    """The traces among ``names`` that can enter the fusion for this photo: they apply, are
    fusable and produced a map."""
    return [n for n in names if n in traces and traces[n].applies and traces[n].fusable and traces[n].map is not None]


MOVED_LOGIT = 1.0  # a pixel counts as raised or lowered by a trace when its term is at least this


def fuse_traces(
    prob: np.ndarray,
    traces: Mapping[str, TraceResult],
    rule: FusionRule | None,
    moved: dict[str, dict[str, float]] | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Apply ``rule`` to one photo.

    Arguments:
        prob: the weights' own map (network and copy-move detectors), H x W in [0, 1].
        traces: the photo's trace results, maps at the same H x W.
        rule: the fitted rule, or None.
        moved: when given, filled per trace that entered with the shares of the photo's pixels
            it raised and lowered by at least ``MOVED_LOGIT``. Why: a mean alone misleads a
            reader; adq lowers a large background a little and raises a paste a lot, so its
            mean over the photo is often negative on the very photos where it found the edit.

    Returns:
        ``(fused, contributions)``: the fused map (``prob`` itself, unchanged, when no term
        applies) and, per trace that entered, its mean added logit over the photo.
    """
    if rule is None:
        return prob, {}
    names = usable(traces, rule.traces)
    if not names:
        return prob, {}
    z = _logit(prob)
    contributions = {}
    for name in names:
        m = np.asarray(traces[name].map, np.float32)
        if m.shape != prob.shape:
            raise ValueError(f"trace {name} map {m.shape} does not match the map {prob.shape}")
        b, w = rule.terms[name]
        term = b + w * feature_of(rule.feature(name), traces[name])
        contributions[name] = round(float(term.mean()), 4)
        if moved is not None:
            term = np.broadcast_to(term, prob.shape)
            moved[name] = {
                "raised_share": round(float((term >= MOVED_LOGIT).mean()), 4),
                "lowered_share": round(float((term <= -MOVED_LOGIT).mean()), 4),
            }
        z = z + term
    return _sigmoid(z), contributions


# --- fitting ------------------------------------------------------------------------------------


def draw_pixels(mask: np.ndarray, rng: np.random.Generator, k: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``k`` pixel indices of a flattened ``mask`` (half inside when it has pixels there), their
    truth, and weights that give each class its true share of the image and sum to ``k``."""
    mask = np.asarray(mask, bool).ravel()
    pos, neg = np.flatnonzero(mask), np.flatnonzero(~mask)
    take = []
    if neg.size:
        take.append(rng.choice(neg, min(neg.size, k if pos.size == 0 else k // 2), replace=False))
    if pos.size:
        take.append(rng.choice(pos, min(pos.size, k // 2), replace=False))
    idx = np.sort(np.concatenate(take)) if take else np.zeros(0, np.int64)
    target = mask[idx]
    n_pos = int(target.sum())
    weight = np.where(target, pos.size / max(n_pos, 1), neg.size / max(idx.size - n_pos, 1)).astype(np.float32) * (
        k / mask.size
    )
    return idx, target, weight


def sample_pixels(
    prob: np.ndarray,
    traces: Mapping[str, TraceResult],
    mask: np.ndarray,
    names: Sequence[str],
    rng: np.random.Generator,
    k: int = 4096,
    features: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The pixels one image contributes to a fit: ``k`` drawn (half inside the mask when it has
    one, so that small edits are seen), each weighted back to its class's true share of the image,
    so that the fit sees every image's real proportions (a balanced draw left unweighted would
    teach the rule to raise every pixel) and every image weighs alike whatever its size.

    Returns:
        ``(offset, columns, target, weight, used)``: the network's logits, the design columns (per
        trace in ``names``: applies (0 for an ``llr`` feature, which has no bias), applies *
        feature, the feature ``features[name]``, default ``centered``), the ground truth, each
        pixel's weight (summing to ``k`` over the image) and the traces that applied.
    """
    idx, target, weight = draw_pixels(mask, rng, k)
    cols = np.zeros((idx.size, 2 * len(names)), np.float32)
    used = usable(traces, names)
    for name in used:
        t = list(names).index(name)
        kind = (features or {}).get(name, "centered")
        cols[:, 2 * t] = 0.0 if kind == "llr" else 1.0
        cols[:, 2 * t + 1] = feature_of(kind, traces[name]).ravel()[idx]
    return _logit(np.asarray(prob).ravel()[idx]), cols, target.astype(np.float32), weight, used


def fit_pixels(
    offset: np.ndarray,
    columns: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    names: Sequence[str],
    *,
    penalty: float = 1.0,
    pixels_per_image: int = 4096,
    fitted: dict[str, Any] | None = None,
    applied: Mapping[str, int] | None = None,
    features: Mapping[str, str] | None = None,
) -> FusionRule:
    """Fit the rule's terms to sampled pixels by penalized maximum likelihood (Newton's method on
    a convex problem). The L2 penalty, in units of one image's pixels, keeps a trace that rarely
    applies near zero rather than at a noisy extreme. Traces that never applied get no term."""
    off = np.asarray(offset, np.float64)
    x = np.asarray(columns, np.float64)
    y = np.asarray(target, np.float64)
    w = np.asarray(weight, np.float64)
    if y.size == 0:
        raise UsageError("no pixels to fit the fusion rule on")
    lam = penalty * pixels_per_image
    beta = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(off + x @ beta, -60, 60)))
        grad = x.T @ (w * (p - y)) + lam * beta
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + lam * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    beta = np.clip(beta, -MAX_LOGIT_TERM, MAX_LOGIT_TERM)

    def loss(b: np.ndarray) -> float:
        z = off + x @ b
        return float(np.sum(w * (np.logaddexp(0.0, z) - y * z)) / np.sum(w))

    applied = dict(applied or {n: int((x[:, 2 * i : 2 * i + 2] != 0).any()) for i, n in enumerate(names)})
    terms = {n: (float(beta[2 * i]), float(beta[2 * i + 1])) for i, n in enumerate(names) if applied.get(n)}
    record = {
        **(fitted or {}),
        "pixels": int(y.size),
        "pixels_per_image": pixels_per_image,
        "penalty": penalty,
        "images_where_applied": applied,
        "log_loss_network_alone": round(loss(np.zeros_like(beta)), 6),
        "log_loss_fused": round(loss(beta), 6),
    }
    kinds = {n: (features or {}).get(n, "centered") for n in terms}
    return FusionRule(terms=terms, fitted=record, features=kinds)


def fit_rule(
    samples: Iterable[tuple[np.ndarray, Mapping[str, TraceResult], np.ndarray]],
    names: Sequence[str],
    *,
    pixels_per_image: int = 4096,
    penalty: float = 1.0,
    seed: int = 0,
    fitted: dict[str, Any] | None = None,
    features: Mapping[str, str] | None = None,
) -> FusionRule:
    """Fit the rule on images given as ``(prob, traces, mask)`` (the weights' map, the trace
    results and the ground truth, all at one resolution); see ``sample_pixels`` and ``fit_pixels``.
    Deterministic for a given ``seed``."""
    names = [n for n in names if n in TRACES]
    rng = np.random.default_rng(seed)
    parts, applied, n_images = [], dict.fromkeys(names, 0), 0
    for prob, traces, mask in samples:
        off, cols, y, wt, used = sample_pixels(prob, traces, mask, names, rng, pixels_per_image, features)
        if y.size:
            parts.append((off, cols, y, wt))
            n_images += 1
            for n in used:
                applied[n] += 1
    if not parts:
        raise UsageError("no pixels to fit the fusion rule on")
    off, cols, y, wt = (np.concatenate(a) for a in zip(*parts))
    record = {
        **(fitted or {}),
        "images": n_images,
        "seed": seed,
        "trace_versions": {n: TRACE_VERSIONS[n] for n in names},
    }
    return fit_pixels(
        off,
        cols,
        y,
        wt,
        names,
        penalty=penalty,
        pixels_per_image=pixels_per_image,
        fitted=record,
        applied=applied,
        features=features,
    )
