"""Errors a user can act on: each names the file, the line (or row) and the field at fault."""

from __future__ import annotations


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
