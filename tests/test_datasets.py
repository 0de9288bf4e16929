"""Dataset layouts, mask reading, ``eval --check`` and ``--fix-masks`` on real tiny files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.data import check_dataset, load_dataset, read_mask
from imlscan.errors import ImlscanError

runner = CliRunner()


def _img(path, rng, h=24, w=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _mask(path, h=24, w=32, values=(0, 255)):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.full((h, w), values[0], np.uint8)
    m[4:12, 6:20] = values[1]
    Image.fromarray(m).save(path)
    return path


def test_json_negative_and_relative_paths(tmp_path, rng, monkeypatch):
    root = tmp_path / "bench"
    _img(root / "img" / "a.png", rng)
    _img(root / "img" / "b.jpg", rng)
    _mask(root / "gt" / "a.png")
    (root / "list.json").write_text(json.dumps([["img/a.png", "gt/a.png"], ["img/b.jpg", "Negative"]]))
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the JSON's folder, not the cwd
    ds = load_dataset("bench/list.json")
    assert ds.name == "list" and ds.layout == "json"
    assert [s.image_path for s in ds.items] == [root / "img" / "a.png", root / "img" / "b.jpg"]
    assert ds.items[0].mask_path == root / "gt" / "a.png" and ds.items[1].mask_path is None
    assert (ds.n_manipulated, ds.n_authentic) == (1, 1)
    assert load_dataset(f"casia={root / 'list.json'}").name == "casia"


@pytest.mark.parametrize(
    "content, words",
    [('{"a": 1}', "JSON list"), ('[["x.png"]]', "entry 0"), ("[1, 2]", "entry 0"), ("[[", "not valid JSON")],
)
def test_json_errors_are_clear(tmp_path, content, words):
    p = tmp_path / "d.json"
    p.write_text(content)
    with pytest.raises(ImlscanError, match=words):
        load_dataset(p)


def test_tp_gt_folder_with_suffixes_and_au(tmp_path, rng):
    root = tmp_path / "CASIA"
    for stem in ("x1", "x2", "x3", "x4", "lonely"):
        _img(root / "Tp" / f"{stem}.jpg", rng)
    _mask(root / "Gt" / "x1_gt.png")
    _mask(root / "Gt" / "x2-mask.png")
    _mask(root / "Gt" / "X3.tif")  # same stem, other case and extension
    _mask(root / "Gt" / "x4_mask.bmp")
    _mask(root / "Gt" / "orphan_gt.png")
    _img(root / "au" / "real.png", rng)
    ds = load_dataset(root)
    pairs = {s.image_path.stem: (s.mask_path.name if s.mask_path else None) for s in ds.items}
    assert pairs == {"x1": "x1_gt.png", "x2": "x2-mask.png", "x3": "X3.tif", "x4": "x4_mask.bmp", "real": None}
    kinds = {(p.kind, p.path.split("/")[-1]) for p in ds.problems}
    assert kinds == {("missing_mask", "lonely.jpg"), ("orphan_mask", "orphan_gt.png")}


def test_folder_without_tp_gt_is_an_error(tmp_path, rng):
    _img(tmp_path / "d" / "a.png", rng)
    with pytest.raises(ImlscanError, match="Tp/ and Gt/"):
        load_dataset(tmp_path / "d")
    with pytest.raises(ImlscanError, match="not found"):
        load_dataset(tmp_path / "nope")


def test_read_mask_binarization_rules(tmp_path):
    m = np.array([[0, 127, 128, 255]], np.uint8)
    Image.fromarray(m).save(tmp_path / "gray.png")
    assert read_mask(tmp_path / "gray.png").tolist() == [[False, False, True, True]]
    Image.fromarray(np.array([[0, 1, 1, 0]], np.uint8)).save(tmp_path / "labels.png")  # 0/1 label map
    assert read_mask(tmp_path / "labels.png").tolist() == [[False, True, True, False]]
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 1] = (255, 0, 0)  # pure red: dark as luma, but a marked pixel
    Image.fromarray(rgb).save(tmp_path / "red.png")
    assert read_mask(tmp_path / "red.png").tolist() == [[False, True, False]]
    Image.fromarray(np.array([[0, 40000, 30000]], np.uint16)).save(tmp_path / "m16.png")
    assert read_mask(tmp_path / "m16.png").tolist() == [[False, True, False]]
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1").save(tmp_path / "bw.png")
    assert read_mask(tmp_path / "bw.png").tolist() == [[False, True]]


def _planted(tmp_path, rng):
    root = tmp_path / "planted"
    good = _img(root / "good.png", rng)
    copy = root / "copy.png"
    copy.write_bytes(good.read_bytes())  # same content, other path
    _img(root / "small.png", rng)
    _img(root / "gray.png", rng)
    _img(root / "blank.png", rng)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _mask(root / "m_good.png")
    _mask(root / "m_small.png", h=12, w=16)  # size mismatch
    _mask(root / "m_gray.png", values=(0, 200))  # non-binary
    _mask(root / "m_blank.png", values=(0, 0))  # empty mask on a tampered image
    pairs = [
        ["good.png", "m_good.png"],
        ["copy.png", "m_good.png"],
        ["good.png", "m_good.png"],  # same path twice
        ["small.png", "m_small.png"],
        ["gray.png", "m_gray.png"],
        ["blank.png", "m_blank.png"],
        ["broken.png", "Negative"],
        ["missing.png", "Negative"],
    ]
    (root / "d.json").write_text(json.dumps(pairs))
    return root


def test_check_finds_each_planted_problem(tmp_path, rng):
    root = _planted(tmp_path, rng)
    res = check_dataset(load_dataset(root / "d.json"), workers=2)
    found = {(p.kind, p.path.split("/")[-1]) for p in res.problems}
    assert found == {
        ("duplicate", "copy.png"),
        ("duplicate", "good.png"),
        ("size_mismatch", "m_small.png"),
        ("non_binary", "m_gray.png"),
        ("empty_mask", "m_blank.png"),
        ("unreadable", "broken.png"),
        ("missing", "missing.png"),
    }
    assert {p.kind for p in res.problems if p.fixable} == {"size_mismatch", "non_binary"}


def test_fix_masks_writes_a_new_folder_and_never_touches_the_data(tmp_path, rng):
    root = _planted(tmp_path, rng)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()}
    logs = []
    fixed_dir = tmp_path / "fixed"
    res = check_dataset(load_dataset(root / "d.json"), fix_dir=fixed_dir, log=logs.append)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()} == before
    assert {f["mask"].split("/")[-1] for f in res.fixes} == {"m_small.png", "m_gray.png"}
    assert len([m for m in logs if m.startswith("fixed ")]) == 2
    assert not {p.kind for p in res.problems} & {"size_mismatch", "non_binary"}
    fixed = {f["mask"].split("/")[-1]: f["fixed_mask"] for f in res.fixes}
    small = np.asarray(Image.open(fixed["m_small.png"]))
    assert small.shape == (24, 32) and set(np.unique(small)) <= {0, 255}
    assert small[8:24, 12:40].all() and not small[:8].any()  # nearest x2: rows 4-12 -> 8-24
    assert set(np.unique(np.asarray(Image.open(fixed["m_gray.png"])))) == {0, 255}
    assert json.loads((fixed_dir / "fixes.json").read_text()) == res.fixes
    again = check_dataset(load_dataset(res.fixed_dataset))
    assert not {p.kind for p in again.problems} & {"size_mismatch", "non_binary"}
    with pytest.raises(ImlscanError, match="not empty"):
        check_dataset(load_dataset(root / "d.json"), fix_dir=fixed_dir)


def test_cli_check_json_and_exit_codes(tmp_path, rng):
    root = _planted(tmp_path, rng)
    res = runner.invoke(app, ["eval", "--check", str(root / "d.json"), "--json", "--workers", "1"])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["n_images"] == 8 and doc["n_problems"] == len(doc["problems"]) == 7
    assert "size_mismatch" in res.stderr and "Traceback" not in res.output
    clean = tmp_path / "clean"
    _img(clean / "a.png", rng)
    _mask(clean / "a_gt.png")
    (clean / "d.json").write_text(json.dumps([["a.png", "a_gt.png"]]))
    res = runner.invoke(app, ["eval", "--check", str(clean / "d.json")])
    assert res.exit_code == 0 and "no problems" in res.stderr
    out = tmp_path / "fixed-cli"
    res = runner.invoke(app, ["eval", "--check", str(root / "d.json"), "--fix-masks", "--out", str(out)])
    assert res.exit_code == 1  # unfixable problems remain
    assert (out / "dataset.json").is_file() and "fix: fixed" in res.stderr
    res = runner.invoke(app, ["eval", str(root / "d.json"), "--fix-masks"])
    assert res.exit_code == 2 and "--check" in res.stderr
