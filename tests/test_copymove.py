"""The copy-move matcher: what its evidence measures, that the fusion only adds the matcher's
regions, and that weights files switch it on and off."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imlscan.calibrate import attach_copy_move
from imlscan.errors import ImlscanError, UsageError
from imlscan.scanning.copymove import CopyMoveConfig, CopyMoveMatcher, agreement_evidence, config_of
from imlscan.scanning.copymove_keypoints import KeypointConfig

SIZE = 128


def _photo(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """Smooth-ish random texture (blurred noise), like a photo's detail, as uint8 RGB."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.normal(128, 60, (size, size, 3)).astype(np.float32), (0, 0), 1.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def _normalized(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(rgb).permute(2, 0, 1).float()[None] / 255
    return (x - 0.45) / 0.225


def _copy_moved(dy: int, dx: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 48x48 block pasted (dy, dx) away from its source; the mask marks source and copy."""
    rgb = _photo(seed)
    rgb[8 + dy : 56 + dy, 8 + dx : 56 + dx] = rgb[8:56, 8:56].copy()
    mask = np.zeros(rgb.shape[:2], bool)
    mask[8:56, 8:56] = mask[8 + dy : 56 + dy, 8 + dx : 56 + dx] = True
    return rgb, mask


@pytest.mark.parametrize("shift", [(64, 66), (66, 60)])
def test_a_copied_block_is_found_with_its_source_at_any_even_offset(shift):
    rgb, mask = _copy_moved(*shift)
    matcher = CopyMoveMatcher(CopyMoveConfig(size=SIZE))
    zncc, offsets = matcher.best_matches(_normalized(rgb))
    assert zncc.shape == (16, 16) and offsets.shape == (16, 16, 2)
    # a cell whose 16x16 patch lies inside the copy matches its source (ZNCC 1 but for the
    # descriptors' small regularizer) at exactly the shift
    assert zncc[11, 11] > 0.97 and tuple(offsets[11, 11].tolist()) == (-shift[0], -shift[1])
    assert zncc[4, 4] > 0.97 and tuple(offsets[4, 4].tolist()) == shift
    prob = matcher.prob_map(_normalized(rgb), rgb.shape[:2])
    assert prob.shape == rgb.shape[:2] and prob.dtype == np.float32
    centres = [(32, 32), (32 + shift[0], 32 + shift[1])]
    assert all(prob[c] > 0.3 for c in centres)  # both the source and the copy
    assert prob[~cv2.dilate(mask.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)].max() == 0.0


def test_texture_without_a_copy_matches_somewhere_but_the_offsets_disagree():
    rgb = _photo(3)
    matcher = CopyMoveMatcher(CopyMoveConfig(size=SIZE))
    zncc, offsets = matcher.best_matches(_normalized(rgb))
    assert zncc.max() > 0.3  # every patch has some best match ...
    assert matcher.evidence(zncc, offsets).max() < 0.35  # ... which its neighbours do not share
    assert matcher.prob_map(_normalized(rgb), rgb.shape[:2]).max() == 0.0


def test_agreement_counts_neighbours_within_the_tolerance_and_nothing_outside_the_grid():
    offsets = torch.zeros(5, 5, 2, dtype=torch.int64)
    offsets[..., 1] = 40
    offsets[2, 3] = torch.tensor([3, 40])  # one neighbour 3 px off: outside tolerance 2
    zncc = torch.ones(5, 5)
    ev = agreement_evidence(zncc, offsets, radius=1, tolerance=2)
    assert ev[0, 0] == pytest.approx(3 / 8)  # a corner has 3 neighbours, all agreeing
    assert ev[2, 2] == pytest.approx(7 / 8)  # the centre: all but the 3-px-off one
    assert agreement_evidence(zncc, offsets, radius=1, tolerance=3)[2, 2] == pytest.approx(1.0)
    assert agreement_evidence(0.5 * zncc, offsets, radius=1, tolerance=3)[2, 2] == pytest.approx(0.5)


def test_config_round_trips_ignores_notes_and_rejects_bad_values():
    cfg = CopyMoveConfig(radius=1, threshold=0.4)
    assert CopyMoveConfig.from_dict({**cfg.to_dict(), "selected_on": "calib/pairs.json"}) == cfg
    assert config_of({"copy_move": cfg.to_dict()}) == cfg
    assert config_of({}) is None and config_of(None) is None
    for bad in ({"threshold": 1.0}, {"key_stride": 3}, {"size": 100}, {"radius": 0}, {"threshold": "high"}):
        with pytest.raises(UsageError):
            CopyMoveConfig.from_dict(bad)


def test_attach_keeps_the_tensors_bit_for_bit_and_records_the_settings(tiny_weights, tmp_path):
    from safetensors.torch import load_file

    from imlscan.weights.store import load_model, read_metadata, verify_weights

    out = tmp_path / "cm.safetensors"
    attach_copy_move(tiny_weights, out, CopyMoveConfig(size=64, threshold=0.5), note={"selected_on": "x"})
    before, after = load_file(str(tiny_weights)), load_file(str(out))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    meta = read_metadata(out)
    assert meta["copy_move"]["threshold"] == 0.5 and meta["copy_move"]["selected_on"] == "x"
    assert meta["tensors_sha256"] == read_metadata(tiny_weights)["tensors_sha256"]
    assert meta["name"] == "cm" and read_metadata(tiny_weights)["name"] == "tiny-test"
    verify_weights(out)
    assert config_of(load_model(out, "cpu").weights_info.metadata) == CopyMoveConfig(size=64, threshold=0.5)
    with pytest.raises(UsageError):
        attach_copy_move(out, out, CopyMoveConfig())


def test_the_predictor_fuses_as_the_file_says_and_the_caller_can_override(tiny_weights, tmp_path):
    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model

    out = tmp_path / "cm.safetensors"
    attach_copy_move(tiny_weights, out, CopyMoveConfig(size=SIZE, radius=1, threshold=0.5))
    rgb, mask = _copy_moved(64, 66)
    rgb = cv2.resize(rgb, (160, 144), interpolation=cv2.INTER_LINEAR)  # not the model's size
    model = load_model(out, "cpu")
    off = Predictor(model, mode="resize", size=64, copy_move=False)
    on = Predictor(model, mode="resize", size=64)  # the file switches it on
    assert off.copy_move is None and on.copy_move is not None
    assert on.describe(rgb.shape)["copy_move"]["threshold"] == 0.5 and off.describe(rgb.shape)["copy_move"] is None
    p_off, p_on = off.predict_prob(rgb), on.predict_prob(rgb)
    assert p_on.shape == p_off.shape == rgb.shape[:2]
    assert np.all(p_on >= p_off - 1e-6)  # the fusion only adds
    small = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    cm = on.copy_move.prob_map(on.to_tensor([small]), (64, 64))
    expected = cv2.resize(
        np.maximum(off._probs([off.model_input(rgb)])[0], cm), (160, 144), interpolation=cv2.INTER_LINEAR
    )
    np.testing.assert_allclose(p_on, expected, atol=1e-5)
    big = cv2.resize(mask.astype(np.uint8), (160, 144), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert p_on[big].mean() > p_off[big].mean() + 0.1
    plain = Predictor(load_model(tiny_weights, "cpu"), mode="resize", size=64)
    assert plain.copy_move is None
    forced = Predictor(load_model(tiny_weights, "cpu"), mode="resize", size=64, copy_move=True)
    assert forced.copy_move.config == CopyMoveConfig()


def test_native_and_tiled_maps_are_fused_at_full_resolution(tiny_weights, tmp_path):
    from imlscan.scanning.predict import Predictor
    from imlscan.weights.store import load_model

    out = tmp_path / "cm.safetensors"
    attach_copy_move(tiny_weights, out, CopyMoveConfig(size=SIZE, radius=1, threshold=0.5))
    rgb, mask = _copy_moved(64, 66)
    rgb = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST).astype(bool)
    model = load_model(out, "cpu")
    for tile in (None, 128):
        on = Predictor(model, mode="native", tile=tile, overlap=32)
        off = Predictor(model, mode="native", tile=tile, overlap=32, copy_move=False)
        p_on, p_off = on.predict_prob(rgb), off.predict_prob(rgb)
        assert p_on.shape == (256, 256) and np.all(p_on >= p_off - 1e-6)
        assert p_on[mask].mean() > p_off[mask].mean() + 0.1


def test_batch_resume_key_changes_only_when_the_fusion_is_on(tiny_weights, tmp_path):
    from imlscan.scanning.batch import settings_key
    from imlscan.scanning.predict import Predictor
    from imlscan.scanning.result import SCORE_VERSION
    from imlscan.weights.store import load_model

    model = load_model(tiny_weights, "cpu")
    pred = Predictor(model, copy_move=False, traces=())
    plain = settings_key(pred, 0.5)
    assert settings_key(Predictor(model, traces=()), 0.5) == plain
    assert settings_key(Predictor(model, copy_move=True, traces=()), 0.5) != plain
    # without the fusion the key has no copy-move entry; it names the score's version, so records
    # written with the earlier score (keys without it) are scanned again on resume
    older = {
        "schema": "imlscan.batch/1",
        "weights": model.weights_info.sha256,
        "mode": "resize",
        "size": 512,
        "tile": None,
        "mean": pred.mean,
        "std": pred.std,
        "precision": "fp32",
        "threshold": 0.5,
    }
    assert plain != hashlib.sha256(json.dumps(older, sort_keys=True).encode()).hexdigest()[:16]
    current = older | {"score_version": SCORE_VERSION}
    assert plain == hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:16]


def test_cli_switches_the_fusion_on_in_a_copy_and_scans_follow_it_unless_told_otherwise(
    tmp_path, tiny_model, monkeypatch
):
    from PIL import Image
    from typer.testing import CliRunner

    from imlscan.cli import app
    from imlscan.scanning.copymove_keypoints import keypoint_config_of
    from imlscan.weights.store import read_metadata, resolve_weights, save_weights

    runner = CliRunner()
    with torch.no_grad():
        tiny_model.head.classifier.bias.fill_(-20.0)  # the network alone flags nothing
    src = tmp_path / "w.safetensors"
    save_weights(tiny_model, src, name="tiny-test", variant="sparsevit-test")
    out = tmp_path / "cm.safetensors"
    args = ["weights", "copy-move", str(src), "--out", str(out), "--size", "128", "--radius", "1", "--threshold", "0.5"]
    res = runner.invoke(app, [*args, "--no-keypoints", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {**CopyMoveConfig(size=128, radius=1, threshold=0.5).to_dict(), "keypoints": None}
    assert read_metadata(out)["copy_move_keypoints"] is None
    res = runner.invoke(app, [*args, "--json"])  # the keypoint detector is on by default, as shipped
    assert res.exit_code == 0, res.output
    shipped = keypoint_config_of(read_metadata(resolve_weights(None)))
    assert shipped is not None and shipped.verify
    verifying = KeypointConfig(min_inliers=shipped.min_inliers, corr=shipped.corr, verify=True).to_dict()
    assert verifying == shipped.to_dict()
    assert json.loads(res.stdout)["keypoints"] == verifying
    assert read_metadata(out)["copy_move"]["radius"] == 1
    assert read_metadata(out)["copy_move_keypoints"] == verifying
    res = runner.invoke(app, [*args, "--kp-no-verify", "--json"])
    assert res.exit_code == 0 and read_metadata(out)["copy_move_keypoints"] == {**verifying, "verify": False}
    res = runner.invoke(app, [*args, "--references", str(tmp_path / "pairs.json")])
    assert res.exit_code != 0 and "not calibrated" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["weights", "copy-move", str(src), "--out", str(out), "--key-stride", "3"])
    assert res.exit_code != 0 and "key_stride" in res.output and "Traceback" not in res.output

    rgb, _ = _copy_moved(64, 66)
    img = tmp_path / "photo.png"
    Image.fromarray(rgb).save(img)
    fractions = {}
    for flag in ("--copy-move", "--no-copy-move"):
        res = runner.invoke(app, ["scan", str(img), "--out", str(tmp_path / flag), "-w", str(out), "--json", flag])
        assert res.exit_code == 0, res.output
        report = json.loads(res.stdout)
        fractions[flag] = report["mask_fraction"]
        assert (report["preprocessing"]["copy_move"] is None) == (flag == "--no-copy-move")
    assert fractions["--no-copy-move"] == 0.0 and fractions["--copy-move"] > 0.05
    # the network flags nothing, so every region is the matcher's: the copy and its source, each whole
    regions = json.loads((tmp_path / "--copy-move" / "photo.json").read_text())["regions"]
    assert len(regions) == 2 and all(r["copy_move_share"] == 1.0 for r in regions)
    centres = sorted(
        (r["bbox"]["y"] + r["bbox"]["height"] // 2, r["bbox"]["x"] + r["bbox"]["width"] // 2) for r in regions
    )
    assert abs(centres[0][0] - 32) <= 8 and abs(centres[1][0] - 96) <= 8  # source at 8-56, copy at 72-120
    html = runner.invoke(app, ["scan", str(img), "--out", str(tmp_path / "h"), "-w", str(out), "--html"])
    assert html.exit_code == 0 and "<th>copy-move detectors</th>" in (tmp_path / "h" / "photo.html").read_text()
    import imlscan.scanning.copymove as cm

    for fast, cost in ((True, "0.6 s"), (False, "1 s")):  # the cost note follows the matcher's prefilter
        monkeypatch.setattr(cm, "bf16_prefilter_ok", lambda fast=fast: fast)
        res = runner.invoke(
            app, ["batch", str(tmp_path), "--glob", "photo.png", "--out", str(tmp_path / f"b{fast}"), "-w", str(out)]
        )
        assert res.exit_code == 0, res.output
        assert f"matcher and keypoint detector add about {cost}" in res.output  # the note names both
    record = json.loads((tmp_path / "bFalse" / "results.jsonl").read_text().splitlines()[0])
    assert [r["copy_move_share"] for r in record["regions"]] == [1.0, 1.0]


def test_eval_measures_the_fused_map_and_records_the_settings(tmp_path, tiny_model):
    from PIL import Image
    from typer.testing import CliRunner

    from imlscan.cli import app
    from imlscan.weights.store import save_weights

    with torch.no_grad():
        tiny_model.head.classifier.bias.fill_(-20.0)
    src = tmp_path / "w.safetensors"
    save_weights(tiny_model, src, name="tiny-test", variant="sparsevit-test")
    out = tmp_path / "cm.safetensors"
    attach_copy_move(src, out, CopyMoveConfig(size=128, radius=1, threshold=0.5))
    rgb, mask = _copy_moved(64, 66)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "c_gt.png")
    (tmp_path / "pairs.json").write_text(json.dumps([["c.png", "c_gt.png"]]))
    reports = {}
    for flag in ("--copy-move", "--no-copy-move"):
        args = ["eval", str(tmp_path / "pairs.json"), "-w", str(out), "--out", str(tmp_path / flag), "--json"]
        res = CliRunner().invoke(app, [*args, "--workers", "0", "--bootstrap", "0", flag])
        assert res.exit_code == 0, res.output
        reports[flag] = json.loads(res.stdout)
    assert reports["--copy-move"]["copy_move"]["radius"] == 1 and reports["--no-copy-move"]["copy_move"] is None
    assert reports["--no-copy-move"]["metrics"]["pixel_f1"] == 0.0
    assert reports["--copy-move"]["metrics"]["pixel_f1"] > 0.3  # the copy and its source, both marked


def test_attach_recomputes_the_reference_scores_and_checks_the_set_before_writing(tiny_weights, tmp_path):
    from PIL import Image

    from imlscan.weights.store import read_metadata, rewrite_metadata

    calibrated = tmp_path / "cal.safetensors"
    rewrite_metadata(tiny_weights, calibrated, {"calibration": {"threshold": 0.4, "authentic_scores": [-1.0]}})
    out = tmp_path / "cm.safetensors"
    with pytest.raises(ImlscanError):  # no such set: nothing written
        attach_copy_move(calibrated, out, CopyMoveConfig(size=64), references=tmp_path / "missing.json")
    assert not out.exists()
    rgb, _ = _copy_moved(64, 66)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    (tmp_path / "pairs.json").write_text(json.dumps([["a.png", "Negative"]]))
    attach_copy_move(
        calibrated, out, CopyMoveConfig(size=128, radius=1, threshold=0.5), references=tmp_path / "pairs.json"
    )
    cal = read_metadata(out)["calibration"]
    assert cal["threshold"] == 0.4 and len(cal["authentic_scores"]) == 1 and 0.0 <= cal["authentic_scores"][0] <= 1.0


def test_the_cpu_block_search_gives_the_row_search_exactly_ties_and_exclusions_included(monkeypatch):
    """The CPU path searches cache-sized blocks; it must pick the same value and the same key,
    the first one on ties, as the whole-row search the GPU uses (and v19 was selected with)."""
    import imlscan.scanning.copymove as cm

    g = torch.Generator().manual_seed(0)
    keys = torch.randint(-3, 4, (50, 8), generator=g).float()  # small integers: every product exact
    keys[3] = 3.0  # the largest product any query can reach, for a query equal to it ...
    keys[31] = keys[3]  # ... tied in another block ...
    keys[4] = keys[3]  # ... and within the same one
    q = torch.cat([keys[[3, 10, 20]], torch.randint(-3, 4, (9, 8), generator=g).float()])
    near = torch.randint(0, 50, (12, 6), generator=g)
    near[1, 0] = 10  # a query's own best match is excluded
    monkeypatch.setattr(cm, "CPU_QUERY_CHUNK", 5)
    monkeypatch.setattr(cm, "CPU_KEY_CHUNK", 7)  # blocks that do not divide the 50 keys
    rows, blocks = cm._best_in_rows(q, keys, near), cm._best_in_blocks(q, keys, near)
    pre = cm._best_prefiltered(q, keys, near)
    assert torch.equal(rows[0], blocks[0]) and torch.equal(rows[1], blocks[1])
    assert torch.equal(pre[0], blocks[0]) and torch.equal(pre[1], blocks[1])
    assert blocks[1][0] == 3  # the first of the three identical keys
    assert blocks[1][1] != 10 and not bool((near[1] == blocks[1][1]).any())


@pytest.mark.parametrize("own", [0, 6, 7, 13, 14, 48, 49])
def test_the_block_search_excludes_a_key_on_either_side_of_a_block_boundary(monkeypatch, own):
    """Blocks are searched for exclusions only where the chunk's excluded keys lie; a query whose
    one excluded key is its own exact copy, at a block's first or last index, must still not
    match it."""
    import imlscan.scanning.copymove as cm

    g = torch.Generator().manual_seed(1)
    keys = torch.randint(-3, 4, (50, 8), generator=g).float()
    keys[own] = 3.0  # unrivalled: the query's best match unless excluded
    q, near = keys[[own]].clone(), torch.full((1, 4), own)
    monkeypatch.setattr(cm, "CPU_QUERY_CHUNK", 1)
    monkeypatch.setattr(cm, "CPU_KEY_CHUNK", 7)
    rows, blocks = cm._best_in_rows(q, keys, near), cm._best_in_blocks(q, keys, near)
    pre = cm._best_prefiltered(q, keys, near)
    assert int(blocks[1][0]) != own and int(pre[1][0]) != own
    assert torch.equal(rows[0], blocks[0]) and torch.equal(rows[1], blocks[1])
    assert torch.equal(pre[0], blocks[0]) and torch.equal(pre[1], blocks[1])


def _near_ties(n_queries: int = 64, n_keys: int = 4000, seed: int = 2) -> tuple[torch.Tensor, ...]:
    """Unit descriptors where each query's two best keys, in different blocks, differ by far less
    than bf16 can resolve (the better one later), some exact duplicates across blocks, and a few
    flat queries (rounding noise), with random exclusions."""
    g = torch.Generator().manual_seed(seed)
    keys = F.normalize(torch.randn(n_keys, 64, generator=g), dim=1)
    q = F.normalize(torch.randn(n_queries, 64, generator=g), dim=1)
    for i in range(n_queries):
        a, b = 50 + 37 * i, 2100 + 23 * i  # first and second key block (blocks of 1024 below)
        noise = F.normalize(torch.randn(64, generator=g), dim=0)
        keys[a] = F.normalize(q[i] + 0.30 * noise, dim=0)
        keys[b] = F.normalize(q[i] + 0.30 * noise + 2e-4 * torch.randn(64, generator=g), dim=0)
    keys[3000:3010] = keys[10:20]  # exact duplicates in a later block: the first must win a tie
    q[:4] = keys[10:14]
    q[-3:] = 1e-4 * F.normalize(torch.randn(3, 64, generator=g), dim=1)  # flat patches
    near = torch.randint(0, n_keys, (n_queries, 6), generator=g)
    return q, keys, near


def test_the_bf16_prefilter_gives_the_fp32_search_exactly_where_bf16_alone_would_not(monkeypatch):
    """The prefilter decides in bf16 which blocks can hold the best match and searches only those
    in fp32. Near-ties that bf16 cannot resolve must still come out as the fp32 search has them,
    value for value and index for index, without falling back to the plain search."""
    import imlscan.scanning.copymove as cm

    monkeypatch.setattr(cm, "CPU_QUERY_CHUNK", 16)
    monkeypatch.setattr(cm, "CPU_KEY_CHUNK", 1024)
    q, keys, near = _near_ties()
    rows, blocks = cm._best_in_rows(q, keys, near), cm._best_in_blocks(q, keys, near)
    assert torch.equal(rows[0], blocks[0]) and torch.equal(rows[1], blocks[1])
    sim = q.bfloat16() @ keys.bfloat16().T
    sim.scatter_(-1, near, -1.0)
    assert (sim.float().argmax(-1) != blocks[1]).sum() >= 5  # bf16 alone gets these wrong
    assert torch.equal(blocks[1][:4], torch.arange(10, 14))  # the first of two identical keys

    def plain(*args):
        raise AssertionError("the prefilter gave up on descriptors it should prune")

    monkeypatch.setattr(cm, "_best_in_blocks", plain)
    pre = cm._best_prefiltered(q, keys, near)
    assert torch.equal(pre[0], blocks[0]) and torch.equal(pre[1], blocks[1])


def test_the_prefilter_hands_mostly_flat_images_to_the_plain_search(monkeypatch):
    """Flat patches' similarities are all alike, so nothing can be pruned: an image of mostly flat
    patches runs the plain search (same result) instead of paying for the bf16 pass too."""
    import imlscan.scanning.copymove as cm

    monkeypatch.setattr(cm, "CPU_QUERY_CHUNK", 16)
    monkeypatch.setattr(cm, "CPU_KEY_CHUNK", 1024)
    q, keys, near = _near_ties()
    q[: int(len(q) * 0.7)] *= 1e-4
    expected = cm._best_in_blocks(q, keys, near)
    calls = []
    real = cm._best_in_blocks
    monkeypatch.setattr(cm, "_best_in_blocks", lambda *a: calls.append(1) or real(*a))
    pre = cm._best_prefiltered(q, keys, near)
    assert calls == [1]
    assert torch.equal(pre[0], expected[0]) and torch.equal(pre[1], expected[1])


def test_the_prefilter_is_used_only_where_bf16_is_native_and_within_its_error_bound(monkeypatch):
    """Emulated bf16 is slower than fp32, and a torch whose bf16 products stray past the bound
    would break the exactness argument: either way the plain search stays."""
    import imlscan.scanning.copymove as cm

    monkeypatch.setattr(cm, "cpu_has_native_bf16", lambda: True)
    cm.bf16_prefilter_ok.cache_clear()
    try:
        assert cm.bf16_prefilter_ok()
        monkeypatch.setattr(cm, "BF16_ROUNDOFF", 2.0**-20)  # a bound no bf16 product meets
        cm.bf16_prefilter_ok.cache_clear()
        assert not cm.bf16_prefilter_ok()
        monkeypatch.setattr(cm, "BF16_ROUNDOFF", 2.0**-8)
        monkeypatch.setattr(cm, "cpu_has_native_bf16", lambda: False)
        cm.bf16_prefilter_ok.cache_clear()
        assert not cm.bf16_prefilter_ok()
    finally:
        cm.bf16_prefilter_ok.cache_clear()


def test_the_matcher_finds_the_same_matches_with_and_without_the_prefilter(monkeypatch):
    """End to end on an image with a copied block: best ZNCC and offsets identical either way."""
    import imlscan.scanning.copymove as cm

    rgb, _ = _copy_moved(24, 40)
    x = _normalized(rgb)
    matcher = CopyMoveMatcher(CopyMoveConfig(size=SIZE))
    monkeypatch.setattr(cm, "CPU_KEY_CHUNK", 256)  # 15 blocks of keys at this size, as 32 at 512 px
    monkeypatch.setattr(cm, "bf16_prefilter_ok", lambda: False)
    plain = matcher.best_matches(x)
    monkeypatch.setattr(cm, "bf16_prefilter_ok", lambda: True)
    monkeypatch.setattr(cm, "_best_in_blocks", lambda *a: pytest.fail("the prefilter gave up on a textured photo"))
    pre = matcher.best_matches(x)
    assert torch.equal(plain[0], pre[0]) and torch.equal(plain[1], pre[1])


def test_env_reports_whether_the_matcher_runs_its_prefilter(monkeypatch):
    """A slow-scan bug report needs to say which search ran; without native bf16 it is never the
    prefilter."""
    from typer.testing import CliRunner

    import imlscan.scanning.copymove as cm
    from imlscan.cli import app

    monkeypatch.setattr(cm, "cpu_has_native_bf16", lambda: False)
    cm.bf16_prefilter_ok.cache_clear()
    try:
        res = CliRunner().invoke(app, ["env", "--json"])
        assert res.exit_code == 0, res.output
        info = json.loads(res.stdout)
        assert info["copy_move_bf16_prefilter"] is False and "cpu_native_bf16" in info
    finally:
        cm.bf16_prefilter_ok.cache_clear()


def _small_search(seed: int, size: int = 96) -> tuple[torch.Tensor, ...]:
    """Real descriptors and exclusions of a small photo with a copied block (exact ties between the
    copy's and the source's keys) and a flat corner (flat queries)."""
    from imlscan.models.sparsevit import DuplicationCue, neighbour_index

    rgb = _photo(seed, size)
    rgb[8:40, 8:40] = rgb[50:82, 52:84]
    rgb[-16:, -16:] = 128
    x = _normalized(rgb)
    q, _, gh, gw = DuplicationCue.descriptors(x)
    keys, _, kh, kw = DuplicationCue.descriptors(x, 2)
    return q[0], keys[0], neighbour_index(gh, gw, 3, keys=(kh, kw), step=4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_prefiltered_search_is_the_row_search_on_photos_with_copies_flat_parts_and_small_runs(monkeypatch, seed):
    """Runs of 16 keys, blocks of 48 and chunks of 8 queries, so that every run, block and chunk
    edge, the bands of excluded keys and the re-check of runs that only one or two queries doubt
    (padded to ``MIN_ROWS``) are crossed many times: values and first indices as the row search."""
    import imlscan.scanning.copymove as cm

    monkeypatch.setattr(cm, "CPU_QUERY_CHUNK", 8)
    monkeypatch.setattr(cm, "CPU_KEY_CHUNK", 48)
    monkeypatch.setattr(cm, "RECHECK_KEYS", 16)
    q, keys, near = _small_search(seed)
    rows = cm._best_in_rows(q, keys, near)
    runs = cm._bf16_maxima(q, keys, near)
    margin = 2 * cm.PREFILTER_SLACK * cm._bf16_bound(q, keys)
    doubt = runs >= (runs.amax(1) - margin)[:, None]
    assert doubt.float().mean() < cm.PREFILTER_GIVE_UP  # the re-check, not the plain search, runs
    assert ((doubt.sum(0) > 0) & (doubt.sum(0) < cm.MIN_ROWS)).any()  # runs that few queries doubt
    for search in (cm._best_in_blocks, cm._best_prefiltered):
        v, i = search(q, keys, near)
        assert torch.equal(v, rows[0]) and torch.equal(i, rows[1])


def test_the_bf16_maxima_bound_each_run_from_above_negative_runs_included(monkeypatch):
    """The int16 reading of bf16 maxima: a run whose similarities are all negative reads 0, any
    other its exact bf16 maximum, with the excluded keys at -1."""
    import imlscan.scanning.copymove as cm

    monkeypatch.setattr(cm, "CPU_KEY_CHUNK", 8)
    monkeypatch.setattr(cm, "RECHECK_KEYS", 4)
    g = torch.Generator().manual_seed(5)
    q = F.normalize(torch.randn(3, 16, generator=g), dim=1)
    keys = F.normalize(torch.randn(30, 16, generator=g), dim=1)
    keys[4:8] = -q[0]  # a run the first query is anti-correlated with, throughout
    near = torch.tensor([[0, 1], [29, 29], [12, 9]])
    got = cm._bf16_maxima(q, keys, near)
    sim = q.bfloat16() @ keys.bfloat16().T
    sim.scatter_(1, near, -1.0)
    want = F.pad(sim.float(), (0, 2), value=-2.0).view(3, -1, 4).amax(2).clamp_min(0.0)
    assert got.shape == (3, 8) and torch.equal(got, want)
    assert got[0, 1] == 0.0


def test_the_recheck_excludes_a_run_maximum_that_is_an_excluded_key(monkeypatch):
    """The re-check applies exclusions only where they change a row: where the run's first maximum
    is an excluded key (the query's own neighbourhood), or where everything left is below -1."""
    import imlscan.scanning.copymove as cm

    monkeypatch.setattr(cm, "RECHECK_KEYS", 64)
    g = torch.Generator().manual_seed(6)
    keys = torch.randint(1, 3, (40, 8), generator=g).float()  # products with the first query below 72
    keys[[5, 6, 33]] = 3.0  # the first query itself, twice excluded, then allowed
    q = torch.stack([torch.full((8,), 3.0), -torch.ones(8)])  # the second: every product below -1
    near = torch.tensor([[5, 6, 7], [9, 2, 9]])
    v, i = cm._recheck(q, keys, near, torch.ones(2, 1, dtype=torch.bool))
    rows = cm._best_in_rows(q, keys, near)
    assert torch.equal(v, rows[0]) and torch.equal(i, rows[1])
    assert (float(v[0]), int(i[0])) == (72.0, 33)
    assert (float(v[1]), int(i[1])) == (-1.0, 2)  # the excluded keys' -1 wins, the first of them


def test_the_neighbour_index_is_kept_per_grid_and_equals_a_fresh_one():
    import imlscan.scanning.copymove as cm
    from imlscan.models.sparsevit import neighbour_index

    a = cm._cpu_neighbours(8, 8, 3, 29, 29, 4)
    assert a is cm._cpu_neighbours(8, 8, 3, 29, 29, 4)
    assert torch.equal(a, neighbour_index(8, 8, 3, keys=(29, 29), step=4))
