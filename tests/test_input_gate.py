"""The one input gate: only regular files of a bounded size are read, the pixel and memory budget
is checked from the header before decoding, and Pillow's bomb guard is never switched off for the
process. Whatever could hang or fill the memory on a regression runs in a child process with a
timeout and an address-space limit, so a failing test fails instead of taking the machine down."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image
from test_imageio import _png_header_only

from imlscan import inputgate
from imlscan.data import check_dataset, load_dataset, read_rgb
from imlscan.errors import ImlscanError
from imlscan.imageio import decode_bytes, read_file
from imlscan.scanning.traces import DEFAULT_TRACES, Photo, compute_traces

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file kinds")
CHILD_MEMORY = 3 << 30


def isolated(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python with a timeout and at most CHILD_MEMORY of address space."""

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))

    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=limit,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout} s:\n{code}")


def test_a_fifo_is_refused_by_every_reader_without_hanging(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    (tmp_path / "pairs.json").write_text(json.dumps([["photo.jpg", "Negative"]]))
    r = isolated(
        f"""
        from pathlib import Path
        from imlscan.errors import ImlscanError
        from imlscan.imageio import load_image, read_file
        from imlscan.data.datasets import image_size, read_rgb
        from imlscan.data.synth import load_rgb
        for read in (read_file, load_image, read_rgb, image_size, load_rgb):
            try:
                read(Path({str(fifo)!r}))
            except ImlscanError as e:
                print(e.message)
        """,
        timeout=60,
    )
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 5, r.stderr[-2000:]
    assert all(f"{fifo}: is a FIFO (named pipe), not a regular file" in line for line in lines), lines
    # eval --check names it as what it is, not as a missing file
    problems = check_dataset(load_dataset(tmp_path / "pairs.json")).problems
    assert [(p.kind, "FIFO" in p.detail) for p in problems] == [("unreadable", True)]


def test_scan_of_a_fifo_fails_with_one_line_and_goes_on(tmp_path, tiny_weights):
    from typer.testing import CliRunner

    from imlscan.cli import app

    fifo = tmp_path / "a.jpg"
    os.mkfifo(fifo)
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(tmp_path / "b.png")
    done, hung = threading.Event(), []

    def watchdog() -> None:  # a reader blocked on the FIFO is released by a writer that closes at once
        if not done.wait(30):
            hung.append(True)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=watchdog, daemon=True).start()
    args = ["scan", str(fifo), str(tmp_path / "b.png"), "--no-overlay", "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, [*args, "--weights", str(tiny_weights)])
    done.set()
    assert not hung, "imlscan scan blocked on a FIFO"
    assert res.exit_code != 0 and isinstance(res.exception, (SystemExit, type(None)))  # an error, not a crash
    assert "is a FIFO (named pipe), not a regular file" in res.output
    assert (tmp_path / "out" / "b.json").is_file()


def test_a_symlink_to_dev_zero_is_refused_without_reading(tmp_path):
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    r = isolated(
        f"""
        import resource
        from pathlib import Path
        from imlscan.errors import ImlscanError
        from imlscan.imageio import load_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_image(Path({str(link)!r}))
        except ImlscanError as e:
            print(e.message)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    assert r.returncode == 0, r.stderr[-2000:]
    message, grown_kb = r.stdout.splitlines()
    assert message == f"{link} -> /dev/zero: is a character device, not a regular file"
    assert int(grown_kb) < 50_000


def test_sockets_and_block_devices_are_named(tmp_path):
    sock = socket.socket(socket.AF_UNIX)
    path = tmp_path / "s.png"
    try:
        sock.bind(str(path))
    except OSError as e:  # a tmp path too long for AF_UNIX
        pytest.skip(f"cannot bind a socket: {e}")
    with sock, pytest.raises(ImlscanError, match="s.png: is a socket, not a regular file") as e:
        read_file(path)
    assert "regular files only" in e.value.hint
    block = next((p for p in sorted(os.scandir("/dev"), key=lambda p: p.name) if _is_block(p.path)), None)
    if block is not None:
        (tmp_path / "disk.jpg").symlink_to(block.path)
        with pytest.raises(ImlscanError, match="is a block device, not a regular file"):
            read_file(tmp_path / "disk.jpg")


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def test_size_is_checked_before_reading_and_the_read_is_bounded(tmp_path):
    huge = tmp_path / "video.jpg"
    with open(huge, "wb") as f:
        f.truncate(3_000_000_000)  # sparse: no disk used
    r = isolated(
        f"""
        from pathlib import Path
        from imlscan.errors import ImlscanError
        from imlscan.imageio import read_file
        try:
            read_file(Path({str(huge)!r}))
        except ImlscanError as e:
            print(e.message)
        """
    )
    assert r.returncode == 0 and "3.0 GB, larger than the 1.1 GB limit for an input file" in r.stdout, r.stderr
    small = tmp_path / "small.jpg"
    small.write_bytes(b"x" * 1000)
    assert read_file(small, max_bytes=1000) == b"x" * 1000
    with pytest.raises(ImlscanError, match="small.jpg: 1,000 bytes, larger than the 999 bytes limit"):
        read_file(small, max_bytes=999)
    if os.path.exists("/proc/self/maps"):  # reports size 0 but holds more: the read itself stops
        assert len(read_file("/proc/self/maps")) > 64
        with pytest.raises(ImlscanError, match="size changed while it was read"):
            read_file("/proc/self/maps", max_bytes=64)


def test_header_only_bomb_without_a_pixel_limit_is_refused_by_memory_before_decoding():
    data = _png_header_only(200_000, 200_000)  # 40 gigapixels in 57 bytes
    t = time.perf_counter()
    with pytest.raises(ImlscanError) as e:
        decode_bytes(data, name="bomb.png", max_pixels=None)
    assert time.perf_counter() - t < 2
    assert "bomb.png: 40,000 megapixels (200000x200000) need about 2,560.0 GB of memory" in e.value.message
    assert "is available" in e.value.message and "--max-pixels" in e.value.hint


def test_the_225_megapixel_probe_is_refused_where_memory_is_short(monkeypatch):
    data = _png_header_only(15_000, 15_000)  # under the 250 MP limit: only the memory check can stop it
    monkeypatch.setattr(inputgate, "available_memory", lambda: 4_000_000_000)
    with pytest.raises(ImlscanError) as e:
        decode_bytes(data, name="probe.png")
    assert e.value.message == (
        "probe.png: 225 megapixels (15000x15000) need about 14.4 GB of memory to decode and scan, "
        "only 4.0 GB is available"
    )
    monkeypatch.setattr(inputgate, "available_memory", lambda: None)  # unknown: no memory check
    with pytest.raises(ImlscanError, match="truncated or corrupt"):
        decode_bytes(data, name="probe.png")


def test_importing_the_dataset_readers_leaves_pillows_guard_on():
    r = isolated(
        """
        import imlscan.data.datasets, imlscan.data.synth, imlscan.eval, imlscan.eval.evaluate
        from PIL import Image
        print(Image.MAX_IMAGE_PIXELS)
        """
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(int(1024 * 1024 * 1024 // 4 // 3))  # Pillow's own default


def test_unlimited_decodes_and_dataset_reads_keep_a_finite_guard(tmp_path, monkeypatch):
    before = Image.MAX_IMAGE_PIXELS
    seen = []
    load = Image.Image.load

    def load_and_look(self):  # Pillow's own load, watched: what guard does it decode under?
        seen.append(Image.MAX_IMAGE_PIXELS)
        return load(self)

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image.Image, "load", load_and_look)
    decode_bytes((tmp_path / "a.png").read_bytes(), max_pixels=None)
    read_rgb(tmp_path / "a.png")
    assert seen and all(isinstance(v, int) and v > 0 for v in seen), seen
    assert Image.MAX_IMAGE_PIXELS == before


def test_threads_share_one_limit_and_wait_for_another():
    both_inside = threading.Barrier(2, timeout=10)
    values: list[tuple[str, int]] = []

    def reader(limit: int, name: str) -> None:
        with inputgate.pil_pixel_limit(limit):
            if name.startswith("same"):
                both_inside.wait()  # a plain lock would time out here
            time.sleep(0.05)
            values.append((name, Image.MAX_IMAGE_PIXELS))

    before = Image.MAX_IMAGE_PIXELS
    jobs = [(1000, "same1"), (1000, "same2"), (5000, "other")]
    threads = [threading.Thread(target=reader, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(values) == [("other", 5000), ("same1", 1000), ("same2", 1000)]
    assert Image.MAX_IMAGE_PIXELS == before
    with inputgate.pil_pixel_limit(1000), pytest.raises(RuntimeError, match="wait for itself"):
        with inputgate.pil_pixel_limit(5000):  # would wait for its own thread for ever
            pass
    assert Image.MAX_IMAGE_PIXELS == before


def _jpeg_with_broken_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera"
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 24, 3), 90, np.uint8)).save(buf, "JPEG", exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    at = data.find(b"Exif\x00\x00") + 6  # the TIFF header: make an entry's data run past the block
    data[at + 8 + 2 + 4 : at + 8 + 2 + 8] = b"\x00\x00\xff\xff"
    return bytes(data)


def test_a_corrupt_exif_block_is_a_note_not_a_warning():
    data = _jpeg_with_broken_exif()
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        decoded = decode_bytes(data, name="broken.jpg")
        traces = compute_traces(Photo(data, decoded))  # the JPEG traces read the file's tables again
    assert leaked == []
    assert any(n.startswith("the decoder warned and went on: ") for n in decoded.notes), decoded.notes
    assert set(traces) == set(DEFAULT_TRACES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning turned into an exception must not escape either
        assert decode_bytes(data, name="broken.jpg").orientation == 6
