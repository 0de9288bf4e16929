"""The one gate every input file passes before imlscan looks at its bytes or pixels.

A hostile or careless input must not hang a run (a FIFO named ``.jpg``), fill the memory (a
symlink to ``/dev/zero``, a 3 GB file, a 27 KB PNG declaring 225 megapixels) or switch off
Pillow's decompression-bomb guard for the whole process. So:

- only regular files are read: symlinks are resolved, the target's kind is checked before it is
  opened and again on the opened descriptor (opened non-blocking, so a FIFO that slips in between
  cannot block), and its size is checked before reading; the read itself never goes past the limit;
- Pillow's pixel limit is set for one decode at a time, always to a finite number, and restored;
- the memory a decode and a scan will need is estimated from the header and compared with the
  memory available, before any pixel is decoded.

It is a leaf because both ``imageio`` (scan, batch, traces, meta, bench, calibrate) and ``data``
(eval's datasets, synth's hosts, training) read user files, and neither may import the other.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from imlscan.defaults import DECODE_SCAN_BYTES_PER_PIXEL, DEFAULT_MAX_FILE_BYTES
from imlscan.errors import ImlscanError

# "No pixel limit" (--max-pixels 0) is still a number for Pillow: its guard is never None.
NO_PIXEL_LIMIT = sys.maxsize
_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def read_file(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """All bytes of an input file, read only if it is a regular file of at most ``max_bytes``.

    Arguments:
        path: the file; a symlink is followed and its target checked.
        max_bytes: the largest size read (``defaults.DEFAULT_MAX_FILE_BYTES`` explains the bound).

    Returns:
        The file's bytes (never more than ``max_bytes``, even if the file grows while read).

    Raises:
        ImlscanError: missing, a folder, a FIFO, a device or a socket, too large, or unreadable,
            with a one-line message naming the path and the reason.
    """
    with open_file(path, max_bytes=max_bytes) as f:
        size = os.fstat(f.fileno()).st_size
        chunks: list[bytes] = []
        total = 0
        want = size + 1  # one read for the whole file; a file that grew is read on in small steps
        while total <= max_bytes:
            try:
                block = f.read(min(want, max_bytes + 1 - total))
            except OSError as e:
                raise ImlscanError(f"{path}: cannot read ({e.strerror or e})") from None
            if not block:
                break
            chunks.append(block)
            total += len(block)
            want = max(size + 1 - total, 1 << 16)
    if total > max_bytes:
        raise _too_large(path, None, max_bytes)
    return b"".join(chunks)


def open_file(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> io.FileIO:
    """An unbuffered binary file object on a regular input file, after the checks of
    :func:`read_file` (for readers that need only the header, such as an image's size).

    Raises:
        ImlscanError: as :func:`read_file`.
    """
    path = Path(path)
    try:
        real = path.resolve(strict=True)
        before = os.stat(real)
    except FileNotFoundError:
        raise ImlscanError(f"{path}: file not found") from None
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop on older Pythons
        raise ImlscanError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    shown = f"{path} -> {real}" if path.is_symlink() else path
    _check_kind(shown, before.st_mode, path)
    if before.st_size > max_bytes:
        raise _too_large(shown, before.st_size, max_bytes)
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as e:
        raise ImlscanError(f"{shown}: cannot read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        _check_kind(shown, st.st_mode, path)  # swapped for something else since the check above
        if st.st_size > max_bytes:
            raise _too_large(shown, st.st_size, max_bytes)
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def _check_kind(shown: object, mode: int, path: Path) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise ImlscanError(f"{shown} is a folder, not an image", hint=f"scan a folder with: imlscan batch {path}")
    kind = next((name for test, name in _KINDS if test(mode)), "an unknown kind of file")
    raise ImlscanError(
        f"{shown}: is {kind}, not a regular file",
        hint="imlscan reads regular files only; copy the data into a file first",
    )


def _too_large(shown: object, size: int | None, limit: int) -> ImlscanError:
    return ImlscanError(
        f"{shown}: {_gb(size)}, larger than the {_gb(limit)} limit for an input file"
        if size is not None
        else f"{shown}: longer than the {_gb(limit)} limit for an input file (its size changed while it was read)",
        hint="no photo is this large: check it is an image; save a huge uncompressed scan as PNG or compressed TIFF",
    )


def _gb(n: int) -> str:
    if n >= 100_000_000:
        return f"{n / 1e9:,.1f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{n:,} bytes"


# --- Pillow's decompression-bomb guard, one limit at a time -------------------------------------

_LIMIT = threading.Condition()
_holders = 0
_held: int | None = None
_saved: int | None = None
_mine = threading.local()  # the limit this thread holds, to refuse a nesting that would deadlock


@contextlib.contextmanager
def pil_pixel_limit(limit: int) -> Iterator[None]:
    """Pillow's process-wide pixel limit set to ``limit`` for the block, then restored.

    Pillow has one global limit (``Image.MAX_IMAGE_PIXELS``: a warning above it, an error above
    twice it, checked on open and again when frames and tiles are loaded). Setting it to None for
    the process would leave every other reader unguarded, so each decode raises or lowers it here,
    to a finite number. Blocks with the same limit run together (threads decoding a dataset);
    a block with another limit waits until they are done (nesting one in a block with another limit
    raises RuntimeError instead of waiting for ever).

    Arguments:
        limit: pixels, a positive integer (``NO_PIXEL_LIMIT`` when the user asked for none).
    """
    global _holders, _held, _saved
    limit = int(limit)
    if limit <= 0:
        raise ValueError(f"a pixel limit must be positive, got {limit}")
    outer = getattr(_mine, "limit", None)
    if outer is not None and outer != limit:
        raise RuntimeError(f"pil_pixel_limit({limit}) inside pil_pixel_limit({outer}) would wait for itself")
    from PIL import Image

    with _LIMIT:
        while _holders and _held != limit:
            _LIMIT.wait()
        if not _holders:
            _saved, _held = Image.MAX_IMAGE_PIXELS, limit
            Image.MAX_IMAGE_PIXELS = limit
        _holders += 1
    _mine.limit = limit
    try:
        yield
    finally:
        _mine.limit = outer
        with _LIMIT:
            _holders -= 1
            if not _holders:
                Image.MAX_IMAGE_PIXELS, _held = _saved, None
                _LIMIT.notify_all()


# --- The memory a decode and a scan need --------------------------------------------------------


def check_memory(size: tuple[int, int], name: str, *, bytes_per_pixel: int = DECODE_SCAN_BYTES_PER_PIXEL) -> None:
    """Refuse an image whose decode and scan would need more memory than is available, from the
    size in its header, before any pixel is decoded (no check where the available memory is unknown).

    Arguments:
        size: (width, height) as the header declares it.
        name: the file, for the message.
        bytes_per_pixel: the peak memory per pixel (``defaults.DECODE_SCAN_BYTES_PER_PIXEL``).

    Raises:
        ImlscanError: the estimate exceeds the available memory.
    """
    pixels = max(0, size[0]) * max(0, size[1])
    need = pixels * bytes_per_pixel
    available = available_memory()
    if available is None or need <= available:
        return
    raise ImlscanError(
        f"{name}: {pixels / 1e6:,.0f} megapixels ({size[0]}x{size[1]}) need about {_gb(need)} of memory "
        f"to decode and scan, only {_gb(available)} is available",
        hint="free memory or use a machine with more; --max-pixels N (Python: max_pixels=N) "
        "refuses every image above N pixels outright",
    )


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping or meeting its cgroup's limit:
    the smaller of ``MemAvailable`` (/proc/meminfo) and the cgroup's headroom; None when unknown."""
    found = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    return min(found) if found else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """Limit minus usage (page cache that can be dropped counted as free) of this process's
    memory cgroup, v2 or v1; None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, where = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            files, root = ("memory.max", "memory.current", "inactive_file"), Path("/sys/fs/cgroup")
        elif "memory" in controllers.split(","):
            files, root = (
                ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
                Path("/sys/fs/cgroup/memory"),
            )
        else:
            continue
        for folder in (root / where.lstrip("/"), root):
            try:
                limit_text = (folder / files[0]).read_text(encoding="ascii").strip()
                if limit_text == "max" or int(limit_text) >= 1 << 60:
                    break
                used = int((folder / files[1]).read_text(encoding="ascii"))
                stats = dict(s.split() for s in (folder / "memory.stat").read_text(encoding="ascii").splitlines())
                return max(0, int(limit_text) - used + int(stats.get(files[2], 0)))
            except (OSError, ValueError):
                continue
    return None
