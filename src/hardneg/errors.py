"""Errors a user can act on: each names the file, the line (or row) and the field at fault."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class HardnegError(Exception):
    """Base class: something the user can fix (input, configuration, run folder)."""


class DataError(HardnegError):
    """Bad input data. The message names the file, the line or row, and the field."""

    def __init__(self, path: object, problem: str, line: int | None = None, field: str | None = None,
                 row: int | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if row is not None:  # a row of a columnar file (parquet), numbered from 1
            where += f": row {row}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.field, self.problem = str(path), line, field, problem


class ConfigError(HardnegError):
    """A configuration value that cannot be parsed or does not make sense."""


class RunError(HardnegError):
    """A run folder that is missing, incomplete, or belongs to another configuration."""


class OtherSettingsError(RunError):
    """An output folder holds a finished model trained with other settings (and overwrite is off)."""


class HardnegWarning(UserWarning):
    """Something the user should know that does not stop the work (empty documents skipped, an ANN
    index that misses neighbours). The CLI prints it as one ``warning:`` line; runs keep it in
    their manifest."""


@contextmanager
def kept_warnings() -> Iterator[list[str]]:
    """Collect the messages of the :class:`HardnegWarning` s raised inside the block (every one, even
    a repeat), then raise every caught warning again on exit, under the caller's filters, so that
    API users and the CLI still see them. The list is complete once the block has exited."""
    kept: list[str] = []
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", HardnegWarning)
            yield kept
    finally:
        for w in caught:
            if issubclass(w.category, HardnegWarning):
                kept.append(str(w.message))
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
