"""File helpers: atomic writes (nothing half-written survives a crash), hashing, file names that
fit the file system, and lock files that give a folder to one run at a time."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from imlscan.errors import ImlscanError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed over ``path``.

    The rename is atomic on POSIX, so readers see either the old file or the complete new
    one, and an interrupted writer leaves only a stray temporary that is removed here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if len(path.suffix) <= 16 else ""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".part" + suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files, and some writers (safetensors) replace the temporary with a
        # new file of their own: the finished output gets the usual permissions.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- names that fit the file system ---------------------------------------------------------------

NAME_MAX_FALLBACK = 255
_TEMP_NAME_BYTES = 120  # room left for mkstemp's 8 random characters and ".part.EXT"
_TEMP_RE = re.compile(r"^(?P<prefix>\..+\.)[A-Za-z0-9_]{1,16}\.part(?:\.[A-Za-z0-9]{1,16})?$")


def name_max(folder: str | os.PathLike) -> int:
    """The longest file name, in bytes, that the file system holding ``folder`` accepts (its
    nearest existing ancestor when the folder is not made yet; 255 where it cannot be asked)."""
    here = Path(folder).absolute()
    while not here.is_dir() and here != here.parent:
        here = here.parent
    try:
        limit = int(os.pathconf(here, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX_FALLBACK
    return limit if limit >= 64 else NAME_MAX_FALLBACK  # -1 (no limit) or nonsense


def short_hash(text: str, n: int = 12) -> str:
    """A stable short hex digest of ``text`` (the same on every machine and run)."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def fit_name(name: str, reserve: int = 0, limit: int = NAME_MAX_FALLBACK) -> str:
    """``name`` itself when it and ``reserve`` more bytes (the suffixes the caller appends) fit in
    ``limit`` bytes; otherwise its head, cut at a character boundary, then ``-`` and a hash of the
    whole name, then its extension: stable, distinct for distinct names, and short enough.

    Arguments:
        name: the wanted file name.
        reserve: bytes the caller will append (e.g. ``len(".overlay.png")``).
        limit: the file system's limit (``name_max``).

    Returns:
        A file name of at most ``limit - reserve`` bytes.
    """
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) + reserve <= limit:
        return name
    stem, ext = os.path.splitext(name)
    if len(ext.encode("utf-8", "surrogateescape")) > 16:
        stem, ext = name, ""
    tail = f"-{short_hash(name)}{ext}"
    room = max(1, limit - reserve - len(tail.encode("utf-8", "surrogateescape")))
    head = stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return head + tail


def temp_prefix(name: str) -> str:
    """The start of ``atomic_path``'s temporary names for the file ``name``: hidden, and short
    enough for mkstemp's random part and ``.part.EXT`` whatever the length of ``name``."""
    return f".{fit_name(name, 0, _TEMP_NAME_BYTES)}."


def temporary_prefix(name: str) -> str | None:
    """``temp_prefix`` of the file whose ``atomic_path`` temporary is called ``name``; None when
    ``name`` is not such a temporary (so a sweep never touches anything else)."""
    m = _TEMP_RE.match(name)
    return m.group("prefix") if m else None


def ensure_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) if needed, or explain in one line why not.

    Raises:
        ImlscanError: a file is in the way, or the OS refused (``write_error``).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, path) from None
    return path


def write_error(e: OSError, path: str | os.PathLike) -> ImlscanError:
    """The one-line error for a failed write: the path the OS named (else ``path``) and the OS
    reason (a file where a folder should be says so)."""
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        reason = "not a folder (a file is in the way)"
    else:
        reason = e.strerror or str(e)
    return ImlscanError(f"cannot write to {e.filename or path}: {reason}")


# --- one run at a time ----------------------------------------------------------------------------


def _process_start(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a process from /proc, None where there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text.rpartition(")")[2].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _owner_alive(info: dict[str, Any]) -> bool | None:
    """Whether the process a lock names still runs: True, False (gone, a zombie, or its pid now
    belongs to a newer process), or None (another host: it cannot be checked from here)."""
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if info.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    proc = _process_start(pid)
    if proc is None:
        return True
    state, start = proc
    recorded = info.get("process_start")
    return state != "Z" and (recorded is None or str(recorded) == start)


def _flock(fd: int, exclusive: bool) -> bool:
    """Try a non-blocking advisory lock; False when another open file holds it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the pid check alone decides
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: the pid check alone decides
        return True
    return True


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _held(path: Path, info: dict[str, Any]) -> ImlscanError:
    owner = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
    if info.get("started"):
        owner += f", started {info['started']}"
    return ImlscanError(
        f"{path.parent} is in use by another imlscan run ({owner})",
        hint=f"wait for it to end or choose another --out; if it is no longer running, delete {path}",
    )


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class FolderLock:
    """A lock file held by this process: its pid, host and start time inside, and an advisory
    ``flock`` on it (released by the kernel whatever way the process ends). ``release`` removes
    it; a file left by a killed run names a dead process, and the next run takes it over."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_lock(path: str | os.PathLike, note: Callable[[str], None] | None = None) -> FolderLock:
    """Take the lock file ``path`` for this process, or refuse in one line naming its owner.

    A lock whose owner is gone (killed, crashed: its pid no longer runs on this host) is taken
    over, and ``note`` says so. A lock from another host is never taken over: its owner cannot be
    checked from here, and the error says how to remove it.

    Raises:
        ImlscanError: another live process holds it, or the folder cannot be written.
    """
    path = Path(path)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666 & ~_UMASK)
        except OSError as e:
            raise write_error(e, path) from None
        try:
            if not _flock(fd, exclusive=True):
                raise _held(path, _read_lock(path))
            if not _same_file(fd, path):  # removed by its owner between our open and our lock
                os.close(fd)
                continue
            previous = _read_lock(path)
            if previous and previous.get("pid") != os.getpid() and _owner_alive(previous) is not False:
                raise _held(path, previous)
            if previous and note is not None and previous.get("pid") != os.getpid():
                note(
                    f"note: took over the lock of a run that is no longer running "
                    f"(pid {previous.get('pid')}, started {previous.get('started', '?')}): {path}"
                )
            proc = _process_start(os.getpid())
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "process_start": proc[1] if proc else None,
                "command": " ".join(sys.argv)[:500],
            }
            data = (json.dumps(info) + "\n").encode("utf-8")
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise write_error(e, path) from None
        except BaseException:
            os.close(fd)
            raise
        return FolderLock(path, fd)
    raise ImlscanError(f"{path}: could not be locked (it keeps changing)", hint="is another run starting there?")


def check_unlocked(path: str | os.PathLike) -> None:
    """Refuse, like ``acquire_lock``, when the lock file ``path`` is held by a live process;
    a missing or stale one passes (it is not taken).

    Raises:
        ImlscanError: another live process holds it.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        free = _flock(fd, exclusive=False)
    finally:
        os.close(fd)
    info = _read_lock(path)
    if not free or (info and info.get("pid") != os.getpid() and _owner_alive(info) is not False):
        raise _held(path, info)
