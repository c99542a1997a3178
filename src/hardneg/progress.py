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
        start, done, amount = time.perf_counter(), [0], [0]

        def rate() -> str:
            return f"{amount[0] / max(time.perf_counter() - start, 1e-9):,.1f} {unit}" if unit else ""

        if not console.is_terminal:
            with self._lines(console, description, total, start, done, rate) as show:
                def advance_line(n: int = 1, more: int = 0) -> None:
                    done[0] += n
                    amount[0] += more
                    show()

                yield advance_line
            return
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=console, transient=False) as progress:
            tid = progress.add_task(description, total=total, rate=f"- {unit}" if unit else "")

            def advance(n: int = 1, more: int = 0) -> None:
                amount[0] += more
                progress.update(tid, advance=n, rate=rate())

            yield advance

    @contextmanager
    def _lines(self, console: Console, description: str, total: int, start: float, done: list[int],
               rate: Callable[[], str]) -> Iterator[Callable[[], None]]:
        """``show()`` prints ``description: done/total (p%), elapsed, left[, rate]`` when ``every`` seconds have
        passed since the last line; the last line is printed when the step ends, or stops."""
        shown = [start, -1]

        def line() -> None:
            now = time.perf_counter()
            elapsed = now - start
            parts = [f"{description}: {done[0]:,}/{total:,} ({100 * done[0] / max(total, 1):.0f}%)",
                     f"{timedelta(seconds=round(elapsed))} elapsed"]
            if 0 < done[0] < total:
                parts.append(f"{timedelta(seconds=round(elapsed / done[0] * (total - done[0])))} left")
            if rate():
                parts.append(rate())
            console.print(", ".join(parts), highlight=False, markup=False)
            shown[:] = [now, done[0]]

        def show() -> None:
            if time.perf_counter() - shown[0] >= self.every:
                line()

        try:
            yield show
        finally:  # also where the step stops on an error or Ctrl-C: the log says how far it got
            if shown[1] != done[0]:
                line()

    def note(self, text: str) -> None:
        """One line for the user (a plan, an estimate) on stderr; nothing when progress is off."""
        if self.enabled:
            Console(stderr=True, soft_wrap=True).print(text, highlight=False, markup=False)


SILENT = Reporter(enabled=False)
