"""Progress bars for the commands, drawn from the callbacks that the library accepts.

The library never draws: ``run_batch``, ``evaluate_dataset``, ``write_dataset`` and ``train`` take
a ``progress(done, total, **fields)`` callback and say how far they are. A ``ProgressBar`` is such a
callback; it draws a rich bar on an interactive terminal and nothing otherwise, so logs and pipes
stay clean.
"""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from imlscan.cli.app import err_console


class RateColumn(ProgressColumn):
    """Throughput in images per second (rich's speed column counts bytes)."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "- img/s", style="cyan")


class ProgressBar:
    """A context manager whose value is a ``progress(done, total, **fields)`` callback.

    Arguments:
        label: the text before the bar.
        total: the number of steps, for callers that only ``advance`` (it may also come with each call).
        rate: show images per second and the time remaining (batch).
        loss: show the ``loss`` field and the time elapsed (train).
        transient: remove the bar when done.
    """

    def __init__(self, label: str, *, total: int = 0, rate: bool = False, loss: bool = False, transient: bool = True):
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = err_console.is_terminal
        columns: list[Any] = [TextColumn(f"[bold]{label}" if rate or loss else "{task.description}")]
        columns += [BarColumn(), MofNCompleteColumn()]
        if rate:
            columns += [RateColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        elif loss:
            columns += [TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn()]
        else:
            columns += [TimeRemainingColumn()]
        self._columns = columns
        self._transient = transient
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more steps done (for callbacks that report increments)."""
        self(self.done + n, self.total)

    def __call__(self, done: int, total: int, **fields: Any) -> None:
        self.done, self.total = done, total
        if not self.enabled or total <= 0:
            return
        shown = {k: f"{v:.4f}" if isinstance(v, float) else v for k, v in fields.items()}
        if self._bar is None:
            self._bar = Progress(*self._columns, console=err_console, transient=self._transient)
            self._task = self._bar.add_task(self.label, total=total, completed=done, **{"loss": "-", **shown})
            self._bar.start()
        else:
            self._bar.update(self._task, total=total, completed=done, **shown)
