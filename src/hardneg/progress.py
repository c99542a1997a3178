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
)

Advance = Callable[[int], None]
RateAdvance = Callable[[int, int, bool], None]


def _no_progress(n: int = 1) -> None:
    return None


def _no_rate(n: int = 1, amount: int = 0, replayed: bool = False) -> None:
    return None


class _Meter:
    """One step's counts: items done, the amount behind its rate, and the plain line
    ``description: done/total (p%), elapsed, left[, rate]`` (for stderr that is not a terminal).

    ``replays``: how many items are expected back at no cost (a resumed run's cache hits). The time left is
    the time per item that did cost, times the costly items still to come, so the instant replays at the start
    of a resumed run do not make it look nearly done."""

    def __init__(self, description: str, total: int, unit: str, replays: int = 0):
        self.description, self.total, self.unit, self.replays = description, total, unit, replays
        self.start = self.shown_at = time.perf_counter()
        self.done = self.amount = self.replayed = 0
        self.shown = -1  # the count the last line showed

    def count(self, n: int, more: int, replayed: bool = False) -> None:
        self.done += n
        self.amount += more
        self.replayed += n if replayed else 0

    def left(self) -> str:
        """``H:MM:SS left``; empty before a costly item is done, or when nothing is left."""
        worked = self.done - self.replayed
        if worked <= 0 or self.done >= self.total:
            return ""
        costly_left = max(self.total - self.done - max(self.replays - self.replayed, 0), 0)
        return f"{timedelta(seconds=round((time.perf_counter() - self.start) / worked * costly_left))} left"

    def rate(self) -> str:
        return f"{self.amount / max(time.perf_counter() - self.start, 1e-9):,.1f} {self.unit}" if self.unit else ""

    def line(self) -> str:
        now = time.perf_counter()
        elapsed, done, total = now - self.start, self.done, self.total
        parts = [f"{self.description}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%)",
                 f"{timedelta(seconds=round(elapsed))} elapsed"]
        if left := self.left():
            parts.append(left)
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
                advance(n, 0, False)

            yield count

    @contextmanager
    def rate_task(self, description: str, total: int, unit: str, replays: int = 0) -> Iterator[RateAdvance]:
        """A bar over ``total`` items that also shows a rate of something else (``advance(items, amount,
        replayed)``; e.g. generated tokens per second, ``unit="tok/s"``; no rate when ``unit`` is empty).
        ``replays`` items are expected back from a cache at no cost (``replayed=True``); the time left
        leaves them out (see :class:`_Meter`)."""
        if not self.enabled:
            yield _no_rate
            return
        console = Console(stderr=True, soft_wrap=True)
        meter = _Meter(description, total, unit, replays)
        if not console.is_terminal:

            def advance_line(n: int = 1, more: int = 0, replayed: bool = False) -> None:
                meter.count(n, more, replayed)
                if time.perf_counter() - meter.shown_at >= self.every:
                    console.print(meter.line(), highlight=False, markup=False)

            try:
                yield advance_line
            finally:  # also where the step stops on an error or Ctrl-C: the log says how far it got
                if meter.shown != meter.done:
                    console.print(meter.line(), highlight=False, markup=False)
            return
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
                      console=console, transient=False) as progress:
            tid = progress.add_task(description, total=total, rate=f"- {unit}" if unit else "", left="")

            def advance(n: int = 1, more: int = 0, replayed: bool = False) -> None:
                meter.count(n, more, replayed)
                progress.update(tid, advance=n, rate=meter.rate(), left=meter.left())

            yield advance

    def note(self, text: str) -> None:
        """One line for the user (a plan, an estimate) on stderr; nothing when progress is off."""
        if self.enabled:
            Console(stderr=True, soft_wrap=True).print(text, highlight=False, markup=False)


SILENT = Reporter(enabled=False)
