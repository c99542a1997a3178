"""Progress for every long step, on stderr (stdout stays the command's output): rich bars in a terminal, a plain
line every ``every`` seconds and at the end where stderr is a file or a pipe (a run in the background, CI), and
nothing when progress is off (tests, --quiet)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[[int], None]
RateAdvance = Callable[[int, int], None]


def _no_progress(n: int = 1) -> None:
    return None


def _no_rate(n: int = 1, amount: int = 0) -> None:
    return None


class _Meter:
    """One step's counts: items done, the amount behind its rate, and the plain line
    ``description: done/total (p%), elapsed, left[, rate]`` (for stderr that is not a terminal)."""

    def __init__(self, description: str, total: int, unit: str):
        self.description, self.total, self.unit = description, total, unit
        self.start = self.shown_at = time.perf_counter()
        self.done = self.amount = 0
        self.shown = -1  # the count the last line showed

    def count(self, n: int, more: int) -> None:
        self.done += n
        self.amount += more

    def rate(self) -> str:
        return f"{self.amount / max(time.perf_counter() - self.start, 1e-9):,.1f} {self.unit}" if self.unit else ""

    def line(self) -> str:
        now = time.perf_counter()
        elapsed, done, total = now - self.start, self.done, self.total
        parts = [f"{self.description}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%)",
                 f"{timedelta(seconds=round(elapsed))} elapsed"]
        if 0 < done < total:
            parts.append(f"{timedelta(seconds=round(elapsed / done * (total - done)))} left")
        if self.unit:
            parts.append(self.rate())
        self.shown_at, self.shown = now, done
        return ", ".join(parts)


class Reporter:
    """Hands out progress bars. ``Reporter(enabled=False)`` hands out no-ops; ``every``: seconds between two
    lines where stderr is not a terminal."""

    def __init__(self, enabled: bool = True, every: float = 30.0):
        self.enabled = enabled
        self.every = every

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        if not self.enabled:
            yield _no_progress
            return
        with self.rate_task(description, total, "") as advance:
            def count(n: int = 1) -> None:
                advance(n, 0)

            yield count

    @contextmanager
    def rate_task(self, description: str, total: int, unit: str) -> Iterator[RateAdvance]:
        """A bar over ``total`` items that also shows a rate of something else (``advance(items,
        amount)``; e.g. generated tokens per second, ``unit="tok/s"``; no rate when ``unit`` is empty)."""
        if not self.enabled:
            yield _no_rate
            return
        console = Console(stderr=True, soft_wrap=True)
        meter = _Meter(description, total, unit)
        if not console.is_terminal:

            def advance_line(n: int = 1, more: int = 0) -> None:
                meter.count(n, more)
                if time.perf_counter() - meter.shown_at >= self.every:
                    console.print(meter.line(), highlight=False, markup=False)

            try:
                yield advance_line
            finally:  # also where the step stops on an error or Ctrl-C: the log says how far it got
                if meter.shown != meter.done:
                    console.print(meter.line(), highlight=False, markup=False)
            return
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=console, transient=False) as progress:
            tid = progress.add_task(description, total=total, rate=f"- {unit}" if unit else "")

            def advance(n: int = 1, more: int = 0) -> None:
                meter.count(n, more)
                progress.update(tid, advance=n, rate=meter.rate())

            yield advance

    def note(self, text: str) -> None:
        """One line for the user (a plan, an estimate) on stderr; nothing when progress is off."""
        if self.enabled:
            Console(stderr=True, soft_wrap=True).print(text, highlight=False, markup=False)


SILENT = Reporter(enabled=False)
