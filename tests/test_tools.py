"""The maintained tools in tools/: each answers --help from the checkout root, and each has a test
of what it does. Offline and fast: tiny models, images and tables made here."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from imlscan.weights.store import read_metadata, save_weights

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
TOOL_NAMES = (
    "average_weights",
    "breakdown_by_kind",
    "breakdown_by_size",
    "check_against_authors",
    "compare_keypoint_maps",
    "copy_move_false_alarms",
    "export_trained_weights",
    "finalize_default_weights",
    "fit_keypoint_verifier",
    "overlay_example",
    "paired_difference",
    "precision_agreement",
    "profile_native",
    "select_copy_move",
    "select_copy_move_keypoints",
    "selection_rule",
    "travel_subset",
)


def _tool(name: str):
    """A tool imported as ``python tools/NAME.py`` sees its siblings: tools/ first on sys.path."""
    import importlib

    sys.path.insert(0, str(TOOLS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def _tool_main(name: str):
    return _tool(name).main


def _package_copy(dest: Path, module, change: tuple[str, str] | None) -> None:
    """``dest/imlscan``: a copy of the imported imlscan package, with one line of ``module``'s
    source replaced when ``change`` is given (wherever in the package the module lives)."""
    import shutil

    import imlscan

    package = Path(imlscan.__file__).parent
    shutil.copytree(package, dest / "imlscan", ignore=shutil.ignore_patterns("__pycache__"))
    if change:
        src = dest / "imlscan" / Path(module.__file__).relative_to(package)
        old, new = change
        assert old in src.read_text()
        src.write_text(src.read_text().replace(old, new))


def test_every_file_in_tools_is_a_listed_tool():
    """A tool added to tools/ joins TOOL_NAMES, and so the --help test, and needs a test of its own."""
    assert sorted(p.stem for p in TOOLS.glob("*.py")) == sorted(TOOL_NAMES)


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_every_tool_answers_help(name, monkeypatch, capsys):
    """``python tools/NAME.py --help`` from the checkout root: run as that command runs it (as
    ``__main__``, tools/ first on sys.path), in this process so that torch is imported once."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [f"tools/{name}.py", "--help"])
    monkeypatch.syspath_prepend(str(TOOLS))
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(TOOLS / f"{name}.py"), run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {name}.py") and "scripts/" not in out


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
    cmd = [sys.executable, str(TOOLS / "finalize_default_weights.py"), *args]
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
        str(TOOLS / "overlay_example.py"),
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
    cmd = [sys.executable, str(TOOLS / "travel_subset.py"), str(shared)]
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


def test_average_weights_interpolates_every_tensor_and_drops_the_calibration(tmp_path, tiny_model):
    import copy

    import torch

    from imlscan.models import create_model
    from imlscan.weights.store import load_state_dict

    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_weights(tiny_model, a, name="start", variant="sparsevit-test")
    save_weights(other, b, name="tuned", variant="sparsevit-test", extra={"calibration": {"threshold": 0.3}})
    assert "calibration" in read_metadata(b)
    out = tmp_path / "avg.safetensors"
    script = [sys.executable, str(TOOLS / "average_weights.py")]
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
    breakdown = _tool("breakdown_by_kind").breakdown
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
    breakdown = _tool("breakdown_by_size").breakdown
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


def test_select_copy_move_picks_the_best_allowed_setting_and_attaches_it(tmp_path, tiny_model, capsys):
    """With a network that flags nothing, the fusion off scores F1 0 and every setting that finds
    the copies scores more; the rule picks the best one within the authentic limit and writes it
    to the weights, and picks nothing when no setting keeps authentic photos clean enough."""
    import cv2

    main = _tool_main("select_copy_move")
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

    from imlscan.calibrate import attach_copy_move
    from imlscan.scanning.copymove import CopyMoveConfig

    main = _tool_main("select_copy_move_keypoints")
    plain = _blind_weights(tiny_model, tmp_path / "w.safetensors")
    weights = attach_copy_move(plain, tmp_path / "cm.safetensors", CopyMoveConfig(size=256))
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

    from imlscan.calibrate import attach_copy_move
    from imlscan.scanning.copymove import CopyMoveConfig
    from imlscan.weights.store import model_from_file, rewrite_metadata

    main = _tool_main("select_copy_move_keypoints")
    with torch.no_grad():
        tiny_model.head.classifier.weight.zero_()
        tiny_model.head.classifier.bias.fill_(math.log(0.545 / 0.455))
    save_weights(tiny_model, tmp_path / "w.safetensors", name="tiny-test", variant="sparsevit-test")
    earlier = {"threshold": 0.4, "total_logit_offset": 0.4, "authentic_scores": [0.5]}
    rewrite_metadata(tmp_path / "w.safetensors", tmp_path / "w.safetensors", {"calibration": earlier})
    weights = attach_copy_move(tmp_path / "w.safetensors", tmp_path / "cm.safetensors", CopyMoveConfig(size=256))
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

    main = _tool_main("fit_keypoint_verifier")
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

    from imlscan.calibrate import attach_copy_move
    from imlscan.scanning.copymove import CopyMoveConfig
    from imlscan.scanning.copymove_keypoints import KeypointConfig

    weights = attach_copy_move(
        tiny_weights, tmp_path / "cm.safetensors", CopyMoveConfig(size=256), keypoints=KeypointConfig(min_inliers=5)
    )
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    clean = multiscale_photo(rng, 256)
    cv2.imwrite(str(photos / "clean.png"), clean[..., ::-1])  # OpenCV writes BGR
    cv2.imwrite(str(photos / "copied.png"), transformed_copy(clean, 25, 1.1, False)[0][..., ::-1])
    _tool_main("copy_move_false_alarms")([str(photos), "--weights", str(weights), "--list"])
    out = capsys.readouterr().out
    summary = json.loads(out[: out.rindex("}") + 1])
    assert summary["photos"] == 2 and summary["settings"]["keypoints"]["min_inliers"] == 5
    assert summary["keypoints"]["photos_fired"] == 1 and summary["keypoints"]["share_of_photos"] == 0.5
    assert summary["dense"]["photos_fired"] == 0  # a rotated copy is not the dense matcher's
    assert 0 < summary["keypoints"]["mean_pixel_share"] < 0.1
    assert out.strip().splitlines()[-1].endswith("copied.png")


def test_compare_keypoint_maps_tells_an_identical_version_from_a_changed_one(tmp_path, capsys):
    import cv2
    from helpers import multiscale_photo, transformed_copy

    photo = multiscale_photo(np.random.default_rng(0), 512)
    rgb, _, copy = transformed_copy(photo, 25, 1.1, False, source=(140, 140), target=(360, 350), radius=100)
    cv2.imwrite(str(tmp_path / "f.png"), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / "f_gt.png"), copy.astype(np.uint8) * 255)
    (tmp_path / "pairs.json").write_text(json.dumps([["f.png", "f_gt.png"], ["f.png", "Negative"]]))
    from imlscan.scanning import copymove_keypoints

    reports = {}
    for name, corr in (("same", None), ("changed", "0.95")):
        other = tmp_path / name
        change = ("    corr: float = 0.7\n", f"    corr: float = {corr}\n") if corr else None
        _package_copy(other, copymove_keypoints, change)
        _tool_main("compare_keypoint_maps")([str(other), str(tmp_path / "pairs.json")])
        reports[name] = json.loads(capsys.readouterr().out)
    assert reports["same"]["photos"] == 2 and reports["same"]["detector_fired_on"] == 2
    assert reports["same"]["maps_differing"] == 0
    assert reports["changed"]["maps_differing"] == 2 and reports["changed"]["differing"][0].endswith("f.png")


def test_compare_keypoint_maps_checks_the_dense_search_too(tmp_path, capsys):
    """``--detector dense`` compares the dense matcher's best matches: a version whose search
    excludes a smaller neighbourhood must differ, an identical one must not."""
    import cv2
    from helpers import multiscale_photo

    cv2.imwrite(str(tmp_path / "f.png"), multiscale_photo(np.random.default_rng(0), 128)[..., ::-1])
    (tmp_path / "pairs.json").write_text(json.dumps([["f.png", "Negative"]]))
    from imlscan.scanning import copymove

    reports = {}
    for name, exclude in (("same", None), ("changed", "1")):
        other = tmp_path / name
        change = ("    exclude: int = 3\n", f"    exclude: int = {exclude}\n") if exclude else None
        _package_copy(other, copymove, change)
        args = [str(other), str(tmp_path / "pairs.json"), "--detector", "dense", "--size", "128"]
        _tool_main("compare_keypoint_maps")(args)
        reports[name] = json.loads(capsys.readouterr().out)
    assert reports["same"]["detector"] == "dense" and reports["same"]["maps_differing"] == 0
    assert reports["changed"]["maps_differing"] == 1


def test_selection_rule_keeps_an_input_within_the_limit_and_never_one_over_it():
    """The input as it is (the first row) must be beaten when it is within the authentic limit;
    over the limit it is no option, so the best row within the limit wins, and a row over the
    limit never does."""
    choose = _tool("selection_rule").choose
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


def _per_image(folder: Path, rows: list[tuple[str, str, str, float, float]]) -> Path:
    folder.mkdir()
    lines = ["setting,index,image,label,pixel_f1,pixel_auc"]
    lines += [f"{s},{i},{img},{label},{f1},{auc}" for i, (s, img, label, f1, auc) in enumerate(rows)]
    (folder / "per_image.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_paired_difference_pairs_images_and_leaves_out_the_rest(tmp_path, capsys):
    """B - A is taken image by image over one setting's manipulated images; authentic rows, other
    settings and metrics undefined in either run stay out, and different image sets are refused."""
    tool = _tool("paired_difference")
    main, paired, read_rows = tool.main, tool.paired, tool.read_rows
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
    script = [sys.executable, str(TOOLS / "export_trained_weights.py"), str(run)]
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


def test_check_against_authors_names_the_missing_wheel_instead_of_a_traceback(tmp_path):
    """The authors' module is fetched by hand; without it the tool says where it looked and how to
    get it, and fails."""
    run = subprocess.run(
        [sys.executable, str(TOOLS / "check_against_authors.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert str(tmp_path / "IMDLBenCo" / "model_zoo" / "sparse_vit" / "sparse_vit.py") in run.stderr
    assert "imdlbenco wheel" in run.stderr


def test_profile_native_times_a_native_scan_and_profiles_it(tmp_path, tiny_weights, monkeypatch, capsys):
    """A 4:3 image of the asked size, timed unprofiled after a warm-up, then the profile's top rows."""
    argv = ["profile_native.py", str(tiny_weights), "--mp", "0.3", "--device", "cpu", "--top", "4"]
    monkeypatch.setattr(sys, "argv", argv)
    _tool_main("profile_native")()
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert re.fullmatch(r"632x474, 1 tiles: \d+\.\d{3} s unprofiled", first), first
    assert "Ordered by: internal time" in out and re.search(r"List reduced from \d+ to 4 ", out)


def test_precision_agreement_reports_rank_drift_only_with_a_reference(
    tmp_path, calib_pairs, tiny_weights, monkeypatch, capsys
):
    """fp32 fast path equals the plain model; bf16's scores and authentic ranks drift within their
    bounds; weights without authentic references (uncalibrated) give no rank drift."""
    from typer.testing import CliRunner

    from imlscan.cli import app

    dataset = calib_pairs
    cal = tmp_path / "cal.safetensors"
    args = ["weights", "calibrate", str(tiny_weights), str(dataset), "--out", str(cal), "--device", "cpu"]
    res = CliRunner().invoke(app, [*args, "--workers", "0", "--max-authentic-fpr", "1"])
    assert res.exit_code == 0, res.output

    def run(weights, *extra):
        argv = ["precision_agreement.py", str(dataset), "--weights", str(weights), *extra]
        monkeypatch.setattr(sys, "argv", argv)
        _tool_main("precision_agreement")()
        return json.loads(capsys.readouterr().out)

    report = run(cal)
    assert report["images"] == 4
    assert report["fast_vs_plain_fp32_max_abs_prob_diff"] < 1e-4
    assert 0.0 <= report["bf16_vs_fp32_score_abs_diff_mean"] <= report["bf16_vs_fp32_score_abs_diff_max"] <= 1.0
    assert 0.0 <= report["bf16_vs_fp32_mask_iou_min"] <= report["bf16_vs_fp32_mask_iou_mean"] <= 1.0
    drift = report["bf16_vs_fp32_authentic_rank_points_diff"]
    assert 0.0 <= drift["mean"] <= drift["p95"] <= drift["max"] <= 100.0
    assert run(tiny_weights, "--limit", "1")["bf16_vs_fp32_authentic_rank_points_diff"] is None
