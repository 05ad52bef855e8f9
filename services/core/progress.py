"""Progress of long commands, shown on a terminal only.

Long loops (a reconciliation's chain re-scan, the invariant check) call :func:`report` with what they have done and
the total; nothing happens unless a command asked to show progress with :func:`on_terminal`, which draws a line on
stderr when (and only when) stderr is a terminal. So the library stays quiet under the worker, the API, pipes,
files and tests, and a person at a terminal sees it move.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

Reporter = Callable[[str, int, int | None], None]

_reporter: ContextVar[Reporter | None] = ContextVar("creditrail_progress", default=None)


def report(task: str, done: int, total: int | None = None) -> None:
    """``done`` of ``total`` (None: unknown) units of ``task``; a no-op unless a command shows progress."""
    reporter = _reporter.get()
    if reporter is not None:
        reporter(task, done, total)


class TerminalProgress:
    """One line per task, redrawn in place (``\\r``) at most every ``interval`` seconds, ended when it completes."""

    def __init__(self, stream: TextIO, *, interval: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self._task: str | None = None
        self._drawn_at = float("-inf")
        self._width = 0

    def __call__(self, task: str, done: int, total: int | None) -> None:
        if task != self._task:  # a new task's first report is always drawn
            self.finish()
            self._task, self._drawn_at = task, float("-inf")
        complete = total is not None and done >= total
        now = self.clock()
        if not complete and now - self._drawn_at < self.interval:
            return
        self._drawn_at = now
        text = f"{task}: {done:,}" + (f"/{total:,} ({min(100, done * 100 // total)}%)" if total else "")
        self.stream.write("\r" + text.ljust(self._width))
        self._width = len(text)
        if complete:
            self.stream.write("\n")
            self._task, self._width = None, 0
        self.stream.flush()

    def finish(self) -> None:
        """End the line of a task left unfinished."""
        if self._task is not None and self._width:
            self.stream.write("\n")
            self.stream.flush()
        self._task, self._width = None, 0


@contextmanager
def on_terminal(stream: TextIO | None = None) -> Iterator[None]:
    """Show the progress :func:`report` gets inside the block on ``stream`` (stderr) if it is a terminal."""
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        yield
        return
    progress = TerminalProgress(out)
    token = _reporter.set(progress)
    try:
        yield
    finally:
        _reporter.reset(token)
        progress.finish()
