"""The release scripts in scripts/ that write the shipped default weights' metadata."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from imlscan.weights import read_metadata, save_weights

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _run_folder(root: Path, name: str, hardware: str | None, steps: int) -> Path:
    run = root / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"size": 256, "seed": steps}))
    summary = {"steps": steps, "elapsed_s": 60.0}
    if hardware:
        summary["hardware"] = hardware
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _finalize(*args: str) -> None:
    cmd = [sys.executable, str(SCRIPTS / "finalize_default_weights.py"), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def test_finalize_records_every_stage_in_order_and_their_hardware(tmp_path, tiny_model):
    src = tmp_path / "best.safetensors"
    save_weights(tiny_model, src, name="tiny-test", variant="sparsevit-test")
    a = _run_folder(tmp_path, "a", "1 x cpu (Xeon, 2 logical cores)", 10)
    b = _run_folder(tmp_path, "b", "1 x cpu (Xeon, 2 logical cores)", 20)
    c = _run_folder(tmp_path, "c", "1 x NVIDIA H100", 30)
    old = _run_folder(tmp_path, "old", None, 5)

    first = tmp_path / "first.safetensors"
    _finalize(str(src), str(first), "--stage", str(old), "--hardware", "a laptop")
    assert read_metadata(first)["provenance"]["hardware"] == "a laptop"

    out = tmp_path / "out.safetensors"
    _finalize(str(src), str(out), "--prior", str(first), "--stage", str(a), "--stage", str(b), "--stage", str(c))
    meta = read_metadata(out)
    stages = meta["provenance"]["stages"]
    assert [s["run"] for s in stages] == ["old", "a", "b", "c"]
    assert [s["summary"]["steps"] for s in stages] == [5, 10, 20, 30]
    assert meta["provenance"]["hardware"] == "1 x cpu (Xeon, 2 logical cores); 1 x NVIDIA H100"
    assert meta["licence"].startswith("CC-BY-NC-4.0")
    before, after = load_file(src), load_file(out)
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)


def test_finalize_without_recorded_hardware_says_so(tmp_path, tiny_model):
    src = tmp_path / "best.safetensors"
    save_weights(tiny_model, src, name="tiny-test", variant="sparsevit-test")
    out = tmp_path / "out.safetensors"
    _finalize(str(src), str(out), "--stage", str(_run_folder(tmp_path, "old", None, 5)))
    assert read_metadata(out)["provenance"]["hardware"] == "not recorded"


def test_overlay_example_puts_overlay_then_mask_side_by_side_at_one_height(tmp_path):
    from PIL import Image

    overlay = Image.new("RGB", (200, 100), (255, 0, 0))  # 2:1, red
    mask = Image.new("L", (90, 180), 255)  # 1:2, white
    overlay.save(tmp_path / "o.png")
    mask.save(tmp_path / "m.png")
    out = tmp_path / "sheet.jpg"
    cmd = [
        sys.executable,
        str(SCRIPTS / "overlay_example.py"),
        str(tmp_path / "o.png"),
        str(tmp_path / "m.png"),
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    sheet = Image.open(out)
    assert sheet.format == "JPEG" and sheet.height == 360
    assert sheet.width == 720 + 6 + 180  # each panel scaled to height 360, 6 px gap
    px = sheet.convert("RGB").load()
    assert px[360, 180][0] > 200 and px[360, 180][1] < 60  # overlay on the left
    assert min(px[720 + 6 + 90, 180]) > 200  # mask on the right
    assert min(px[723, 180]) > 200  # the white gap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "o.png", "sheet.jpg"]  # no stray .part


def test_travel_subset_keeps_the_split_the_budgets_and_is_reproducible(tmp_path, rng):
    from imlscan.data.synth import host_split

    shared = tmp_path / "shared"
    (shared / "hosts" / "shard-00").mkdir(parents=True)
    (shared / "regions").mkdir()
    for i in range(60):  # JPEG-sized stand-ins: the script copies bytes, it never decodes
        (shared / "hosts" / "shard-00" / f"p{i:03d}.jpg").write_bytes(
            rng.integers(0, 256, 1000 + 10 * i, dtype=np.uint8).tobytes()
        )
    (shared / "hosts" / "shard-00" / "big.png").write_bytes(b"x" * 100)
    for i in range(10):
        (shared / "regions" / f"r{i}.png").write_bytes(b"r")
    cmd = [sys.executable, str(SCRIPTS / "travel_subset.py"), str(shared)]
    budget = ["--train-mb", "0.02", "--val-mb", "0.003", "--region-every", "3"]
    for out in ("a", "b"):
        subprocess.run([*cmd, str(tmp_path / out), *budget], check=True, capture_output=True, text=True)
    chosen = sorted(p.name for p in (tmp_path / "a" / "hosts").iterdir())
    assert chosen == sorted(p.name for p in (tmp_path / "b" / "hosts").iterdir())  # same seed, same draw
    assert "big.png" not in chosen
    sizes = {
        s: sum((tmp_path / "a" / "hosts" / n).stat().st_size for n in chosen if host_split(n) == s)
        for s in ("train", "val")
    }
    assert 0 < sizes["train"] <= 20_000 and 0 < sizes["val"] <= 3_000
    all_train = sum(p.stat().st_size for p in (shared / "hosts").rglob("*.jpg") if host_split(p.name) == "train")
    assert sizes["train"] < all_train  # the budget, not the supply, stopped it
    assert sorted(p.name for p in (tmp_path / "a" / "regions").iterdir()) == ["r0.png", "r3.png", "r6.png", "r9.png"]


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copymove_components_reads_the_two_halves_of_a_source_and_copy_mask():
    cm = _script("copymove_components")
    mask = np.zeros((40, 60), bool)
    mask[5:15, 5:15] = True  # source
    mask[20:30, 40:50] = True  # copy, same area
    prob = np.full(mask.shape, 0.1)
    prob[20:30, 40:50] = 0.9  # the model flags the copy
    prob[5:15, 5:15] = 0.3
    r = cm.component_scores(prob, mask)
    assert (r["mean_high"], r["mean_low"], r["mean_background"]) == pytest.approx((0.9, 0.3, 0.1))
    assert r["auc_high_only"] == 1.0 and r["auc_low_only"] == 1.0
    assert r["auc_both"] == 1.0
    prob[0, 0] = 0.95  # one background pixel above both halves
    r = cm.component_scores(prob, mask)
    n_bg = (~mask).sum()
    assert r["auc_high_only"] == pytest.approx(1 - 1 / n_bg) and r["auc_low_only"] == pytest.approx(1 - 1 / n_bg)
    one = np.zeros_like(mask)
    one[5:15, 5:15] = True
    assert cm.component_scores(prob, one) is None  # one region: not a source-and-copy mask
    uneven = one.copy()
    uneven[20:24, 40:44] = True
    assert cm.halves(uneven) is None  # two regions of very different areas


def test_copymove_components_no_copy_move_measures_the_network_alone(tiny_weights, tmp_path):
    from imlscan.copymove import CopyMoveConfig, attach

    cm = _script("copymove_components")
    with_detectors = tmp_path / "cm.safetensors"
    attach(tiny_weights, with_detectors, CopyMoveConfig(size=64, threshold=0.5))
    assert cm.predictor_for(str(with_detectors), "resize", network_only=True).copy_move is None
    assert cm.predictor_for(str(with_detectors), "resize", network_only=False).copy_move is not None
    assert cm.predictor_for(str(tiny_weights), "native", network_only=False).copy_move is None


def test_flip_tta_maps_each_view_back_onto_the_image():
    """A view's map must be flipped back: the h view of an image is the mirror of the plain map of
    its mirror, and the id view is exactly the plain predictor's map. The network is a lopsided
    horizontal filter, so mirroring changes its output and a forgotten flip-back shows."""
    import importlib.util

    import torch

    from imlscan.predict import Predictor

    spec = importlib.util.spec_from_file_location("flip_tta", SCRIPTS / "flip_tta.py")
    flip_tta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flip_tta)
    rgb = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    rgb[:, :40] //= 4
    net = torch.nn.Conv2d(3, 1, (1, 3), padding=(0, 1), bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([1.0, -2.0, 0.5]).view(1, 1, 1, 3).expand(1, 3, 1, 3))
    kw = {"mode": "native", "device": "cpu", "precision": "fp32"}
    plain = Predictor(net, **kw)
    mirror = flip_tta.FlipPredictor(net, views=("h",), **kw).predict_prob(rgb)
    np.testing.assert_allclose(mirror, plain.predict_prob(rgb[:, ::-1].copy())[:, ::-1], atol=1e-5)
    assert not np.allclose(mirror, plain.predict_prob(rgb), atol=1e-3)
    ident = flip_tta.FlipPredictor(net, views=("id",), **kw).predict_prob(rgb)
    np.testing.assert_allclose(ident, plain.predict_prob(rgb), atol=1e-6)
    with pytest.raises(SystemExit):
        flip_tta.FlipPredictor(net, views=("diagonal",), **kw)


def test_average_weights_interpolates_every_tensor_and_drops_the_calibration(tmp_path, tiny_model):
    import copy

    import torch

    from imlscan.models import create_model
    from imlscan.weights import load_state_dict

    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_weights(tiny_model, a, name="start", variant="sparsevit-test")
    save_weights(other, b, name="tuned", variant="sparsevit-test", extra={"calibration": {"threshold": 0.3}})
    assert "calibration" in read_metadata(b)
    out = tmp_path / "avg.safetensors"
    script = [sys.executable, str(SCRIPTS / "average_weights.py")]
    subprocess.run([*script, str(a), str(b), "--weight", "1", "--weight", "3", "--out", str(out)], check=True)
    sa, sb, avg = load_state_dict(a), load_state_dict(b), load_state_dict(out)
    assert avg.keys() == sa.keys()
    assert any(not v.is_floating_point() for v in sa.values())  # integer buffers are copied, not averaged
    for k in sa:
        if sa[k].is_floating_point():
            torch.testing.assert_close(avg[k], 0.25 * sa[k] + 0.75 * sb[k], rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(avg[k], sb[k])
    meta = read_metadata(out)
    assert "calibration" not in meta  # the averaged bias fits neither file's threshold
    assert [(e["name"], e["weight"]) for e in meta["provenance"]["average"]] == [("start", 0.25), ("tuned", 0.75)]
    assert meta["name"] == "avg"

    wider = tmp_path / "wider.safetensors"
    torch.manual_seed(0)
    save_weights(create_model("sparsevit-test", dims=(16, 16, 32, 32)), wider, name="w", variant="sparsevit-test")
    bad = subprocess.run([*script, str(a), str(wider), "--out", str(tmp_path / "x.safetensors")], capture_output=True)
    assert bad.returncode != 0 and b"configs differ" in bad.stderr
    assert not (tmp_path / "x.safetensors").exists()
    not_weights = tmp_path / "pairs.json"
    not_weights.write_text("[]")
    bad = subprocess.run(
        [*script, str(a), str(not_weights), "--out", str(tmp_path / "x.safetensors")], capture_output=True
    )
    assert bad.returncode == 1 and b"Traceback" not in bad.stderr and b"not a safetensors" in bad.stderr


def test_breakdown_by_kind_groups_by_what_the_generator_did(tmp_path):
    """The model card's per-case table: translated-only pastes apart from resampled ones, negatives
    and perturbed rows left out, means per group."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        from breakdown_by_kind import breakdown
    finally:
        sys.path.pop(0)
    samples = [
        {"kind": "copymove", "scale": 1.0, "angle": 0.0},
        {"kind": "copymove", "scale": 1.2, "angle": 0.0},
        {"kind": "copymove", "scale": 1.0, "angle": 0.0},
        {"kind": "negative"},
        {"kind": "removal"},
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": samples}))
    rows = [("clean", 0, 0.2), ("clean", 1, 0.9), ("clean", 2, 0.4), ("clean", 3, 0.0), ("clean", 4, 0.7)]
    rows.append(("jpeg:50", 0, 0.0))
    lines = ["setting,index,pixel_f1_best,pixel_auc,pixel_f1"]
    lines += [f"{s},{i},{v},{v},{v}" for s, i, v in rows]
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "per_image.csv").write_text("\n".join(lines) + "\n")
    got = breakdown(tmp_path / "manifest.json", tmp_path / "ev")
    assert set(got) == {"copymove, translated only", "copymove, scaled or rotated", "removal"}
    assert got["copymove, translated only"]["n"] == 2
    assert got["copymove, translated only"]["pixel_f1_best"] == pytest.approx(0.3)
    assert got["copymove, scaled or rotated"]["pixel_auc"] == pytest.approx(0.9)


def test_breakdown_by_size_bands_by_the_shorter_side(tmp_path):
    """README's small-photo table: the band is the shorter side's, edges inclusive from below,
    authentic rows give the flagged share, perturbed rows and undefined metrics stay out."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        from breakdown_by_size import breakdown
    finally:
        sys.path.pop(0)
    rows = [
        ("clean", 300, 191, "manipulated", 0.2, 0.8, 0.0),
        ("clean", 191, 300, "manipulated", 0.4, "nan", 0.0),
        ("clean", 400, 192, "manipulated", 0.9, 0.9, 0.0),
        ("clean", 100, 100, "authentic", 0.0, "nan", 0.03),
        ("jpeg:70", 100, 100, "manipulated", 0.0, 0.0, 0.0),
    ]
    lines = ["setting,width,height,label,pixel_f1,pixel_f1_best,pixel_auc,pixel_fpr"]
    lines += [f"{s},{w},{h},{label},{f1},{f1},{auc},{fpr}" for s, w, h, label, f1, auc, fpr in rows]
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "per_image.csv").write_text("\n".join(lines) + "\n")
    got = breakdown(tmp_path / "ev", [192, 256])
    assert list(got) == ["0-191 px", "192-255 px", "256+ px"]
    small = got["0-191 px"]
    assert small["n_manipulated"] == 2 and small["pixel_f1"] == pytest.approx(0.3)
    assert small["pixel_auc"] == pytest.approx(0.8)  # the undefined AUC is left out, not counted as 0
    assert small["n_authentic"] == 1 and small["authentic_pixels_flagged"] == pytest.approx(0.03)
    assert got["192-255 px"]["n_manipulated"] == 1 and got["256+ px"]["n_manipulated"] == 0
    with pytest.raises(SystemExit, match="increasing"):
        breakdown(tmp_path / "ev", [256, 192])


def test_dup_cue_probe_switches_the_cue_off_and_finds_the_copy(tmp_path):
    """The probe's 'cue off' column must be the model without its cue (equal to 'with' while the
    cue's last layer is zero, different once it is not), and its ZNCC column must find a copy."""
    import cv2
    import torch

    from imlscan.models import create_model

    sys.path.insert(0, str(SCRIPTS))
    try:
        from dup_cue_probe import pairs_of, probe
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    img[40:56, 40:56] = img[8:24, 8:24]
    mask = np.zeros((64, 64), np.uint8)
    mask[40:56, 40:56] = 255
    cv2.imwrite(str(tmp_path / "a.png"), img[..., ::-1])
    cv2.imwrite(str(tmp_path / "a_gt.png"), mask)
    (tmp_path / "pairs.json").write_text(json.dumps([["a.png", "a_gt.png"], ["a.png", "Negative"]]))
    pairs = pairs_of(tmp_path / "pairs.json")  # authentic pairs have no region to rank: left out
    torch.manual_seed(0)
    model = create_model("sparsevit-test-dup").eval()
    res = probe(model, pairs)
    assert res["n"] == 1 and res["auc_with_cue"] == res["auc_without_cue"]
    assert res["auc_top1_zncc"] > 0.7  # the copy and its source both match; the noise does not
    with torch.no_grad():
        model.head.dup.fc2.weight.normal_(0, 1.0)
    res = probe(model, pairs)
    assert res["auc_with_cue"] != res["auc_without_cue"] and model.head.dup is not None


def test_fit_dup_cue_trains_only_the_cue_and_records_how(tmp_path, tiny_weights):
    """The fitted file must be the input model plus a cue: every input tensor unchanged, the cue
    trained (its zero last layer moved), the fit's settings and held-out losses in the metadata."""
    import cv2

    from imlscan.weights import model_from_file

    rng = np.random.default_rng(1)
    pairs = []
    for i in range(6):
        img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        if i % 3:
            img[32:56, 32:56] = img[4:28, 4:28]
            mask[32:56, 32:56] = 255
            cv2.imwrite(str(tmp_path / f"m{i}.png"), mask)
        cv2.imwrite(str(tmp_path / f"i{i}.png"), img)
        pairs.append([f"i{i}.png", f"m{i}.png" if i % 3 else "Negative"])
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    out = tmp_path / "fitted.safetensors"
    cmd = [sys.executable, str(SCRIPTS / "fit_dup_cue.py"), str(tiny_weights), str(tmp_path / "pairs.json"), str(out)]
    subprocess.run([*cmd, "--epochs", "3", "--lr", "0.05"], check=True, capture_output=True, text=True)
    fitted, meta = model_from_file(out)
    base, _ = model_from_file(tiny_weights)
    assert meta["variant"] == "sparsevit-test-dup"
    own = fitted.state_dict()
    for k, v in base.state_dict().items():
        assert torch_equal_half(own[k], v), k
    fit = meta["provenance"]["cue_fit"]
    assert fit["kept_epoch"] >= 1 and fitted.head.dup.fc2.weight.abs().sum() > 0
    assert fit["images"] == 6 and fit["held_out"] == 1 and fit["epochs"] == 3
    assert fit["heldout_loss"] < fit["heldout_loss_without_cue"]


def torch_equal_half(a, b) -> bool:
    """Equal after the fp16 storage both files went through."""
    return bool((a.half().float() == b.half().float()).all())


def test_fit_dup_cue_marks_a_copy_moves_source_where_it_was_copied_from():
    """The source is the pasted mask mapped back through the affine, whose translation was
    recorded before post-processing and so scales with a later resize."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        from fit_dup_cue import source_mask
    finally:
        sys.path.pop(0)
    mask = np.zeros((50, 80), bool)
    mask[30:40, 50:70] = True  # the copy, on the final (x0.5) image
    sample = {"affine": [[1.0, 0.0, 60.0], [0.0, 1.0, 40.0]], "post": [{"op": "resize", "factor": 0.5}]}
    src = source_mask(mask, sample)
    want = np.zeros_like(mask)
    want[10:20, 20:40] = True  # moved back by (30, 20) final pixels
    assert np.array_equal(src, want)
    flipped = {"affine": [[-1.0, 0.0, 79.0], [0.0, 1.0, 0.0]], "post": []}  # mirrored in x
    want = np.zeros_like(mask)
    want[30:40, 10:30] = True
    assert np.array_equal(source_mask(mask, flipped), want)


def test_select_copy_move_picks_the_best_allowed_setting_and_attaches_it(tmp_path, tiny_model, capsys):
    """With a network that flags nothing, the fusion off scores F1 0 and every setting that finds
    the copies scores more; the rule picks the best one within the authentic limit and writes it
    to the weights, and picks nothing when no setting keeps authentic photos clean enough."""
    import cv2

    main = _script_main("select_copy_move")
    weights = _blind_weights(tiny_model, tmp_path / "w.safetensors")
    rng = np.random.default_rng(5)
    pairs = []
    for k in range(3):
        img = cv2.GaussianBlur(rng.normal(128, 60, (128, 128, 3)).astype(np.float32), (0, 0), 1.0)
        img = np.clip(img, 0, 255).astype(np.uint8)
        pairs.append([f"a{k}.png", "Negative"])
        cv2.imwrite(str(tmp_path / f"a{k}.png"), img)
        img = img.copy()
        img[72:120, 70:118] = img[8:56, 8:56]
        mask = np.zeros((128, 128), np.uint8)
        mask[72:120, 70:118] = 255
        cv2.imwrite(str(tmp_path / f"c{k}.png"), img)
        cv2.imwrite(str(tmp_path / f"c{k}_gt.png"), mask)
        pairs.append([f"c{k}.png", f"c{k}_gt.png"])
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    out = tmp_path / "cm.safetensors"
    main([str(weights), str(tmp_path / "pairs.json"), "--size", "128", "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 2 * 7 + 2 and lines[0].startswith("fusion off") and " F1 0.0000" in lines[0]
    chosen = json.loads(lines[-2].removeprefix("chosen: "))
    scores = [float(line.split(" F1 ")[1].split()[0]) for line in lines[1:15]]
    assert chosen["f1"] == pytest.approx(max(scores), abs=1e-4) and chosen["f1"] > 0.1
    cm = read_metadata(out)["copy_move"]
    assert (cm["radius"], cm["threshold"], cm["size"]) == (chosen["radius"], chosen["threshold"], 128)
    assert cm["selected_on"].endswith("pairs.json") and cm["fusion_off_f1"] == 0.0
    out.unlink()
    main([str(weights), str(tmp_path / "pairs.json"), "--size", "128", "--out", str(out), "--max-authentic-fpr", "-1"])
    assert capsys.readouterr().out.splitlines()[-1] == "chosen: null" and not out.exists()


def _transformed_copies(folder: Path, transforms: list[tuple[float, float, bool]]) -> None:
    """``folder/pairs.json``: per (angle, scale, flip), an authentic photo and its forgery with a
    transformed copy, the mask marking the copy and its source."""
    import cv2
    from helpers import multiscale_photo, transformed_copy

    rng = np.random.default_rng(0)
    pairs = []
    for k, (angle, scale, flip) in enumerate(transforms):
        photo = multiscale_photo(rng, 256)
        cv2.imwrite(str(folder / f"a{k}.png"), photo)
        pairs.append([f"a{k}.png", "Negative"])
        img, source, copy = transformed_copy(photo, angle, scale, flip)
        cv2.imwrite(str(folder / f"c{k}.png"), img)
        cv2.imwrite(str(folder / f"c{k}_gt.png"), (source | copy).astype(np.uint8) * 255)
        pairs.append([f"c{k}.png", f"c{k}_gt.png"])
    (folder / "pairs.json").write_text(json.dumps(pairs))


def test_select_copy_move_keypoints_picks_the_best_allowed_setting_and_attaches_it(tmp_path, tiny_model, capsys):
    """Rotated and mirrored copies that only a few keypoints match: the network and the dense
    matcher find nothing, the 5-inlier settings find them (mirrored ones only with the mirror
    search), the rule picks the best allowed one and writes it, and picks nothing when the
    authentic limit rules everything out."""

    from imlscan.copymove import CopyMoveConfig, attach

    main = _script_main("select_copy_move_keypoints")
    plain = _blind_weights(tiny_model, tmp_path / "w.safetensors")
    weights = attach(plain, tmp_path / "cm.safetensors", CopyMoveConfig(size=256))
    _transformed_copies(tmp_path, [(25, 1.1, False), (-40, 0.85, False), (15, 1.0, True)])
    out = tmp_path / "kp.safetensors"
    main([str(weights), str(tmp_path / "pairs.json"), "--size", "256", "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 36 + 2 and lines[0].startswith("keypoints off") and " F1 0.0000" in lines[0]
    rows = {line.split(" F1 ")[0].strip(): float(line.split(" F1 ")[1].split()[0]) for line in lines[1:37]}
    assert rows["mirror True  inliers  5 corr 0.7"] > rows["mirror False inliers  5 corr 0.7"] > 0.3
    assert rows["mirror True  inliers  5 corr 0.7 verified"] == rows["mirror True  inliers  5 corr 0.7"]  # exact copies
    chosen = json.loads(lines[-2].removeprefix("chosen: "))
    assert chosen["f1"] == pytest.approx(max(rows.values()), abs=1e-4) and chosen["config"]["mirror"] is True
    meta = read_metadata(out)
    assert meta["copy_move_keypoints"]["min_inliers"] == chosen["config"]["min_inliers"] == 5
    assert meta["copy_move_keypoints"]["keypoints_off_f1"] == 0.0 and meta["copy_move"]["size"] == 256
    out.unlink()
    main([str(weights), str(tmp_path / "pairs.json"), "--size", "256", "--out", str(out), "--max-authentic-fpr", "-1"])
    assert capsys.readouterr().out.splitlines()[-1] == "chosen: null" and not out.exists()


def test_select_copy_move_keypoints_joint_moves_the_networks_threshold_to_make_room(tmp_path, tiny_model, capsys):
    """The network says 0.545 everywhere: at any threshold below that it flags every authentic
    pixel, so the joint rule must put the network's threshold at 0.55 (the allowed one nearest
    0.5), pick the best keypoint setting there, move the output bias by -logit(0.55) and keep the
    earlier calibration under ``previous``."""
    import math

    import torch

    from imlscan.copymove import CopyMoveConfig, attach
    from imlscan.weights import model_from_file, rewrite_metadata

    main = _script_main("select_copy_move_keypoints")
    with torch.no_grad():
        tiny_model.head.classifier.weight.zero_()
        tiny_model.head.classifier.bias.fill_(math.log(0.545 / 0.455))
    save_weights(tiny_model, tmp_path / "w.safetensors", name="tiny-test", variant="sparsevit-test")
    earlier = {"threshold": 0.4, "total_logit_offset": 0.4, "authentic_scores": [0.5]}
    rewrite_metadata(tmp_path / "w.safetensors", tmp_path / "w.safetensors", {"calibration": earlier})
    weights = attach(tmp_path / "w.safetensors", tmp_path / "cm.safetensors", CopyMoveConfig(size=256))
    _transformed_copies(tmp_path, [(25, 1.1, False), (15, 1.0, True)])
    out = tmp_path / "joint.safetensors"
    main([str(weights), str(tmp_path / "pairs.json"), "--size", "256", "--joint", "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0].startswith("as it is: keypoints off") and " at 0.50 " in lines[0] and "authentic 1.000000" in lines[0]
    )
    assert len(lines) == 1 + 37 + 2 and all(" at 0.55 " in line for line in lines[1:38])
    chosen = json.loads(lines[-2].removeprefix("chosen: "))
    assert chosen["threshold"] == 0.55 and chosen["config"]["mirror"] is True and chosen["f1"] > 0.3
    meta = read_metadata(out)
    cal = meta["calibration"]
    assert cal["threshold"] == 0.55 and cal["previous"]["threshold"] == 0.4
    assert cal["total_logit_offset"] == pytest.approx(0.4 - math.log(0.55 / 0.45))
    assert (
        len(cal["authentic_scores"]) == 2
        and meta["copy_move_keypoints"]["min_inliers"] == chosen["config"]["min_inliers"]
    )
    model, _ = model_from_file(out)
    shifted = math.log(0.545 / 0.455) - math.log(0.55 / 0.45)
    assert float(model.head.classifier.bias.detach()) == pytest.approx(shifted, abs=2e-3)
    assert not (tmp_path / "joint.network.safetensors").exists()


def test_fit_keypoint_verifier_keeps_the_copies_and_drops_the_lookalikes(tmp_path, capsys):
    """Training copies are exact (the mask marks copy and source), the authentic folder holds
    lookalikes: with every copy to be kept, the chosen thresholds must let no lookalike through,
    and the validation set (one of each) is reported with them."""
    import cv2
    from helpers import lookalike_copy, multiscale_photo

    main = _script_main("fit_keypoint_verifier")
    for name, seeds in (("train", (0, 1, 2)), ("val", (0,))):
        folder = tmp_path / name
        (folder / "hosts").mkdir(parents=True)
        _transformed_copies(folder, [(25 + 5 * s, 1.1, False) for s in seeds])
        for s in seeds:
            photo = multiscale_photo(np.random.default_rng(100 + s), 256)
            cv2.imwrite(str(folder / "hosts" / f"h{s}.png"), lookalike_copy(photo, 25, 1.1, seed=s))
    out = tmp_path / "fit.json"
    train, val = tmp_path / "train", tmp_path / "val"
    main(
        [
            "--train",
            str(train / "pairs.json"),
            f"{train / 'hosts'}:all",
            "--val",
            str(val / "pairs.json"),
            f"{val / 'hosts'}:all",
            "--keep",
            "1.0",
            "--json",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert result["train"]["copies"] >= 1 and result["train"]["lookalikes"] >= 1  # found at 512 (from 256)
    assert result["train"]["kept"] == 1.0 and result["train"]["passed"] == 0.0
    rows = result["train_rows"]
    lowest, loosest = result["min_region_corr"], result["max_fit_error"]
    copies = [r for r in rows if r["label"] == 1]
    assert all(r["region_corr"] >= lowest and r["fit_error"] <= loosest for r in copies)
    assert "val" in result and capsys.readouterr().out.splitlines()[-1].startswith("chosen: min_region_corr")
    with pytest.raises(SystemExit, match="no lookalikes to fit on"):  # copies alone cannot place the thresholds
        main(["--train", str(train / "pairs.json")])


def _script_main(name: str):
    """A script's ``main``, imported from scripts/ (which the scripts themselves run from)."""
    import importlib

    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(name).main
    finally:
        sys.path.pop(0)


def _blind_weights(model, path: Path) -> Path:
    """Weights of ``model`` whose map is 0 everywhere, so only the copy-move detectors flag."""
    import torch

    with torch.no_grad():
        model.head.classifier.bias.fill_(-20.0)
    save_weights(model, path, name="tiny-test", variant="sparsevit-test")
    return path


def test_copy_move_false_alarms_counts_the_photos_each_detector_fires_on(tmp_path, tiny_weights, capsys):
    import cv2
    from helpers import multiscale_photo, transformed_copy

    from imlscan.copymove import CopyMoveConfig, attach
    from imlscan.copymove_keypoints import KeypointConfig

    weights = attach(
        tiny_weights, tmp_path / "cm.safetensors", CopyMoveConfig(size=256), keypoints=KeypointConfig(min_inliers=5)
    )
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    clean = multiscale_photo(rng, 256)
    cv2.imwrite(str(photos / "clean.png"), clean[..., ::-1])  # OpenCV writes BGR
    cv2.imwrite(str(photos / "copied.png"), transformed_copy(clean, 25, 1.1, False)[0][..., ::-1])
    _script_main("copy_move_false_alarms")([str(photos), "--weights", str(weights), "--list"])
    out = capsys.readouterr().out
    summary = json.loads(out[: out.rindex("}") + 1])
    assert summary["photos"] == 2 and summary["settings"]["keypoints"]["min_inliers"] == 5
    assert summary["keypoints"]["photos_fired"] == 1 and summary["keypoints"]["share_of_photos"] == 0.5
    assert summary["dense"]["photos_fired"] == 0  # a rotated copy is not the dense matcher's
    assert 0 < summary["keypoints"]["mean_pixel_share"] < 0.1
    assert out.strip().splitlines()[-1].endswith("copied.png")


def test_compare_keypoint_maps_tells_an_identical_version_from_a_changed_one(tmp_path, capsys):
    import shutil

    import cv2
    from helpers import multiscale_photo, transformed_copy

    photo = multiscale_photo(np.random.default_rng(0), 512)
    rgb, _, copy = transformed_copy(photo, 25, 1.1, False, source=(140, 140), target=(360, 350), radius=100)
    cv2.imwrite(str(tmp_path / "f.png"), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / "f_gt.png"), copy.astype(np.uint8) * 255)
    (tmp_path / "pairs.json").write_text(json.dumps([["f.png", "f_gt.png"], ["f.png", "Negative"]]))
    package = SCRIPTS.parent / "imlscan"
    reports = {}
    for name, corr in (("same", None), ("changed", "0.95")):
        other = tmp_path / name
        shutil.copytree(package, other / "imlscan")
        if corr:
            src = other / "imlscan" / "copymove_keypoints.py"
            text = src.read_text()
            assert "    corr: float = 0.7\n" in text
            src.write_text(text.replace("    corr: float = 0.7\n", f"    corr: float = {corr}\n"))
        _script_main("compare_keypoint_maps")([str(other), str(tmp_path / "pairs.json")])
        reports[name] = json.loads(capsys.readouterr().out)
    assert reports["same"]["photos"] == 2 and reports["same"]["detector_fired_on"] == 2
    assert reports["same"]["maps_differing"] == 0
    assert reports["changed"]["maps_differing"] == 2 and reports["changed"]["differing"][0].endswith("f.png")


def _eval_folder(root: Path, images: list[tuple[np.ndarray, np.ndarray | None]]) -> Path:
    """A folder shaped like ``imlscan eval --save-predictions --out``'s: maps, masks and rows."""
    import csv

    from imlscan.imageio import write_png, write_prob_png

    rows = []
    for i, (prob, mask) in enumerate(images):
        mask_path = "Negative"
        if mask is not None:
            mask_path = str(root / f"m{i}.png")
            write_png(mask_path, mask.astype(np.uint8) * 255)
        write_prob_png(root / "predictions" / "clean" / f"{i:06d}_p{i}.png", prob)
        label = "authentic" if mask is None else "manipulated"
        rows.append(
            {"setting": "clean", "index": i, "image": f"/x/p{i}.jpg", "mask": mask_path, "label": label}
            | {"image_score": float(prob.max()), "pixel_f1_best": "1.0" if mask is not None else ""}
        )
    with (root / "per_image.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_threshold_rules_finds_hysteresis_where_regions_have_confident_cores(tmp_path, capsys):
    """Each forgery: a confident core with a weak fringe, plus a weak isolated blob that authentic
    images have too. Hysteresis (low under the fringe, high over the blob) gets both right; no
    single threshold can, and the shipped 0.5 line is exactly this data's F1 at 0.5."""
    from imlscan.metrics import pixel_f1

    def forged(shift: int) -> tuple[np.ndarray, np.ndarray]:
        prob = np.full((48, 48), 0.05, np.float32)
        mask = np.zeros((48, 48), bool)
        mask[8 + shift : 24 + shift, 8:24] = True
        prob[mask] = 0.4
        prob[12 + shift : 20 + shift, 12:20] = 0.95
        prob[36:42, 36:42] = 0.6
        return prob, mask

    def authentic() -> tuple[np.ndarray, None]:
        prob = np.full((48, 48), 0.05, np.float32)
        prob[30:36, 5:11] = 0.6
        return prob, None

    images = [forged(s) for s in (0, 4, 8)] + [authentic(), authentic()]
    (tmp_path / "fit").mkdir()
    (tmp_path / "other").mkdir()
    fit = _eval_folder(tmp_path / "fit", images)
    other = _eval_folder(tmp_path / "other", images[:1] + images[3:])
    _script_main("threshold_rules")([str(fit), str(other)])
    out = capsys.readouterr().out
    lines = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    at_half = np.mean([pixel_f1(p, m) for p, m in images[:3]])
    assert f"{at_half:.4f} / 0.0156" in lines["0.5 (shipped)"]
    low, high = (float(v) for v in re.findall(r"low=([\d.]+) high=([\d.]+)", lines["hysteresis"])[0])
    assert low < 0.4 and high >= 0.6
    assert "1.0000 / 0.0000 | 1.0000 / 0.0000" in lines["hysteresis"]
    assert "1.0000" not in lines["global"]


def test_compare_keypoint_maps_checks_the_dense_search_too(tmp_path, capsys):
    """``--detector dense`` compares the dense matcher's best matches: a version whose search
    excludes a smaller neighbourhood must differ, an identical one must not."""
    import shutil

    import cv2
    from helpers import multiscale_photo

    cv2.imwrite(str(tmp_path / "f.png"), multiscale_photo(np.random.default_rng(0), 128)[..., ::-1])
    (tmp_path / "pairs.json").write_text(json.dumps([["f.png", "Negative"]]))
    reports = {}
    for name, exclude in (("same", None), ("changed", "1")):
        other = tmp_path / name
        shutil.copytree(SCRIPTS.parent / "imlscan", other / "imlscan")
        if exclude:
            src = other / "imlscan" / "copymove.py"
            assert "    exclude: int = 3\n" in src.read_text()
            src.write_text(src.read_text().replace("    exclude: int = 3\n", f"    exclude: int = {exclude}\n"))
        args = [str(other), str(tmp_path / "pairs.json"), "--detector", "dense", "--size", "128"]
        _script_main("compare_keypoint_maps")(args)
        reports[name] = json.loads(capsys.readouterr().out)
    assert reports["same"]["detector"] == "dense" and reports["same"]["maps_differing"] == 0
    assert reports["changed"]["maps_differing"] == 1


def test_selection_rule_keeps_an_input_within_the_limit_and_never_one_over_it():
    """The input as it is (the first row) must be beaten when it is within the authentic limit;
    over the limit it is no option, so the best row within the limit wins, and a row over the
    limit never does."""
    import importlib

    sys.path.insert(0, str(SCRIPTS))
    try:
        choose = importlib.import_module("selection_rule").choose
    finally:
        sys.path.pop(0)
    rows = [
        {"name": "a", "f1": 0.49, "authentic_fpr": 0.019},
        {"name": "b", "f1": 0.50, "authentic_fpr": 0.021},
    ]
    within = [{"name": "input", "f1": 0.495, "authentic_fpr": 0.0199}, *rows]
    assert choose(within, 0.02) is None
    assert choose([{**within[0], "f1": 0.48}, *rows], 0.02)["name"] == "a"
    over = [{"name": "input", "f1": 0.497, "authentic_fpr": 0.0204}, *rows]
    assert choose(over, 0.02)["name"] == "a"
    assert choose([over[0], rows[1]], 0.02) is None


def test_upscaled_hosts_writes_the_validation_photos_at_the_factor(tmp_path, rng):
    """v24's probe: the validation-split photos only, each upsampled by the factor (or only
    re-saved at factor 1), so a set made from them is forged at that size."""
    from PIL import Image

    from imlscan.data.synth import host_split

    hosts = tmp_path / "hosts"
    hosts.mkdir()
    for i in range(100):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(hosts / f"p{i:02d}.png")
    val = sorted(p.stem for p in hosts.iterdir() if host_split(p.name) == "val")
    assert len(val) >= 2
    for factor, shape in (("2", (80, 60)), ("1", (40, 30))):
        out = tmp_path / f"x{factor}"
        cmd = [sys.executable, str(SCRIPTS / "upscaled_hosts.py"), str(hosts), factor, str(out)]
        subprocess.run(cmd, check=True, capture_output=True)
        assert sorted(p.stem for p in out.iterdir()) == val
        assert all(Image.open(p).size == shape for p in out.iterdir())
    bad = hosts / f"{val[0]}.png"
    bad.write_bytes(b"not a png")
    cmd = [sys.executable, str(SCRIPTS / "upscaled_hosts.py"), str(hosts), "1", str(tmp_path / "y")]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert f"skipped {bad}" in run.stderr and "skipped 1 unreadable" in run.stdout
    assert sorted(p.stem for p in (tmp_path / "y").iterdir()) == val[1:]
    (hosts / "sub").mkdir()
    (hosts / "sub" / f"{val[1]}.png").write_bytes((hosts / f"{val[1]}.png").read_bytes())
    cmd[-1] = str(tmp_path / "z")
    run = subprocess.run(cmd, capture_output=True, text=True)  # two photos named val[1] in the split
    assert run.returncode != 0 and "rename one" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "z").exists()


def _per_image(folder: Path, rows: list[tuple[str, str, str, float, float]]) -> Path:
    folder.mkdir()
    lines = ["setting,index,image,label,pixel_f1,pixel_auc"]
    lines += [f"{s},{i},{img},{label},{f1},{auc}" for i, (s, img, label, f1, auc) in enumerate(rows)]
    (folder / "per_image.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_paired_difference_pairs_images_and_leaves_out_the_rest(tmp_path, capsys):
    """B - A is taken image by image over one setting's manipulated images; authentic rows, other
    settings and metrics undefined in either run stay out, and different image sets are refused."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        from paired_difference import main, paired, read_rows
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(3)
    auc_a = rng.uniform(0.5, 0.9, 12)
    f1_a = rng.uniform(0.0, 0.8, 12)
    f1_noise = rng.normal(0.0, 0.05, 12)
    f1_noise -= f1_noise.mean()
    rows_a = [("clean", f"im{i}.png", "manipulated", f1_a[i], auc_a[i]) for i in range(12)]
    rows_b = [("clean", f"im{i}.png", "manipulated", f1_a[i] + f1_noise[i], auc_a[i] + 0.05) for i in range(12)]
    rows_a.append(("clean", "im12.png", "manipulated", 0.5, float("nan")))
    rows_b.append(("clean", "im12.png", "manipulated", 0.5, 0.0))
    rows_a += [("clean", "auth.png", "authentic", 0.0, 0.0), ("jpeg:70", "im0.png", "manipulated", 0.0, 0.0)]
    rows_b += [("clean", "auth.png", "authentic", 1.0, 1.0), ("jpeg:70", "im0.png", "manipulated", 1.0, 1.0)]
    a = read_rows(_per_image(tmp_path / "a", rows_a), "clean")
    b = read_rows(_per_image(tmp_path / "b", rows_b), "clean")
    assert len(a) == 13 and all(image != "auth.png" for _, image in a)

    auc = paired(a, b, "pixel_auc", n_resamples=500)
    assert auc["n"] == 12  # im12's AUC is undefined in A
    assert auc["diff"] == pytest.approx(0.05)
    assert auc["lo"] == pytest.approx(0.05) and auc["hi"] == pytest.approx(0.05)
    assert auc["b_higher"] == 1.0
    assert auc["a"] == pytest.approx(auc_a.mean())

    f1 = paired(a, b, "pixel_f1", n_resamples=2000)
    assert f1["n"] == 13 and f1["diff"] == pytest.approx(0.0, abs=1e-12)
    assert f1["lo"] < 0.0 < f1["hi"]

    fewer = read_rows(_per_image(tmp_path / "c", rows_b[:5]), "clean")
    with pytest.raises(SystemExit, match="different images"):
        paired(a, fewer, "pixel_auc")
    elsewhere = [(setting, f"/other/checkout/{image}", *rest) for setting, image, *rest in rows_b]
    moved = read_rows(_per_image(tmp_path / "e", elsewhere), "clean")
    assert paired(a, moved, "pixel_auc", n_resamples=500) == auc  # another checkout's run of the same images
    twice = read_rows(_per_image(tmp_path / "d", [rows_a[0], rows_a[0]]), "clean")
    assert len(twice) == 2  # one image listed twice in a dataset is two rows, not one
    with pytest.raises(SystemExit, match="no per_image.csv"):
        read_rows(tmp_path / "missing", "clean")

    main([str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "pixel_auc", "--resamples", "200"])
    out = capsys.readouterr().out
    assert "pixel_auc" in out and "B-A +0.0500 [+0.0500, +0.0500]" in out and "B higher on 100%" in out


def test_export_trained_weights_writes_either_arm_of_an_ema_run(tmp_path, tiny_model):
    import torch

    run = tmp_path / "run"
    run.mkdir()
    save_weights(tiny_model, run / "best.safetensors", name="t-test", variant="sparsevit-test", dtype=torch.float16)
    avg = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    trained = {k: (v + 0.25 if v.is_floating_point() else v + 3) for k, v in avg.items()}
    torch.save({"model": trained, "ema": avg, "state": {"step": 7}}, run / "last.pt")
    script = [sys.executable, str(SCRIPTS / "export_trained_weights.py"), str(run)]
    subprocess.run([*script, str(tmp_path / "tr.safetensors")], check=True, capture_output=True)
    subprocess.run([*script, str(tmp_path / "av.safetensors"), "--average"], check=True, capture_output=True)
    tr, av = load_file(str(tmp_path / "tr.safetensors")), load_file(str(tmp_path / "av.safetensors"))
    for k, v in trained.items():
        want = v.half() if v.is_floating_point() else v
        assert torch.equal(tr[k], want), k  # stored in the run's own dtype
        assert torch.equal(av[k], avg[k].half() if avg[k].is_floating_point() else avg[k]), k
    meta = read_metadata(tmp_path / "tr.safetensors")
    assert meta["name"] == "t-test-trained-7" and meta["provenance"]["steps"] == 7
    assert read_metadata(tmp_path / "av.safetensors")["name"] == "t-test-average-7"
    torch.save({"model": trained, "ema": None, "state": {"step": 7}}, run / "last.pt")
    r = subprocess.run([*script, str(tmp_path / "x.safetensors"), "--average"], capture_output=True, text=True)
    assert r.returncode != 0 and "--ema" in r.stderr and not (tmp_path / "x.safetensors").exists()


def test_image_score_candidates_reads_saved_maps_and_pairs_each_candidate_with_the_current(tmp_path, capsys):
    """Authentic maps with one small hot spot, forgeries with a large lukewarm region: the shipped
    score and the peak-based ones rank every authentic photo above every forgery, the region's mass
    the reverse, and the paired interval of that difference cannot straddle zero."""
    rng = np.random.default_rng(0)

    def forged(k: int) -> tuple[np.ndarray, np.ndarray]:
        prob = rng.uniform(0.0, 0.05, (48, 48)).astype(np.float32)
        mask = np.zeros((48, 48), bool)
        mask[k : k + 20, 10:30] = True
        prob[mask] = 0.7
        return prob, mask

    def authentic(k: int) -> tuple[np.ndarray, None]:
        prob = rng.uniform(0.0, 0.05, (48, 48)).astype(np.float32)
        prob[k : k + 5, 30:35] = 0.99  # 25 pixels: more than the top 1% of 48 x 48
        return prob, None

    folder = _eval_folder(tmp_path, [forged(k) for k in (2, 10, 20)] + [authentic(k) for k in (5, 25, 40)])
    shipped = "shipped (imlscan.report.image_score)"
    _script_main("image_score_candidates")([str(folder), "--bootstrap", "200"])
    report = json.loads(capsys.readouterr().out)[str(folder)]
    assert report["n_manipulated"] == 3 and report["n_authentic"] == 3
    assert report[shipped]["image_auc"] == 0.0 and "auc_minus_current" not in report[shipped]
    assert report["blur 1/32, max"]["image_auc"] == 0.0
    assert report["max pixel"]["image_auc"] == 0.0
    mass = report["largest region's mass (> 0.5)"]
    assert mass["image_auc"] == 1.0 and mass["auc_minus_current"] == 1.0
    assert mass["auc_minus_current_ci95"] == [1.0, 1.0]
    assert mass["tpr_at_authentic_p95"] == 1.0

    # By edited share: forgeries 0 and 1 in the smallest band, 2 in the largest; authentic photos in every band.
    manifest = tmp_path / "manifest.json"
    areas = [0.01, 0.015, 0.3, None, None, None]
    manifest.write_text(json.dumps({"samples": [{"index": i, "area": a} for i, a in enumerate(areas)]}))
    _script_main("image_score_candidates")([str(folder), "--bootstrap", "20", "--area", str(manifest)])
    bands = json.loads(capsys.readouterr().out)[str(folder)]["by_area"]
    assert list(bands) == ["0-0.02", "0.15-1"]
    assert bands["0-0.02"]["n_forged"] == 2 and bands["0.15-1"]["n_forged"] == 1
    assert bands["0-0.02"]["largest region's mass (> 0.5)"] == 1.0 and bands["0.15-1"][shipped] == 0.0
    manifest.write_text(json.dumps({"samples": [{"index": 0, "area": 0.1}]}))
    with pytest.raises(SystemExit, match="no sample with index 1"):
        _script_main("image_score_candidates")([str(folder), "--area", str(manifest)])

    # Real forgeries alone, ranked against the first folder's authentic photos as scans rank them.
    only = _eval_folder(tmp_path / "only", [forged(k) for k in (4, 12)])
    with pytest.raises(SystemExit, match="needs both"):
        _script_main("image_score_candidates")([str(only)])
    _script_main("image_score_candidates")([str(only), "--reference", str(folder)])
    ranked = json.loads(capsys.readouterr().out)[str(only)]
    assert ranked["n_manipulated"] == 2 and "image_auc" not in ranked["max pixel"]
    assert ranked["largest region's mass (> 0.5)"]["forged_above_reference_p95"] == 1.0
    assert ranked[shipped]["forged_above_reference_p90"] == 0.0
    assert ranked["max pixel"]["authentic_above_reference_p95"] is None


def test_largest_region_mass_counts_the_biggest_region_only():
    sys.path.insert(0, str(SCRIPTS))
    try:
        from image_score_candidates import largest_region_mass
    finally:
        sys.path.pop(0)
    prob = np.zeros((10, 10), np.float32)
    prob[0:2, 0:2] = 1.0
    prob[5:8, 5:8] = 0.6
    assert largest_region_mass(prob) == pytest.approx(9 * 0.6 / 100)
    assert largest_region_mass(np.full((4, 4), 0.5, np.float32)) == 0.0
