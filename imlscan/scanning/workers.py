"""The decoding processes of ``batch`` and ``eval``: one pool, started the same way for both.

Why single-threaded: on a GPU the workers also run the keypoint copy-move detector ahead of the
network (``imlscan.copymove_keypoints.KeypointJob``; on a CPU the main process does, see
``Predictor.keypoint_job``). Several workers each spreading OpenCV and torch over every core would
fight over them; one thread each, in parallel across images, is what scales."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with(parent: int) -> None:
    """End this worker when ``parent`` ends, however it ends (``kill -9`` included), so that no
    decoder is left running under PID 1: Linux's parent-death signal, else a watcher thread."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # it ended before the signal was armed
        os._exit(1)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="imlscan-parent-watch", daemon=True).start()


def init_worker(parent: int | None = None) -> None:
    """Set up a decoding process: signals are the main process's business (Ctrl-C and SIGTERM go
    to the whole process group; the main process writes the results and then shuts the pool
    down), one thread each, and death with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if parent is not None:
        _die_with(parent)
    os.environ["OMP_NUM_THREADS"] = "1"  # read when a worker first imports torch
    import cv2

    cv2.setNumThreads(1)


class InlineExecutor:
    """``workers=0``: work in the main process (debugging, tiny folders, tests)."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - delivered through the future, like a pool
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def decoding_pool(workers: int, tasks: int) -> ProcessPoolExecutor | InlineExecutor:
    """``workers`` spawned processes, or the main process when there are none or one task."""
    if workers > 0 and tasks > 1:
        return ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(os.getpid(),),
        )
    return InlineExecutor()
