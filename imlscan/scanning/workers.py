"""The decoding processes of ``batch`` and ``eval``: one pool, started the same way for both.

Why single-threaded: on a GPU the workers also run the keypoint copy-move detector ahead of the
network (``imlscan.copymove_keypoints.KeypointJob``; on a CPU the main process does, see
``Predictor.keypoint_job``). Several workers each spreading OpenCV and torch over every core would
fight over them; one thread each, in parallel across images, is what scales."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


def init_worker() -> None:
    # Ctrl-C goes to the whole process group: let the main process handle it alone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker)
    return InlineExecutor()
