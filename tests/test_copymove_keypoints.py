"""The keypoint copy-move detector: rotated, scaled and mirrored copies are found with their
sources; what repeats by nature (symmetry, periodic texture) is not; weights files switch it on."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from helpers import lookalike_copy, multiscale_photo, transformed_copy

from imlscan.calibrate import attach_copy_move, attach_keypoints
from imlscan.errors import UsageError
from imlscan.scanning.copymove import CopyMoveConfig, CopyMoveMatcher, matcher_for
from imlscan.scanning.copymove_keypoints import (
    KeypointConfig,
    KeypointMatcher,
    _ratio_matches,
    both_ways,
    keypoint_config_of,
    local_zncc,
    ransac_affine,
)

SIZE = 256


def _photo(seed: int = 0, size: int = SIZE) -> np.ndarray:
    return multiscale_photo(np.random.default_rng(seed), size)


def _forged(angle: float, scale: float, flip: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return transformed_copy(_photo(seed), angle, scale, flip)


@pytest.mark.parametrize("angle,scale,flip", [(25, 1.1, False), (-40, 0.85, False), (15, 1.0, True)])
def test_a_transformed_copy_is_flagged_with_its_source_and_little_else(angle, scale, flip):
    rgb, source, copy = _forged(angle, scale, flip)
    prob = KeypointMatcher(KeypointConfig(min_inliers=5)).prob_map(rgb)
    assert prob.shape == rgb.shape[:2] and prob.dtype == np.float32
    assert prob[copy].mean() > 0.8 and prob[source].mean() > 0.8
    assert prob[~(copy | source)].mean() < 0.01


def test_a_mirrored_copy_needs_the_mirror_search():
    rgb, source, copy = _forged(15, 1.0, True)
    assert KeypointMatcher(KeypointConfig(min_inliers=5, mirror=False)).prob_map(rgb).max() == 0.0
    assert KeypointMatcher(KeypointConfig(min_inliers=5, mirror=True)).prob_map(rgb)[copy].mean() > 0.8


def test_symmetric_and_periodic_images_are_not_flagged():
    """What repeats by nature is not a copy: a mirror-symmetric picture maps onto itself (its
    matches interleave, so no transform is kept), and a tiled one onto its shifted self (a
    transform is kept from the few unambiguous matches at the edge tiles, but its two sides
    overlap, so nothing is flagged)."""
    symmetric = _photo(1)
    symmetric[:, SIZE // 2 :] = symmetric[:, : SIZE // 2][:, ::-1]
    periodic = np.tile(_photo(2, 64), (4, 4, 1))
    matcher = KeypointMatcher(KeypointConfig(min_inliers=5))
    gray = cv2.cvtColor(symmetric, cv2.COLOR_RGB2GRAY)
    assert len(matcher.matches(gray)[0]) > 100
    assert matcher.transforms(*matcher.matches(gray)) == []
    gray = cv2.cvtColor(periodic, cv2.COLOR_RGB2GRAY)
    shifts = [t.matrix[:, 2] for t in matcher.transforms(*matcher.matches(gray))]
    assert shifts and all(np.isclose(np.abs(s).max(), 64, atol=1) for s in shifts)
    for rgb in (symmetric, periodic):
        assert matcher.prob_map(rgb).max() == 0.0


def test_a_photo_without_a_copy_gives_an_empty_map_at_the_asked_shape():
    prob = KeypointMatcher().prob_map(_photo(5), (100, 80))
    assert prob.shape == (100, 80) and prob.max() == 0.0
    two_squares = np.zeros((SIZE, SIZE, 3), np.uint8)  # a handful of keypoints, or none at all
    two_squares[40:60, 40:60] = two_squares[150:170, 150:170] = 255
    for rgb in (np.full((SIZE, SIZE, 3), 120, np.uint8), two_squares, _photo(6, 16)):
        assert KeypointMatcher(KeypointConfig(min_inliers=3)).prob_map(rgb).max() == 0.0


def test_ransac_recovers_a_transform_among_outliers_and_rejects_extreme_ones():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 200, (30, 2)).astype(np.float32)
    true = np.array([[0.9, -0.3, 120.0], [0.3, 0.9, 40.0]])
    b = (a @ true[:, :2].T + true[:, 2]).astype(np.float32)
    b[20:] = rng.uniform(0, 200, (10, 2))  # a third are wrong matches
    m, inl = ransac_affine(a, b, 2.0, np.random.default_rng(0))
    np.testing.assert_allclose(m, true, atol=1e-3)
    assert inl[:20].all() and not inl[20:].any()
    assert ransac_affine(a, a * 5.0, 2.0, np.random.default_rng(0)) is None  # scale 5: never a copy


def test_both_ways_gives_every_pair_once_in_each_direction():
    p, q = np.array([[1.0, 2.0]], np.float32), np.array([[30.0, 40.0]], np.float32)
    a, b = both_ways([(p, q), (q, p)])  # the copy found the source and the source the copy
    assert sorted(map(tuple, np.hstack([a, b]).tolist())) == [(1, 2, 30, 40), (30, 40, 1, 2)]


def test_local_zncc_is_one_for_an_affine_copy_and_zero_where_flat():
    a = _photo(3)[..., 0].astype(np.float32)
    z = local_zncc(a, 2.0 * a + 7.0, 7)
    assert np.allclose(z[10:-10, 10:-10], 1.0, atol=1e-3)
    flat = np.full_like(a, 50.0)
    assert local_zncc(flat, a, 7).max() == 0.0


def test_verification_keeps_the_exact_copy_and_drops_the_lookalike_on_either_test():
    """Both are found with verification off; the exact copy agrees with its source more closely
    (correlation about 0.96 against 0.87) and fits its transform more tightly (0.01 pixel against
    0.27), so each test alone, set between the two, drops the lookalike and keeps the copy."""
    exact, _, copy = _forged(25, 1.1, False)
    lookalike = lookalike_copy(_photo(), 25, 1.1)
    found = {}
    for name, rgb in (("exact", exact), ("lookalike", lookalike)):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        matcher = KeypointMatcher(KeypointConfig(min_inliers=5))
        (found[name],) = matcher.findings(gray, matcher.transforms(*matcher.matches(gray)))
    assert found["exact"].region_corr > 0.93 > found["lookalike"].region_corr
    assert found["exact"].fit_error < 0.1 < found["lookalike"].fit_error
    off = KeypointConfig(min_inliers=5)
    by_corr = KeypointConfig(min_inliers=5, verify=True, min_region_corr=0.93, max_fit_error=5.0)
    by_fit = KeypointConfig(min_inliers=5, verify=True, min_region_corr=-1.0, max_fit_error=0.1)
    for config in (off, by_corr, by_fit):
        assert KeypointMatcher(config).prob_map(exact)[copy].mean() > 0.8
        flagged = KeypointMatcher(config).prob_map(lookalike)[copy].mean()
        assert flagged > 0.5 if config is off else flagged == 0.0


def test_fit_error_is_the_median_distance_of_the_inliers_from_the_transform():
    from imlscan.scanning.copymove_keypoints import Transform

    m = np.array([[0.0, -1.0, 100.0], [1.0, 0.0, 5.0]])  # a quarter turn and a shift
    src = np.array([[0, 0], [10, 0], [0, 10], [20, 20], [5, 5]], np.float64)
    dst = src @ m[:, :2].T + m[:, 2] + np.array([[0, 0.0], [0.3, 0.4], [1.0, 0], [0, 2.0], [0, 3.0]])
    assert Transform(m, 5, src, dst).fit_error() == pytest.approx(1.0)


def test_config_round_trips_and_rejects_bad_values():
    cfg = KeypointConfig(min_inliers=20, corr=0.9, mirror=False)
    assert KeypointConfig.from_dict({**cfg.to_dict(), "selected_on": "calib"}) == cfg
    assert KeypointConfig.from_dict({"mirror": "false"}).mirror is False
    assert KeypointConfig.from_dict({"mirror": "on", "min_inliers": "12"}) == KeypointConfig(min_inliers=12)
    assert KeypointConfig.from_dict({"min_inliers": 5}).verify is False  # entries written before verify existed
    assert keypoint_config_of({"copy_move_keypoints": cfg.to_dict()}) == cfg
    assert keypoint_config_of({"copy_move": {}}) is None
    for bad in (
        {"ratio": 1.0},
        {"min_inliers": 2},
        {"window": 4},
        {"corr": 1.0},
        {"min_shift": -1},
        {"corr": "x"},
        {"mirror": "maybe"},
        {"min_region_corr": 1.5},
        {"max_fit_error": 0},
    ):
        with pytest.raises(UsageError):
            KeypointConfig.from_dict(bad)


def test_weights_files_switch_the_detector_on_and_reports_record_it(tiny_weights, tmp_path):
    from safetensors.torch import load_file

    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model, read_metadata

    with pytest.raises(UsageError):  # the keypoint map is fused only with the dense matcher on
        attach_keypoints(tiny_weights, tmp_path / "kp.safetensors", KeypointConfig())
    dense = attach_copy_move(tiny_weights, tmp_path / "cm.safetensors", CopyMoveConfig(size=SIZE))
    both = attach_keypoints(
        dense, tmp_path / "kp.safetensors", KeypointConfig(min_inliers=5), note={"selected_on": "x"}
    )
    before, after = load_file(str(tiny_weights)), load_file(str(both))
    assert all(torch.equal(before[k], after[k]) for k in before)
    meta = read_metadata(both)
    assert meta["copy_move_keypoints"]["selected_on"] == "x" and meta["copy_move"]["size"] == SIZE

    assert matcher_for(load_model(dense, "cpu").weights_info, None).keypoints is None
    forced = matcher_for(load_model(tiny_weights, "cpu").weights_info, True)
    assert forced.keypoints is not None and forced.keypoints.config == KeypointConfig()

    rgb, source, copy = _forged(25, 1.1, False)
    rgb = cv2.resize(rgb, (300, 280), interpolation=cv2.INTER_LINEAR)
    on = Predictor(load_model(both, "cpu"), mode="resize", size=64)
    without = Predictor(load_model(dense, "cpu"), mode="resize", size=64)
    assert on.describe(rgb.shape)["copy_move"]["keypoints"]["min_inliers"] == 5
    assert "keypoints" not in without.describe(rgb.shape)["copy_move"]  # old records keep their key
    ((fused, cm),) = on.predict_parts([rgb])
    ((fused0, cm0),) = without.predict_parts([rgb])
    small = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    kp = KeypointMatcher(KeypointConfig(min_inliers=5)).prob_map(small, (64, 64))
    expected = cv2.resize(np.maximum(cv2.resize(fused0, (64, 64), interpolation=cv2.INTER_LINEAR), kp), (300, 280))
    assert np.all(fused >= fused0 - 1e-6) and np.all(cm >= cm0 - 1e-6)
    big = cv2.resize(copy.astype(np.uint8), (300, 280), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert cm[big].mean() > 0.7 and cm[big].mean() > cm0[big].mean() + 0.3
    assert np.abs(fused - expected).mean() < 0.02


def test_the_map_is_the_same_every_time():
    rgb, _, _ = _forged(-40, 0.85, False)
    matcher = KeypointMatcher(KeypointConfig(min_inliers=5))
    first = matcher.prob_map(rgb)
    assert first.max() > 0.9
    np.testing.assert_array_equal(first, KeypointMatcher(KeypointConfig(min_inliers=5)).prob_map(rgb))


def test_the_dense_matcher_alone_keeps_its_old_settings_record():
    assert CopyMoveMatcher(CopyMoveConfig()).settings() == CopyMoveConfig().to_dict()
    assert CopyMoveMatcher(CopyMoveConfig(), KeypointConfig()).settings()["keypoints"] == KeypointConfig().to_dict()


def test_pixels_a_transform_barely_moves_are_never_compared():
    """Near a rotation's centre a pixel is compared with its own neighbourhood, which always
    correlates: those pixels (moved less than min_shift) are left out."""
    from imlscan.scanning.copymove_keypoints import _far

    shift = np.array([[1.0, 0.0, 30.0], [0.0, 1.0, 0.0]])
    assert _far(shift, 50, 60, 24.0).all() and not _far(shift, 50, 60, 31.0).any()
    quarter = cv2.getRotationMatrix2D((100, 100), 90, 1.0)  # moves a pixel r from the centre by r * sqrt(2)
    far = _far(quarter, 200, 200, 24.0)
    ys, xs = np.mgrid[0:200, 0:200]
    r = np.hypot(xs - 100, ys - 100)
    assert not far[r < 16.5].any() and far[r > 17.5].all()


def test_the_map_follows_how_well_the_copy_correlates_and_never_dips_below_the_floor():
    from imlscan.scanning.copymove_keypoints import FLOOR

    rgb, source, copy = _forged(25, 1.1, False)
    degraded = rgb.copy()  # the copy JPEG-compressed at quality 70: still found, correlating less
    degraded[copy] = cv2.imdecode(cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], 1)[copy]
    matcher = KeypointMatcher(KeypointConfig(min_inliers=5))
    clean_map, degraded_map = matcher.prob_map(rgb), matcher.prob_map(degraded)
    for m in (clean_map, degraded_map):
        assert m[m > 0].min() >= FLOOR and m[copy].mean() > 0.6
    assert degraded_map[copy].mean() < clean_map[copy].mean() - 0.04


def _weights_with_keypoints(tiny_weights, tmp_path):
    dense = attach_copy_move(tiny_weights, tmp_path / "cm.safetensors", CopyMoveConfig(size=SIZE))
    return attach_keypoints(dense, tmp_path / "kp.safetensors", KeypointConfig(min_inliers=5))


def test_a_map_computed_ahead_is_the_one_the_predictor_fuses(tiny_weights, tmp_path):
    from imlscan.scanning.copymove_keypoints import map_ahead
    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model

    pred = Predictor(load_model(_weights_with_keypoints(tiny_weights, tmp_path), "cpu"), mode="resize", size=64)
    rgb, _, copy = _forged(25, 1.1, False)
    rgb = cv2.resize(rgb, (300, 280), interpolation=cv2.INTER_LINEAR)
    assert pred.keypoint_job() is None  # on a CPU the main process detects (workers take its cores)
    pred.keypoints_in_workers = True
    job = pred.keypoint_job()
    ahead = map_ahead(job, rgb)
    assert ahead.shape == (SIZE, SIZE) and ahead.max() > 0.9
    ((fused, cm),) = pred.predict_parts([rgb])
    ((fused2, cm2),) = pred.predict_parts([rgb], [ahead])
    np.testing.assert_array_equal(fused, fused2)  # the same map, computed here or in a worker
    np.testing.assert_array_equal(cm, cm2)
    ((_, cm_blank),) = pred.predict_parts([rgb], [np.zeros_like(ahead)])  # and it is really used
    big = cv2.resize(copy.astype(np.uint8), (300, 280), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert cm_blank[big].mean() < cm[big].mean() - 0.3
    assert map_ahead(None, rgb) is None and map_ahead(job, np.zeros((5, 5), np.float64)) is None
    assert Predictor(load_model(tiny_weights, "cpu"), mode="resize", size=64).keypoint_job() is None


def test_batch_and_eval_workers_give_the_maps_of_the_main_process(tiny_weights, tmp_path, monkeypatch):
    """Spawned decoding workers compute the keypoint maps; the outputs equal those of a run that
    decodes and detects in the main process, byte for byte."""
    from imlscan.data.datasets import load_dataset
    from imlscan.eval.evaluate import EvalOptions, evaluate_dataset
    from imlscan.scanning.batch import BatchOptions, run_batch
    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model

    folder = tmp_path / "imgs"
    folder.mkdir()
    pairs = []
    for i, (angle, scale, flip) in enumerate([(25, 1.1, False), (15, 1.0, True), (-40, 0.85, False)]):
        rgb, _, copy = _forged(angle, scale, flip, seed=i)
        cv2.imwrite(str(folder / f"f{i}.png"), rgb[..., ::-1])
        cv2.imwrite(str(folder / f"f{i}_gt.png"), copy.astype(np.uint8) * 255)
        pairs.append([f"f{i}.png", f"f{i}_gt.png"])
    (folder / "pairs.json").write_text(json.dumps(pairs))
    model = load_model(_weights_with_keypoints(tiny_weights, tmp_path), "cpu")
    pred = Predictor(model, mode="resize", size=64)
    pred.keypoints_in_workers = True  # as on a GPU
    maps = {}
    real_map = KeypointMatcher.prob_map

    def main_process_must_not_detect(self, *args, **kwargs):
        raise AssertionError("the main process ran the keypoint detector")

    for workers in (0, 2):
        monkeypatch.setattr(KeypointMatcher, "prob_map", main_process_must_not_detect if workers else real_map)
        out = tmp_path / f"batch{workers}"
        opts = BatchOptions(out_dir=out, globs=["f?.png"], workers=workers, batch_size=2, overlay=False, prob=True)
        run_batch(folder, pred, opts)
        maps[workers] = sorted((p.name, p.read_bytes()) for p in out.rglob("*.prob.png"))
    assert len(maps[0]) == 3 and maps[0] == maps[2]
    rows = {}
    for workers in (0, 2):
        monkeypatch.setattr(KeypointMatcher, "prob_map", main_process_must_not_detect if workers else real_map)
        _, settings = evaluate_dataset(
            load_dataset(folder / "pairs.json"), pred, EvalOptions(workers=workers, bootstrap=0)
        )
        rows[workers] = [(r["pixel_f1"], r["pixel_auc"]) for r in settings[0].acc.rows]
    assert rows[0] == rows[2] and max(auc for _, auc in rows[0]) > 0.9  # the detector saw the copies


def test_runs_switch_the_keypoint_detector_apart_from_the_dense_matcher(tiny_weights, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from imlscan.cli import app
    from imlscan.weights.store import load_model

    both = _weights_with_keypoints(tiny_weights, tmp_path)
    dense_only = tmp_path / "cm.safetensors"  # written beside it by the helper
    info = load_model(both, "cpu").weights_info
    assert matcher_for(info, None).keypoints.config == KeypointConfig(min_inliers=5)
    assert matcher_for(info, None, keypoints=False).keypoints is None
    assert matcher_for(info, None, keypoints=False).config == CopyMoveConfig(size=SIZE)  # the dense matcher stays
    dense_info = load_model(dense_only, "cpu").weights_info
    assert matcher_for(dense_info, None).keypoints is None
    assert matcher_for(dense_info, None, keypoints=True).keypoints.config == KeypointConfig()
    with pytest.raises(UsageError, match="--keypoints needs the copy-move fusion"):
        matcher_for(info, False, keypoints=True)
    with pytest.raises(UsageError, match="off in these weights"):
        matcher_for(load_model(tiny_weights, "cpu").weights_info, None, keypoints=True)

    runner = CliRunner()
    rgb, _, _ = _forged(25, 1.1, False)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    records = {}
    for flag in ("--keypoints", "--no-keypoints"):
        res = runner.invoke(
            app, ["scan", str(tmp_path / "p.png"), "-w", str(both), "--out", str(tmp_path / flag), "--json", flag]
        )
        assert res.exit_code == 0, res.output
        records[flag] = json.loads(res.stdout)["preprocessing"]["copy_move"]
    assert records["--keypoints"]["keypoints"]["min_inliers"] == 5 and "keypoints" not in records["--no-keypoints"]
    res = runner.invoke(app, ["scan", str(tmp_path / "p.png"), "-w", str(both), "--no-copy-move", "--keypoints"])
    assert (
        res.exit_code == 2 and "--keypoints needs the copy-move fusion" in res.output and "Traceback" not in res.output
    )
    batch = ["batch", str(tmp_path), "--glob", "p.png", "--out", str(tmp_path / "b"), "-w", str(both)]
    res = runner.invoke(app, batch)
    assert res.exit_code == 0 and "--no-keypoints skips the detector" in res.output
    res = runner.invoke(app, batch)  # all done already: no model runs, so no cost note
    assert res.exit_code == 0 and "1 already done" in res.output and "note:" not in res.output


def _ratio_matches_by_brute_force(kp, desc, kp2, desc2, ratio, min_shift):
    """The search as defined: every pair's distance, too-close pairs excluded, then the ratio test."""
    d = np.sqrt(((desc[:, None, :].astype(np.float64) - desc2[None, :, :]) ** 2).sum(-1))
    d[np.sqrt(((kp[:, None, :] - kp2[None, :, :]) ** 2).sum(-1)) < max(min_shift, 1.0)] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :2]
    d0, d1 = np.take_along_axis(d, order, 1).T
    keep = d0 < ratio * d1
    return kp[keep], kp2[order[keep, 0]]


def _sift_like(rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
    """Descriptors as SIFT gives them: whole numbers from 0 to 255, as float32."""
    return np.clip(np.round(rows), 0, 255).astype(np.float32)


def test_the_blocked_search_finds_what_the_full_search_finds():
    """Clusters of ten near-identical descriptors within ``min_shift`` make every nearest
    descriptor a too-close one, several times over, so only repeated minima find each cluster's
    one far copy; ties at the nearest (exact duplicates far apart) must fail the ratio test; the
    search of the image against itself skips each keypoint itself."""
    rng = np.random.default_rng(3)
    centres = np.stack([np.arange(40) % 8 * 60 + 20, np.arange(40) // 8 * 90 + 20], 1).astype(np.float32)
    base = rng.uniform(0, 100, (40, 128))
    kp = np.concatenate([c + rng.uniform(-5, 5, (10, 2)) for c in centres]).astype(np.float32)
    desc = _sift_like(rng, np.repeat(base, 10, axis=0) + rng.normal(0, 0.6, (400, 128)))
    copies = centres[:6] + np.float32([30, 45])  # far from every cluster
    twins = centres[6:9] + np.float32([30, 45])  # two exact duplicates, and a probe near both
    twin = rng.uniform(100, 200, 128)
    kp = np.concatenate([kp, copies, twins]).astype(np.float32)
    desc = np.concatenate(
        [desc, _sift_like(rng, base[:6] + rng.normal(0, 1.0, (6, 128))), _sift_like(rng, [twin, twin, twin + 3])]
    )
    kp2, desc2 = kp[::-1].copy() + np.float32(0.25), desc[::-1].copy()
    for b, db in ((kp, desc), (kp2, desc2)):
        got = _ratio_matches(kp, desc, b, db, 0.6, 24.0)
        want = _ratio_matches_by_brute_force(kp, desc, b, db, 0.6, 24.0)
        assert len(want[0]) >= 60  # each of six clusters with its copy, both ways
        assert not any((p == kp[-1]).all() for p in want[0])  # the probe's two nearest tie: no match
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_a_search_with_at_most_one_far_descriptor_keeps_the_matches_of_the_full_search():
    """Where every other keypoint is within ``min_shift`` but one, the next nearest is infinitely
    far and the ratio test passes; where none is far enough, nothing is matched."""
    rng = np.random.default_rng(4)
    kp = np.float32([[10, 10], [15, 12], [12, 18], [200, 200]])
    desc = _sift_like(rng, rng.uniform(0, 200, (4, 128)))
    for min_shift in (24.0, 400.0):
        got = _ratio_matches(kp, desc, kp, desc, 0.6, min_shift)
        want = _ratio_matches_by_brute_force(kp, desc, kp, desc, 0.6, min_shift)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    a, b = _ratio_matches(kp, desc, kp, desc, 0.6, 24.0)
    np.testing.assert_array_equal(a[:3], kp[:3])  # the three close ones: one far keypoint each
    assert (b[:3] == kp[3]).all()
    assert len(_ratio_matches(kp, desc, kp, desc, 0.6, 400.0)[0]) == 0


def test_the_keypoint_detector_goes_to_the_workers_on_a_gpu_only_unless_told(tiny_weights, tmp_path):
    """On a CPU the workers would compete with the main process for its cores (measured slower);
    on a GPU the main process is free while they detect."""
    import torch

    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model

    pred = Predictor(load_model(_weights_with_keypoints(tiny_weights, tmp_path), "cpu"), mode="resize", size=64)
    assert pred.keypoint_job() is None
    pred.device = torch.device("cuda")  # the rule reads only the device's type
    assert pred.keypoint_job() is not None
    pred.keypoints_in_workers = False
    assert pred.keypoint_job() is None
    pred.device, pred.keypoints_in_workers = torch.device("cpu"), True
    assert pred.keypoint_job() is not None
