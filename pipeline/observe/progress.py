"""Progress bars for long work (benchmarks, exports, offline training), on stderr.

One look for every command: a rich bar with count, rate, elapsed and remaining time on a
terminal, and nothing at all when stderr is not a terminal (honcho, CI, pipes), so logs
and `--json` output stay clean. Set CHARLES_PROGRESS=0 to silence it, =1 to force it.

    with progress_bar("exporting", total=n) as bar:
        for item in items:
            ...
            bar.advance()

    for batch in track(batches, "training", total=n_batches):
        ...
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import structlog

T = TypeVar("T")


def enabled() -> bool:
    """On when stderr is a terminal, unless CHARLES_PROGRESS says otherwise."""
    forced = os.environ.get("CHARLES_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


class Bar:
    """A handle on one bar: `advance`, `update(completed=..., total=..., description=...)`.

    Without a terminal a bar with a `log_event` logs that event instead (done, total,
    elapsed and remaining seconds), at most every `log_every_s` and always at the end, so a
    long command under honcho or in a pipe still says how far it is."""

    def __init__(self, progress: object | None, task: int | None, log_event: str = "",
                 total: float | None = None, description: str = "", log_every_s: float = 0.0) -> None:
        self._progress = progress
        self._task = task
        self.completed = 0.0
        self.total = total
        self.description = description
        self._log_event = log_event if progress is None else ""
        self._log_every_s = log_every_s
        self._start = self._logged = time.monotonic()

    def advance(self, amount: float = 1.0) -> None:
        self.completed += amount
        if self._progress is not None:
            self._progress.advance(self._task, amount)  # type: ignore[attr-defined]
        self._log()

    def update(self, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        if self._progress is not None:
            fields = {k: v for k, v in (("completed", completed), ("total", total),
                                        ("description", description)) if v is not None}
            self._progress.update(self._task, **fields)  # type: ignore[attr-defined]

    def _log(self) -> None:
        if not self._log_event:
            return
        now = time.monotonic()
        done = self.total is not None and self.completed >= self.total
        if now - self._logged < self._log_every_s and not done:
            return
        self._logged = now
        elapsed = now - self._start
        eta = None
        if self.total and self.completed:
            eta = round(elapsed * (self.total - self.completed) / self.completed, 1)
        done_n = int(self.completed) if float(self.completed).is_integer() else round(self.completed, 2)
        structlog.get_logger("progress").info(self._log_event, what=self.description, done=done_n,
                                              total=self.total, elapsed_s=round(elapsed, 1), eta_s=eta)


@contextmanager
def progress_bar(description: str, total: float | None = None, unit: str = "", show: bool | None = None,
                 log_event: str = "", log_every_s: float = 0.0) -> Iterator[Bar]:
    """A bar for `total` steps (None = unknown: a spinner with a count); when disabled a no-op,
    or, given `log_event`, a log line per step (at most every `log_every_s`)."""
    if not (enabled() if show is None else show):
        yield Bar(None, None, log_event, total, description, log_every_s)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    # stdout is redirected above the bar only when it shares the terminal; piped stdout
    # (`charles bench all --json | jq`) must never be diverted to stderr.
    with Progress(*columns, console=Console(stderr=True), transient=False,
                  redirect_stdout=sys.stdout.isatty()) as progress:
        task = progress.add_task(description, total=total)
        yield Bar(progress, task)


def track(items: Iterable[T], description: str, total: float | None = None, show: bool | None = None) -> Iterator[T]:
    """Iterate `items` with a bar; `total` defaults to `len(items)` when it has one."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total=total, show=show) as bar:
        for item in items:
            yield item
            bar.advance()
