"""Rich progress bars for every long step; silent when progress is off (tests, --quiet)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[[int], None]


def _no_progress(n: int = 1) -> None:
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


SILENT = Reporter(enabled=False)
