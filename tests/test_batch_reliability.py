"""The output folder of scan and batch: one run at a time, never mixed with the input, names
that never collide or overflow, write failures named, clean shutdown, and text that cannot
turn into a formula, an escape sequence or a broken link (issue #39)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imlscan.cli import app
from imlscan.errors import ImlscanError
from imlscan.fsutil import acquire_lock, fit_name, temp_prefix
from imlscan.scanning.batch import BatchOptions, find_images, lock_name, run_batch, shard_of
from imlscan.scanning.predict import Predictor
from imlscan.weights.store import load_model

runner = CliRunner()
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
NO_DAC = ["--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture
def predictor(tiny_weights):
    return Predictor(load_model(tiny_weights, device="cpu"), size=64)


def save(path: Path, rng, shape=(24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def photos(tmp_path, rng):
    root = tmp_path / "in"
    for rel in ("a.png", "b.png", "sub/c.png"):
        save(root / rel, rng)
    return root


def options(out, **kw) -> BatchOptions:
    kw.setdefault("workers", 0)
    return BatchOptions(out_dir=out, **kw)


def strict_jsonl(path: Path) -> list[dict]:
    def refuse(constant):
        raise ValueError(f"bare {constant}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def cli(args: list[str], weights: Path, runner_=runner):
    return runner_.invoke(app, [*args, "--weights", str(weights), "--size", "64"])


def batch_cmd(root: Path, out: Path, weights: Path) -> list[str]:
    return [sys.executable, "-m", "imlscan", "batch", str(root), "--out", str(out), "--weights", str(weights)]


def unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` run without the power to read or write every file: as is for a normal user; for
    root, with the capabilities that bypass file permissions dropped (root reads everything)."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None or subprocess.run([setpriv, *NO_DAC, "true"], capture_output=True).returncode != 0:
        pytest.skip("runs as root, which reads every file, and cannot drop that power here (setpriv)")
    return [setpriv, *NO_DAC, *cmd]


def wait_for(cond, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


# --- one run at a time ----------------------------------------------------------------------------


def test_a_folder_in_use_is_refused_naming_its_owner(photos, tmp_path, predictor, tiny_weights):
    out = tmp_path / "out"
    out.mkdir()
    live = subprocess.Popen(["sleep", "30"])
    try:
        lock = out / lock_name(None)
        lock.write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}))
        with pytest.raises(ImlscanError, match=rf"in use by another imlscan run \(pid {live.pid} on "):
            run_batch(photos, predictor, options(out))
        assert lock.is_file() and not (out / "a.png.json").exists()  # nothing written, the lock left alone
    finally:
        live.kill()
        live.wait()
    # A real holder: a lock taken (flock) by another open of the file, as a concurrent run does.
    with acquire_lock(out / lock_name(None)):
        res = cli(["batch", str(photos), "--out", str(out), "--workers", "0"], tiny_weights)
        assert res.exit_code == 1 and "in use by another imlscan run" in res.stderr
        assert len(res.stderr.strip().splitlines()) <= 3 and "unexpected" not in res.stderr
    assert not (out / lock_name(None)).exists()  # released, removed


def test_a_stale_lock_is_taken_over_with_a_note_and_every_exit_releases(photos, tmp_path, predictor):
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid runs nothing now
    (out / lock_name(None)).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    notes: list[str] = []
    s = run_batch(photos, predictor, options(out), log=notes.append)
    assert s.processed == 3
    assert any("took over the lock" in n and str(gone.pid) in n for n in notes)
    assert not (out / lock_name(None)).exists()

    def stop(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(photos, predictor, options(out, overwrite=True), on_result=stop)
    assert not (out / lock_name(None)).exists()
    assert run_batch(photos, predictor, options(out)).skipped == 3


def test_shards_lock_their_own_name_and_a_whole_run_waits_for_them(tmp_path, rng, predictor):
    root = tmp_path / "in"
    names = [f"p{i}.png" for i in range(8)]
    for n in names:
        save(root / n, rng)
    out = tmp_path / "out"
    out.mkdir()
    with acquire_lock(out / lock_name((1, 2))):
        s = run_batch(root, predictor, options(out, shard=(2, 2)))  # the other shard works beside it
        assert s.processed == sum(shard_of(n, 2) == 2 for n in names) and s.failed == 0
        with pytest.raises(ImlscanError, match="in use"):
            run_batch(root, predictor, options(out))
        with pytest.raises(ImlscanError, match="in use"):
            run_batch(root, predictor, options(out, shard=(1, 2)))
    assert run_batch(root, predictor, options(out, shard=(1, 2))).failed == 0
    done = strict_jsonl(out / "results.shard-1-of-2.jsonl") + strict_jsonl(out / "results.shard-2-of-2.jsonl")
    assert sorted(r["relpath"] for r in done) == names


# --- never the input ------------------------------------------------------------------------------


@pytest.mark.parametrize("globs", [[], ["*.png"], ["*"]])
def test_out_equal_to_the_input_folder_never_scans_its_own_outputs(photos, predictor, globs):
    first = run_batch(photos, predictor, options(photos, globs=globs, html=True, mask=True))
    again = run_batch(photos, predictor, options(photos, globs=globs, html=True, mask=True))
    assert first.found == again.found == 3
    assert (again.skipped, again.processed, again.failed) == (3, 0, 0)
    assert find_images(photos, globs, exclude=photos) == ["a.png", "b.png", "sub/c.png"]


def test_out_inside_the_input_folder_is_left_out(photos, predictor):
    out = photos / "results"
    run_batch(photos, predictor, options(out))
    assert run_batch(photos, predictor, options(out)).found == 3


# --- nothing skipped silently ---------------------------------------------------------------------


def test_an_unreadable_folder_is_a_recorded_failure(photos, tmp_path, tiny_weights, rng):
    save(photos / "locked" / "hidden_photo.png", rng)
    (photos / "locked").chmod(0)
    out = tmp_path / "out"
    try:
        cmd = unprivileged(batch_cmd(photos, out, tiny_weights) + ["--workers", "0", "--size", "64"])
        res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    finally:
        (photos / "locked").chmod(0o755)
    assert res.returncode == 1, res.stderr
    assert "locked: cannot read this folder (Permission denied)" in res.stderr
    records = {r["relpath"]: r for r in strict_jsonl(out / "results.jsonl")}
    assert set(records) == {"a.png", "b.png", "locked", "sub/c.png"}
    assert records["locked"]["status"] == "error" and "its photos were not scanned" in records["locked"]["error"]
    with open(out / "summary.csv", newline="") as f:
        rows = {r["relpath"]: r for r in csv.DictReader(f)}
    assert rows["locked"]["status"] == "error"


def test_a_fifo_named_like_a_photo_fails_alone_and_never_hangs(photos, tmp_path, tiny_weights):
    os.mkfifo(photos / "pipe.jpg")
    out = tmp_path / "out"
    cmd = batch_cmd(photos, out, tiny_weights) + ["--workers", "0", "--size", "64"]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    records = {r["relpath"]: r["status"] for r in strict_jsonl(out / "results.jsonl")}
    assert records == {"a.png": "ok", "b.png": "ok", "pipe.jpg": "error", "sub/c.png": "ok"}


# --- names ----------------------------------------------------------------------------------------


def test_scans_of_two_files_with_one_name_keep_both_reports(tmp_path, tiny_weights, rng):
    one, two = save(tmp_path / "d1" / "x.png", rng), save(tmp_path / "d2" / "x.png", rng, (30, 20))
    out = tmp_path / "out"
    for path in (one, two, one, two):
        res = cli(["scan", str(path), "--out", str(out)], tiny_weights)
        assert res.exit_code == 0, res.output
    reports = sorted(out.glob("*.json"))
    assert len(reports) == 2  # the second kept apart, each re-scan replaced its own
    sources = {json.loads(p.read_text())["input"]["path"] for p in reports}
    assert sources == {str(one), str(two)}
    assert (out / "x.json").is_file() and json.loads((out / "x.json").read_text())["input"]["path"] == str(one)
    assert all((out / (p.name[: -len(".json")] + ".overlay.png")).is_file() for p in reports)


def test_a_255_byte_name_is_shortened_stably(tmp_path, predictor, tiny_weights, rng):
    root = tmp_path / "in"
    long_a = "é" * 120 + "-a.png"  # 246 bytes of UTF-8
    long_b = "é" * 120 + "-b.png"  # differs only past the cut
    for n in (long_a, long_b, "short.png"):
        save(root / n, rng)
    out = tmp_path / "out"
    s = run_batch(root, predictor, options(out, mask=True, prob=True, html=True))
    assert (s.processed, s.failed) == (3, 0)
    names = [p.name for p in out.iterdir()]
    assert max(len(n.encode()) for n in names) <= 255
    reports = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert sorted(r["relpath"] for r in reports) == sorted([long_a, long_b, "short.png"])
    assert "short.png.json" in names
    assert run_batch(root, predictor, options(out, mask=True, prob=True, html=True)).skipped == 3  # stable
    res = cli(["scan", str(root / long_a), "--out", str(tmp_path / "scan")], tiny_weights)
    assert res.exit_code == 0, res.output
    assert max(len(p.name.encode()) for p in (tmp_path / "scan").iterdir()) <= 255
    assert fit_name(long_a, 12) != fit_name(long_b, 12)
    assert len(temp_prefix("x" * 250).encode()) < 130


# --- write failures -------------------------------------------------------------------------------


def test_out_pointing_at_a_file_is_one_clear_line(photos, tmp_path, tiny_weights):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    for args in (["batch", str(photos), "--workers", "0"], ["scan", str(photos / "a.png")]):
        res = cli([*args, "--out", str(blocker)], tiny_weights)
        assert res.exit_code == 1, res.output
        assert f"cannot write to {blocker}: not a folder" in res.stderr, res.stderr
        assert "unexpected" not in res.stderr and "report it" not in res.stderr


def test_a_failed_write_mid_run_is_named_and_what_was_done_is_recorded(photos, tmp_path, predictor):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the mirrored folder goes")
    with pytest.raises(ImlscanError, match=r"cannot write to .*sub.*: not a folder"):
        run_batch(photos, predictor, options(out, batch_size=1))
    assert [r["relpath"] for r in strict_jsonl(out / "results.jsonl")] == ["a.png", "b.png"]


def test_a_read_only_out_folder_is_one_clear_line(photos, tmp_path, tiny_weights):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        cmd = unprivileged(batch_cmd(photos, out, tiny_weights) + ["--workers", "0", "--size", "64"])
        res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    finally:
        out.chmod(0o755)
    assert res.returncode == 1
    assert f"cannot write to {out}" in res.stderr and "Permission denied" in res.stderr, res.stderr
    assert "unexpected" not in res.stderr and "Traceback" not in res.stderr


# --- clean shutdown -------------------------------------------------------------------------------


@pytest.fixture
def many(tmp_path, rng):
    root = tmp_path / "many"
    for i in range(40):
        save(root / f"img{i:02d}.png", rng, (48, 64))
    return root


def test_sigterm_writes_the_results_of_what_was_done_and_exits_143(many, tmp_path, tiny_weights):
    out = tmp_path / "out"
    cmd = batch_cmd(many, out, tiny_weights) + ["--workers", "1", "--batch-size", "1", "--size", "64", "--html"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(out.glob("img*.json")) or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    records = strict_jsonl(out / "results.jsonl")
    assert 1 <= len(records) < 40 and all(r["status"] == "ok" for r in records)
    assert (out / "summary.csv").is_file() and (out / "index.html").is_file()
    assert not (out / lock_name(None)).exists() and not list(out.glob(".*"))


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids |= {int(k) for k in (task / "children").read_text().split()}
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_workers_die_with_a_killed_parent(many, tmp_path, tiny_weights):
    out = tmp_path / "out"
    cmd = batch_cmd(many, out, tiny_weights) + ["--workers", "2", "--batch-size", "1", "--size", "64"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(_children(proc.pid)) >= 2 and any(out.glob("img*.json")))
        workers = _children(proc.pid)
        proc.kill()
        proc.wait()
        assert wait_for(lambda: not any(_alive(w) for w in workers), timeout=10), "workers outlived their parent"
    finally:
        proc.kill()
        for w in _children(proc.pid):
            os.kill(w, signal.SIGKILL)


def test_temporaries_of_a_killed_run_are_cleaned_on_the_next(photos, tmp_path, predictor):
    out = tmp_path / "out"
    run_batch(photos, predictor, options(out))
    left = [out / ".index.html.k2j4h5g6.part.html", out / "sub" / ".c.png.json.abcd1234.part.json"]
    for p in left:
        p.write_text("half")
    (out / ".keep").write_text("not ours")
    run_batch(photos, predictor, options(out))
    assert not any(p.exists() for p in left) and (out / ".keep").exists()
    # A shard leaves the other shards' temporaries alone: they may be writing them now.
    other = next(n for n in (f"x{i}.png" for i in range(20)) if shard_of(n, 2) == 2)
    save(photos / other, np.random.default_rng(0))
    theirs = out / f".{other}.overlay.png.abcd1234.part.png"
    mine = out / ".index.shard-1-of-2.html.zzzz9999.part.html"
    theirs.write_text("in flight")
    mine.write_text("half")
    run_batch(photos, predictor, options(out, shard=(1, 2)))
    assert theirs.exists() and not mine.exists()


# --- output hygiene -------------------------------------------------------------------------------


def test_formula_like_names_are_neutralised_in_summary_csv(tmp_path, predictor, rng):
    root = tmp_path / "in"
    names = ["=HYPERLINK(1).png", "+1.png", "-2.png", "@SUM(A1).png"]
    for n in names:
        save(root / n, rng)
    out = tmp_path / "out"
    run_batch(root, predictor, options(out))
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["relpath"] for r in rows) == sorted("'" + n for n in names)
    assert all(not r["json"].startswith(("=", "+", "-", "@")) for r in rows)
    assert sorted(r["relpath"] for r in strict_jsonl(out / "results.jsonl")) == sorted(names)  # JSON as is


def test_index_links_are_url_encoded(tmp_path, predictor, rng):
    root = tmp_path / "in"
    name = "a #1 ?x=50% b.png"
    save(root / name, rng)
    out = tmp_path / "out"
    run_batch(root, predictor, options(out))
    page = (out / "index.html").read_text()
    assert 'href="a%20%231%20%3Fx%3D50%25%20b.png.overlay.png"' in page
    assert (out / f"{name}.overlay.png").is_file()


def test_hostile_names_reach_the_terminal_escaped(tmp_path, tiny_weights, rng):
    root = tmp_path / "in"
    evil = "\x1b[2J[bold red]boom\nline.jpg"  # no "/": a file name cannot hold one
    (root / "sub").mkdir(parents=True)
    (root / evil).write_bytes(b"not a photo")
    shown_ok = save(root / "sub" / "[red]ok\x1b[0m.png", rng)
    res = cli(["batch", str(root), "--out", str(tmp_path / "out"), "--workers", "0"], tiny_weights)
    assert res.exit_code == 1
    assert "\x1b" not in res.stderr and "\\x1b[2J[bold red]boom\\nline.jpg" in res.stderr
    res = cli(["scan", str(shown_ok), str(root / evil), "--out", str(tmp_path / "s")], tiny_weights)
    assert res.exit_code == 1
    flat = "".join(res.stderr.split())
    assert "\x1b" not in res.stderr and "[red]ok\\x1b[0m.png" in flat and "[boldred]boom" in flat


def test_json_on_stdout_is_strict(tmp_path, tiny_weights, rng):
    from imlscan.cli.app import stdout_json

    with pytest.raises(ImlscanError, match=r"\$\.timings\.inference_s"):
        stdout_json({"timings": {"inference_s": float("nan")}})
    res = cli(["scan", str(save(tmp_path / "p.png", rng)), "--out", str(tmp_path / "o"), "--json"], tiny_weights)
    assert res.exit_code == 0
    json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"bare {c}"))
