"""Batch runs: file discovery, sharding, resume, interruption, failures, outputs, exit codes."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.errors import UsageError
from imlscan.imageio import read_prob_png
from imlscan.scanning.batch import (
    BatchOptions,
    find_images,
    parse_shard,
    run_batch,
    select_shard,
    shard_of,
)
from imlscan.scanning.predict import Predictor
from imlscan.weights.store import load_model

runner = CliRunner()


@pytest.fixture
def predictor(tiny_weights):
    return Predictor(load_model(tiny_weights, device="cpu"), size=64)


@pytest.fixture
def tree(tmp_path, rng):
    """in/: 4 good images (two sharing the stem 'a'), one in a subfolder, a bad one, a hidden one."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel, shape in (("a.jpg", (40, 50)), ("a.png", (30, 30)), ("sub/b.png", (20, 36)), ("sub/c.webp", (24, 24))):
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(root / rel)
    (root / "sub" / "broken.jpg").write_text("not a jpeg")
    (root / "notes.txt").write_text("ignored")
    (root / ".hidden" / "x.png").write_bytes((root / "a.png").read_bytes())
    return root


def options(out, **kw) -> BatchOptions:
    kw.setdefault("workers", 0)
    return BatchOptions(out_dir=out, **kw)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --- discovery and shards -------------------------------------------------------------------------


def test_find_images(tree, tmp_path):
    assert find_images(tree) == ["a.jpg", "a.png", "sub/b.png", "sub/broken.jpg", "sub/c.webp"]
    assert find_images(tree, ["*.PNG"]) == ["a.png", "sub/b.png"]
    assert find_images(tree, ["sub/*"]) == ["sub/b.png", "sub/broken.jpg", "sub/c.webp"]
    assert find_images(tree, ["*.txt", "a.*"]) == ["a.jpg", "a.png", "notes.txt"]
    # an output folder inside the input folder is never scanned
    (tree / "out").mkdir()
    Image.new("RGB", (4, 4)).save(tree / "out" / "a.jpg.overlay.png")
    assert "out/a.jpg.overlay.png" not in find_images(tree, exclude=tree / "out")


@pytest.mark.parametrize("spec,expected", [("1/4", (1, 4)), ("4/4", (4, 4)), (" 2 / 3 ", (2, 3)), ("1/1", (1, 1))])
def test_parse_shard(spec, expected):
    assert parse_shard(spec) == expected


@pytest.mark.parametrize("spec", ["0/4", "5/4", "1/0", "a/b", "1", "1/2/3", "-1/2", ""])
def test_parse_shard_invalid(spec):
    with pytest.raises(UsageError):
        parse_shard(spec)


def test_shards_partition_exactly_and_deterministically():
    paths = [f"d{i % 7}/img_{i}.jpg" for i in range(500)]
    for n in (1, 2, 3, 8):
        shards = [select_shard(paths, (k, n)) for k in range(1, n + 1)]
        assert sorted(p for s in shards for p in s) == sorted(paths)  # covers all, no duplicates
        assert shards == [select_shard(paths, (k, n)) for k in range(1, n + 1)]
        if n > 1:
            assert all(len(s) > 500 / n / 2 for s in shards)  # roughly balanced
    # A content hash of the path, not Python's per-process hash(): same shard on every machine.
    assert [shard_of("photos/2024/IMG_0001.jpg", 4), shard_of("a.jpg", 4), shard_of("a.jpg", 3)] == [4, 3, 2]


# --- runs -----------------------------------------------------------------------------------------


def test_batch_outputs_and_failures(tree, tmp_path, predictor):
    out = tmp_path / "out"
    summary = run_batch(tree, predictor, options(out, mask=True, top=2))
    assert (summary.found, summary.selected, summary.processed, summary.failed) == (5, 5, 4, 1)
    assert summary.exit_code == 1
    files = all_files(out)
    for rel in ("a.jpg", "a.png", "sub/b.png", "sub/c.webp"):  # same stem, both kept: extension in the name
        for suffix in (".json", ".overlay.png", ".mask.png", ".thumb.jpg"):
            assert rel + suffix in files
    assert not any(f.startswith("sub/broken") for f in files)
    assert not any(os.path.basename(f).startswith(".") for f in files)
    records = read_jsonl(out / "results.jsonl")
    assert [r["relpath"] for r in records] == ["a.jpg", "a.png", "sub/b.png", "sub/broken.jpg", "sub/c.webp"]
    bad = records[3]
    assert bad["status"] == "error" and "not an image" in bad["error"] and bad["input"]["sha256"]
    ok = [r for r in records if r["status"] == "ok"]
    assert all(r["input"]["sha256"] and r["outputs"]["json"] for r in ok)
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok"] * 4 + ["error"]
    scores = [float(r["score"]) for r in rows[:4]]
    assert scores == sorted(scores, reverse=True)
    assert rows[0]["rank"] == "1" and rows[4]["rank"] == ""
    page = (out / "index.html").read_text()
    assert page.count('class="card"') == 2 and page.count("data:image/jpeg;base64,") == 2
    assert "sub/broken.jpg" in page


def test_contact_sheet_says_how_many_photos_a_warning_concerns(tmp_path, predictor, rng):
    """A per-photo caveat (a small image) is counted on the contact sheet, not stated of them all."""
    from imlscan.defaults import SMALL_IMAGE_SIDE
    from imlscan.scanning.predict import SMALL_IMAGE_WARNING

    root = tmp_path / "in"
    root.mkdir()
    for name, side in (("small.png", 24), ("large.png", SMALL_IMAGE_SIDE)):
        Image.fromarray(rng.integers(0, 256, (side, side + 8, 3), dtype=np.uint8)).save(root / name)
    out = tmp_path / "out"
    assert run_batch(root, predictor, options(out)).small == 1
    records = {r["relpath"]: r for r in read_jsonl(out / "results.jsonl")}
    assert SMALL_IMAGE_WARNING in records["small.png"]["warnings"]
    assert SMALL_IMAGE_WARNING not in records["large.png"]["warnings"]
    page = (out / "index.html").read_text()
    assert "1 of 2 photos: Small image" in page
    assert '<div class="warn">Preprocessing overridden' in page  # size 64: true of every photo, so not counted


def test_resume_skips_then_overwrite_redoes(tree, tmp_path, predictor):
    out = tmp_path / "out"
    first = run_batch(tree, predictor, options(out, globs=["*.png", "*.jpg"]))
    assert (first.processed, first.skipped, first.failed) == (3, 0, 1)
    stamp = (out / "a.jpg.overlay.png").stat().st_mtime_ns
    again = run_batch(tree, predictor, options(out, globs=["*.png", "*.jpg"]))
    assert (again.processed, again.skipped, again.failed) == (0, 3, 1)  # failures are retried
    assert (out / "a.jpg.overlay.png").stat().st_mtime_ns == stamp
    records = read_jsonl(out / "results.jsonl")
    assert sum(r.get("resumed") is True for r in records) == 3
    redo = run_batch(tree, predictor, options(out, globs=["*.png", "*.jpg"], overwrite=True))
    assert (redo.processed, redo.skipped) == (3, 0)


def test_resume_notices_changed_content_settings_and_outputs(tree, tmp_path, predictor, rng):
    out = tmp_path / "out"
    opts = dict(globs=["*.png"])
    run_batch(tree, predictor, options(out, **opts))
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(tree / "a.png")  # new bytes
    s = run_batch(tree, predictor, options(out, **opts))
    assert (s.processed, s.skipped) == (1, 1)
    s = run_batch(tree, predictor, options(out, threshold=0.9, **opts))  # other settings
    assert (s.processed, s.skipped) == (2, 0)
    s = run_batch(tree, predictor, options(out, threshold=0.9, prob=True, **opts))  # an output is missing
    assert (s.processed, s.skipped) == (2, 0)
    assert (out / "a.png.prob.png").is_file()


def test_interrupted_run_leaves_no_partial_files_and_resumes(tree, tmp_path, predictor):
    out = tmp_path / "out"
    seen = []

    def stop_after_two(record):
        seen.append(record["relpath"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(tree, predictor, options(out, batch_size=1), on_result=stop_after_two)
    files = all_files(out)
    assert not any(os.path.basename(f).startswith(".") for f in files)  # no temporaries
    assert [r["relpath"] for r in read_jsonl(out / "results.jsonl")] == seen  # what was done is recorded
    assert "sub/c.webp.json" not in files
    # A kill in the middle of an image: its report (written last) is missing, a temporary is left.
    (out / "a.png.json").unlink()
    (out / ".a.png.overlay.png.x1y2.part.png").write_bytes(b"half")
    s = run_batch(tree, predictor, options(out))
    assert (s.processed, s.skipped, s.failed) == (3, 1, 1)  # a.png redone, a.jpg kept
    assert not (out / ".a.png.overlay.png.x1y2.part.png").exists()
    assert (out / "a.png.json").is_file()


def test_worker_processes_match_inline(tree, tmp_path, predictor):
    inline = run_batch(tree, predictor, options(tmp_path / "o1", globs=["*.png", "*.webp", "*.jpg"]))
    pooled = run_batch(tree, predictor, options(tmp_path / "o2", globs=["*.png", "*.webp", "*.jpg"], workers=2))
    assert (pooled.processed, pooled.failed) == (inline.processed, inline.failed) == (4, 1)
    a = {r["relpath"]: (r["status"], r.get("score")) for r in read_jsonl(tmp_path / "o1" / "results.jsonl")}
    b = {r["relpath"]: (r["status"], r.get("score")) for r in read_jsonl(tmp_path / "o2" / "results.jsonl")}
    assert a == b


def test_empty_shard_and_no_images(tmp_path, predictor):
    root = tmp_path / "in"
    root.mkdir()
    with pytest.raises(UsageError, match="no images"):
        run_batch(root, predictor, options(tmp_path / "o"))
    Image.new("RGB", (8, 8)).save(root / "only.png")
    k = shard_of("only.png", 2)
    s = run_batch(root, predictor, options(tmp_path / "o", shard=(3 - k, 2)))
    assert (s.found, s.selected, s.exit_code) == (1, 0, 0)
    assert (tmp_path / "o" / f"results.shard-{3 - k}-of-2.jsonl").read_text() == ""


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_shards_split_a_folder(tree, tmp_path, tiny_weights):
    out = tmp_path / "out"
    done = []
    for k in (1, 2, 3):
        args = ["batch", str(tree), "--out", str(out), "--shard", f"{k}/3", "--workers", "0", "--size", "64"]
        res = runner.invoke(app, [*args, "--weights", str(tiny_weights), "--glob", "*.png", "--glob", "*.jpg"])
        assert res.exit_code in (0, 1), res.output
        done += [r["relpath"] for r in read_jsonl(out / f"results.shard-{k}-of-3.jsonl")]
        assert (out / f"summary.shard-{k}-of-3.csv").is_file() and (out / f"index.shard-{k}-of-3.html").is_file()
    assert sorted(done) == ["a.jpg", "a.png", "sub/b.png", "sub/broken.jpg"]
    assert not (out / "results.jsonl").exists()


def test_cli_exit_codes(tree, tmp_path, tiny_weights):
    base = ["--workers", "0", "--size", "64", "--weights", str(tiny_weights)]
    res = runner.invoke(app, ["batch", str(tree), "--out", str(tmp_path / "o1"), "--glob", "*.png", *base])
    assert res.exit_code == 0, res.output
    assert "2 scanned" in res.stderr
    assert "note: 2 photo(s) under 192 px" in " ".join(res.stderr.split())  # both are tiny
    res = runner.invoke(app, ["batch", str(tree), "--out", str(tmp_path / "o2"), *base])
    assert res.exit_code == 1
    assert "broken.jpg" in res.stderr and "Traceback" not in res.output
    for bad in (["--shard", "0/3"], ["--shard", "x"], ["--batch-size", "0"], ["--mode", "zoom"]):
        res = runner.invoke(app, ["batch", str(tree), "--out", str(tmp_path / "o3"), *base, *bad])
        assert res.exit_code == 2, (bad, res.output)
    res = runner.invoke(app, ["batch", str(tmp_path / "missing"), "--out", str(tmp_path / "o3"), *base])
    assert res.exit_code == 2 and "not found" in res.stderr
    res = runner.invoke(app, ["batch", str(tree), "--out", str(tmp_path / "o3"), "--glob", "*.tif", *base])
    assert res.exit_code == 2 and "no images" in res.stderr
    assert not (tmp_path / "o3").exists()


def test_killed_run_leaves_only_complete_files(tmp_path, tiny_weights, rng):
    """A real SIGKILL in the middle of a run: every file under its final name is complete, and
    a re-run finishes the job without redoing what was done."""
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "in"
    root.mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / f"img{i:02d}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "imlscan", "batch", str(root), "--out", str(out), "--workers", "0"]
    cmd += ["--batch-size", "1", "--size", "64", "--mask", "--prob", "--weights", str(tiny_weights)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(list(out.glob("*.json"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finals = [p for p in out.glob("*") if not p.name.startswith(".")]
    for p in finals:
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.name.endswith(".prob.png"):
            assert read_prob_png(p).shape == (48, 64)
        elif p.suffix in (".png", ".jpg"):
            assert Image.open(p).load() is not None
    done = len([p for p in finals if p.suffix == ".json"])  # not the killed write's hidden temporary
    assert done < 40  # really interrupted
    s = run_batch(root, Predictor(load_model(tiny_weights, device="cpu"), size=64), options(out, mask=True, prob=True))
    assert s.skipped == done and s.processed == 40 - done and s.failed == 0
    assert not [p for p in out.glob(".*")]


def test_names_that_only_look_like_outputs_are_still_photos(tmp_path, predictor, rng):
    """Only imlscan's own outputs are left out of an input folder that is also the output
    folder: a photo called like one, with no source or report beside it, is scanned."""
    root = tmp_path / "in"
    root.mkdir()
    for name in ("holiday.thumb.jpg", "x.overlay.png", "x.png"):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / name)
    assert find_images(root, exclude=root) == ["holiday.thumb.jpg", "x.overlay.png", "x.png"]
    run_batch(root, predictor, options(root))
    assert find_images(root, exclude=root) == ["holiday.thumb.jpg", "x.overlay.png", "x.png"]
    assert (root / "x.png.overlay.png").is_file() and (root / "holiday.thumb.jpg.thumb.jpg").is_file()
