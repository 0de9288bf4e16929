"""Choose the keypoint copy-move detector's settings on a calibration set, by a rule fixed in advance.

For every image of a pairs.json (paper protocol: the image resized to 512x512), the weights' own
map (the network fused with the dense matcher, keypoints off) and the keypoint matches are
computed once; then every setting on the grid is scored by the mean per-image F1 at 0.5 over the
manipulated images, with the keypoint map fused in, and the mean share of an authentic image's
pixels flagged. The rule, fixed before any of its numbers were seen: the best F1 among the
settings that flag at most ``--max-authentic-fpr`` (the calibration's limit), and only if it beats
the weights without keypoints. Calibrate on training-split forgeries, never on the set you report.

    git show 6b66f6d:weights/imlscan-sparsevit-t-v19.safetensors > runs/v19.safetensors   # v20 was made from v19
    python tools/select_copy_move_keypoints.py runs/v19.safetensors data/synth-calib/pairs.json \
        --out weights/imlscan-sparsevit-t-v20.safetensors

With ``--out``, the chosen settings are attached (tensors and every other entry unchanged) and a
calibrated input gets its authentic reference scores recomputed with the detector on.

``--joint`` spends the same authentic budget jointly: every setting (and keypoints off) is scored
at each network threshold of ``THRESHOLDS`` (the detectors' maps stay thresholded at 0.5), and
the best F1 within the limit wins if it beats the input as it is (its own keypoint settings, or
none, at 0.5; ties go to the threshold nearest 0.5). Why: without it, a detector may add nothing
on the calibration set's authentic photos once the network's threshold has used the whole budget,
which rules out every sensitive setting by a few hundredths of a percent. With ``--out`` the
output bias also moves the network's decision point to the chosen threshold, recorded under
``calibration`` (the earlier calibration kept under ``previous``).

    git show 93e803d:weights/imlscan-sparsevit-t-v20.safetensors > runs/v20.safetensors   # v22 and v23: from v20
    python tools/select_copy_move_keypoints.py runs/v20.safetensors data/synth-calib/pairs.json \
        --joint --out weights/imlscan-sparsevit-t-v23.safetensors

Each setting is scored with the detector's verification off and on (``VERIFY``; its thresholds are
``KeypointConfig``'s, fitted beforehand by ``fit_keypoint_verifier.py``). v22 was chosen before
the verification existed, from the same grid without it.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from selection_rule import calibration_images, choose, parser, score_maps

from imlscan.calibrate import Calibration, apply, attach_keypoints, logit
from imlscan.scanning.copymove import CopyMoveMatcher, config_of
from imlscan.scanning.copymove_keypoints import (
    Finding,
    KeypointConfig,
    KeypointMatcher,
    both_ways,
    combine,
    keypoint_config_of,
)
from imlscan.scanning.predict import Predictor
from imlscan.weights.store import load_model, read_metadata, rewrite_metadata

MIN_INLIERS = (5, 10, 20)
CORR = (0.7, 0.8, 0.9)
MIRROR = (False, True)
VERIFY = (False, True)
THRESHOLDS = np.round(np.arange(0.40, 0.701, 0.01), 2)


def prepare(weights: str, pairs: Path, size: int) -> list[dict]:
    """Per image: the network's map, the dense matcher's (zeros when the weights have none), the
    grey image, its one-way keypoint matches (direct and mirrored) and the mask, at ``size``."""
    predictor = Predictor(load_model(weights, device="cpu"), mode="resize", size=size, copy_move=False)
    settings = config_of(read_metadata(weights))
    dense = CopyMoveMatcher(settings) if settings is not None else None
    matcher = KeypointMatcher(KeypointConfig(mirror=True))
    rows = []
    for rgb, mask in calibration_images(pairs, size):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        rows.append(
            {
                "net": predictor.predict_prob(rgb),
                "dense": np.zeros(rgb.shape[:2], np.float32)
                if dense is None
                else dense.prob_map(predictor.to_tensor([rgb]), rgb.shape[:2]),
                "gray": gray,
                "searches": matcher.searches(gray),
                "mask": mask,
            }
        )
    return rows


def _detected(r: dict, matcher: KeypointMatcher | None) -> np.ndarray:
    """The copy-move detectors' map of a prepared image (the dense matcher's alone when off)."""
    if matcher is None:
        return r["dense"]
    return np.maximum(r["dense"], combine(_findings(r, matcher), matcher.config, r["gray"].shape))


def _findings(r: dict, matcher: KeypointMatcher) -> list[Finding]:
    searches = r["searches"] if matcher.config.mirror else r["searches"][:1]
    return matcher.findings(r["gray"], matcher.transforms(*both_ways(searches)))


def score(rows: list[dict], config: KeypointConfig | None) -> dict[str, float]:
    """Mean F1 at 0.5 over manipulated images and mean authentic pixel rate, keypoints on or off."""
    matcher = KeypointMatcher(config) if config is not None else None
    return score_maps((np.maximum(r["net"], _detected(r, matcher)), r["mask"]) for r in rows)


def _above(values: np.ndarray) -> np.ndarray:
    """How many of ``values`` exceed each threshold of ``THRESHOLDS`` (strictly, as ``eval``)."""
    return _above_sorted(np.sort(values))


def joint_scores(rows: list[dict], config: KeypointConfig | None) -> tuple[np.ndarray, np.ndarray]:
    """(mean F1, mean authentic pixel rate) at each network threshold of ``THRESHOLDS``, the
    detectors' maps flagging above 0.5."""
    matcher = KeypointMatcher(config) if config is not None else None
    return joint_scores_of(rows, [_detected(r, matcher) for r in rows])


def joint_scores_of(rows: list[dict], detected: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``joint_scores`` from each row's copy-move map.

    Why the sorted copies: the network's values in and out of the mask are counted above every
    threshold for each of dozens of settings; they are sorted once per image (kept in the row) and
    the few pixels the detectors flag are subtracted, which gives the same counts."""
    f1, authentic, n_manipulated, n_authentic = np.zeros(len(THRESHOLDS)), np.zeros(len(THRESHOLDS)), 0, 0
    for r, d in zip(rows, detected):
        found, mask, net = d > 0.5, r["mask"], r["net"]
        if "sorted_in" not in r:
            r["sorted_in"], r["sorted_out"] = np.sort(net[mask]), np.sort(net[~mask])
        fp = np.count_nonzero(found & ~mask) + _above_sorted(r["sorted_out"]) - _above(net[~mask & found])
        if mask.any():
            tp = np.count_nonzero(found & mask) + _above_sorted(r["sorted_in"]) - _above(net[mask & found])
            f1 += 2 * tp / (tp + fp + np.count_nonzero(mask))
            n_manipulated += 1
        else:
            authentic += fp / net.size
            n_authentic += 1
    return f1 / max(n_manipulated, 1), authentic / max(n_authentic, 1)


def _above_sorted(values: np.ndarray) -> np.ndarray:
    return values.size - np.searchsorted(values, THRESHOLDS, side="right")


def best_threshold(f1: np.ndarray, authentic: np.ndarray, max_authentic_fpr: float) -> int | None:
    """Index of the best F1 within the limit, the threshold nearest 0.5 among equals; None if none."""
    allowed = np.flatnonzero(authentic <= max_authentic_fpr)
    if not allowed.size:
        return None
    top = allowed[f1[allowed] >= f1[allowed].max() - 1e-12]
    return int(top[np.argmin(np.abs(THRESHOLDS[top] - 0.5))])


def grid() -> list[KeypointConfig]:
    """The settings scored: ``MIRROR`` x ``MIN_INLIERS`` x ``CORR`` x ``VERIFY``, the verification's
    own thresholds as fitted (``KeypointConfig``'s defaults)."""
    base = KeypointConfig()
    return [
        replace(base, min_inliers=n, corr=c, mirror=m, verify=v)
        for m in MIRROR
        for n in MIN_INLIERS
        for c in CORR
        for v in VERIFY
    ]


def select(rows: list[dict], max_authentic_fpr: float) -> tuple[dict | None, list[dict]]:
    """(the chosen setting or None, every setting's scores, keypoints off first)."""
    table = [{"config": None, **score(rows, None)}]
    table += [{"config": c.to_dict(), **score(rows, c)} for c in grid()]
    return choose(table, max_authentic_fpr), table


def select_joint(
    rows: list[dict], max_authentic_fpr: float, own: KeypointConfig | None
) -> tuple[dict | None, list[dict]]:
    """Like ``select``, over settings x network thresholds; the first row is the input as it is
    (``own`` settings at 0.5), and each setting is listed at its best threshold within the limit
    (at 0.5 when no threshold keeps it within, so the rule passes it by)."""
    half = int(np.flatnonzero(THRESHOLDS == 0.5)[0])
    f1, authentic = joint_scores(rows, own)
    table = [
        {"config": own.to_dict() if own else None, "threshold": 0.5, "f1": f1[half], "authentic_fpr": authentic[half]}
    ]
    for config, detected in _grid_maps(rows):
        f1, authentic = joint_scores_of(rows, detected)
        i = best_threshold(f1, authentic, max_authentic_fpr)
        if i is None:
            i = half
        row = {"config": config.to_dict() if config else None, "threshold": float(THRESHOLDS[i])}
        table.append({**row, "f1": float(f1[i]), "authentic_fpr": float(authentic[i])})
    return choose(table, max_authentic_fpr), table


def _grid_maps(rows: list[dict]) -> Iterator[tuple[KeypointConfig | None, list[np.ndarray]]]:
    """Keypoints off, then each setting of ``grid()`` with each row's map; the findings are
    computed once for the settings that differ only in their verification."""
    yield None, [r["dense"] for r in rows]
    cache: dict[KeypointConfig, list[list[Finding]]] = {}
    for config in grid():
        unverified = replace(config, verify=False)
        if unverified not in cache:
            matcher = KeypointMatcher(unverified)
            cache = {unverified: [_findings(r, matcher) for r in rows]}
        shape = rows[0]["gray"].shape if rows else (0, 0)
        yield config, [np.maximum(r["dense"], combine(f, config, shape)) for r, f in zip(rows, cache[unverified])]


def write_joint(weights: str, out: Path, pairs: Path, chosen: dict, table: list[dict], limit: float, n: tuple) -> None:
    """The input with its output bias moved to the chosen threshold and the chosen keypoint
    settings attached; reference scores recomputed with both."""
    previous = read_metadata(weights).get("calibration") or {}
    t = chosen["threshold"]
    calibration = Calibration(
        threshold=t,
        logit_offset=-logit(t),
        total_logit_offset=float(previous.get("total_logit_offset", 0.0)) - logit(t),
        max_authentic_fpr=limit,
        dataset=str(pairs),
        n_images=n[0] + n[1],
        n_manipulated=n[0],
        n_authentic=n[1],
        f1_before=round(float(table[0]["f1"]), 6),
        f1_after=round(float(chosen["f1"]), 6),
        authentic_fpr_before=round(float(table[0]["authentic_fpr"]), 6),
        authentic_fpr_after=round(float(chosen["authentic_fpr"]), 6),
    )
    shifted = out.with_name(out.stem + ".network.safetensors")
    apply(weights, shifted, calibration)
    record = {**calibration.to_dict(), "selection": "joint with copy_move_keypoints", "previous": previous}
    rewrite_metadata(shifted, shifted, {"calibration": record})
    note = {"selected_on": str(pairs), "selected_f1": round(chosen["f1"], 4), "input_f1": round(table[0]["f1"], 4)}
    config = KeypointConfig.from_dict(chosen["config"]) if chosen["config"] else None
    if config is None:
        raise SystemExit(
            "the joint choice switches the keypoint detector off: use imlscan weights copy-move --no-keypoints"
        )
    try:
        attach_keypoints(shifted, out, config, note=note, references=pairs)
    finally:
        shifted.unlink(missing_ok=True)


def _name(c: dict | None) -> str:
    if c is None:
        return "keypoints off"
    verify = " verified" if c.get("verify") else ""
    return f"mirror {c['mirror']!s:5s} inliers {c['min_inliers']:2d} corr {c['corr']}{verify}"


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--cache", type=Path, help="keep the prepared maps and matches here (a pickle), to re-score")
    ap.add_argument("--joint", action="store_true", help="choose the network's threshold with the settings")
    a = ap.parse_args(argv)
    if a.cache is not None and a.cache.exists():
        rows = pickle.loads(a.cache.read_bytes())
        if rows and "net" not in rows[0]:
            raise SystemExit(f"{a.cache}: a cache from before the network and dense maps were kept apart; delete it")
    else:
        rows = prepare(a.weights, a.pairs, a.size)
        if a.cache is not None:
            a.cache.write_bytes(pickle.dumps(rows))
    if a.joint:
        own = keypoint_config_of(read_metadata(a.weights))
        chosen, table = select_joint(rows, a.max_authentic_fpr, own)
        for s in table:
            name = ("as it is: " if s is table[0] else "") + _name(s["config"])
            print(f"{name:53s} at {s['threshold']:.2f}  F1 {s['f1']:.4f}  authentic {s['authentic_fpr']:.6f}")
    else:
        chosen, table = select(rows, a.max_authentic_fpr)
        for s in table:
            print(f"{_name(s['config']):34s} F1 {s['f1']:.4f}  authentic {s['authentic_fpr']:.6f}")
    print("chosen:", json.dumps(chosen))
    if chosen and a.out and a.joint:
        n_manipulated = sum(bool(r["mask"].any()) for r in rows)
        write_joint(
            a.weights, a.out, a.pairs, chosen, table, a.max_authentic_fpr, (n_manipulated, len(rows) - n_manipulated)
        )
        print(f"wrote {a.out}")
    elif chosen and a.out:
        note = {
            "selected_on": str(a.pairs),
            "selected_f1": round(chosen["f1"], 4),
            "keypoints_off_f1": round(table[0]["f1"], 4),
        }
        calibrated = bool(read_metadata(a.weights).get("calibration"))
        config = KeypointConfig.from_dict(chosen["config"])
        attach_keypoints(a.weights, a.out, config, note=note, references=a.pairs if calibrated else None)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
