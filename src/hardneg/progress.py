"""Rich progress bars for every long step; silent when progress is off (tests, --quiet)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


class Reporter:
    """Hands out progress bars. ``Reporter(enabled=False)`` hands out no-ops."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        if not self.enabled:
            yield _no_progress
            return
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), transient=False) as progress:
            tid = progress.add_task(description, total=total)

            def advance(n: int = 1) -> None:
                progress.advance(tid, n)

            yield advance

    @contextmanager
    def rate_task(self, description: str, total: int, unit: str) -> Iterator[RateAdvance]:
        """A bar over ``total`` items that also shows a rate of something else (``advance(items,
        amount)``; e.g. generated tokens per second, ``unit="tok/s"``)."""
        if not self.enabled:
            yield _no_rate
            return
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      transient=False) as progress:
            tid = progress.add_task(description, total=total, rate=f"- {unit}")
            start, done = time.perf_counter(), [0]

            def advance(n: int = 1, amount: int = 0) -> None:
                done[0] += amount
                rate = done[0] / max(time.perf_counter() - start, 1e-9)
                progress.update(tid, advance=n, rate=f"{rate:,.1f} {unit}")

            yield advance

    def note(self, text: str) -> None:
        """One line for the user (a plan, an estimate) on stderr; nothing when progress is off."""
        if self.enabled:
            Console(stderr=True, soft_wrap=True).print(text, highlight=False, markup=False)


SILENT = Reporter(enabled=False)
