"""Record readers: JSON lines, JSON, CSV/TSV, parquet, BEIR qrels TSV and plain text, as numbered rows.

Text must be UTF-8: a byte that is not is a :class:`DataError` naming the file, line (or row) and
column, never a bare ``UnicodeDecodeError``. Errors in a record name its line and field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError

PAIR_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")


def utf8_error(path: object, data: bytes, exc: UnicodeDecodeError, first_line: int | None = 1,
               **where: Any) -> DataError:
    """The error for bytes that are not UTF-8: the line (counted from ``first_line``) and the
    character column of the first bad byte. ``first_line=None`` names no line (a parquet value)."""
    start = exc.start
    line_start = data.rfind(b"\n", 0, start) + 1
    column = len(data[line_start:start].decode("utf-8", errors="replace")) + 1
    line = None if first_line is None else first_line + data.count(b"\n", 0, start)
    return DataError(path, f"not valid UTF-8 (byte 0x{data[start]:02x} at column {column})", line, **where)


def read_utf8(path: Path) -> str:
    """A whole text file; bytes that are not UTF-8 are an error naming the line and column."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise utf8_error(path, data, exc) from None


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) of a text file, read as bytes and decoded line by line, so that a
    byte that is not UTF-8 is an error naming its line and column (a text-mode file only raises
    ``UnicodeDecodeError``, with an offset into some buffer). Streams: memory is one line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise utf8_error(path, raw, exc, lineno) from None
            yield lineno, line


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(path, "file not found")
    for lineno, line in utf8_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"malformed JSON ({exc.msg} at column {exc.colno})", lineno) from None
        if not isinstance(rec, dict):
            raise DataError(path, "expected a JSON object", lineno)
        yield lineno, rec


def read_table(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a jsonl / json / parquet / csv / tsv file, numbered from 1 (lines for text files)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(path, "file not found")
    if suffix == ".jsonl":
        yield from read_jsonl(path)
    elif suffix == ".json":
        try:
            data = json.loads(read_utf8(path))
        except json.JSONDecodeError as exc:
            raise DataError(path, f"malformed JSON ({exc.msg})", exc.lineno) from None
        if not isinstance(data, list):
            raise DataError(path, "expected a JSON list of objects")
        for i, rec in enumerate(data, start=1):
            if not isinstance(rec, dict):
                raise DataError(path, "expected a JSON object", i)
            yield i, rec
    elif suffix == ".parquet":
        yield from enumerate(read_parquet(path).to_pylist(), start=1)
    elif suffix in (".csv", ".tsv"):
        # csv reads lines from any iterator of strings; line_num counts them (quoted newlines too)
        reader = csv.DictReader((line for _, line in utf8_lines(path)),
                                delimiter="\t" if suffix == ".tsv" else ",")
        for rec in reader:
            if None in rec:
                raise DataError(path, "more fields than the header has", reader.line_num)
            yield reader.line_num, dict(rec)
    else:
        raise DataError(path, f"unsupported file type '{suffix}' (use one of {', '.join(PAIR_SUFFIXES)})")


def read_parquet(path: Path) -> Any:
    """A parquet file as a pyarrow table whose text is valid UTF-8: binary columns (text written
    without the UTF8 annotation) become strings, string columns are checked. A value that is not
    UTF-8 is an error naming its row and column, before any Python string is made."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        raise DataError(path, f"cannot read parquet ({exc})") from None
    for i, name in enumerate(table.column_names):
        column = table.column(i)
        text_type = _text_type(column.type)
        if text_type is None:
            continue
        try:
            checked = column.cast(text_type)
            checked.validate(full=True)  # a string column is not checked on read
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise _parquet_utf8_error(path, name, column) from None
        table = table.set_column(i, name, checked)
    return table


def _text_type(t: Any) -> Any:
    """The string type that holds the text of a binary or string type (also as list items), else None."""
    import pyarrow as pa

    if pa.types.is_binary(t) or pa.types.is_string(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_large_string(t):
        return pa.large_string()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _text_type(t.value_type)
        if inner is None:
            return None
        return pa.list_(inner) if pa.types.is_list(t) else pa.large_list(inner)
    return None


def _parquet_utf8_error(path: Path, name: str, column: Any) -> DataError:
    """Find the first value of ``column`` that is not UTF-8 (on the error path only: Python loop)."""
    import pyarrow as pa

    def as_bytes(t: Any) -> Any:
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pa.list_(as_bytes(t.value_type))
        return pa.large_binary()

    for row, value in enumerate(column.cast(as_bytes(column.type)).to_pylist(), start=1):
        for item in value if isinstance(value, list) else [value]:
            try:
                if item is not None:
                    item.decode("utf-8")
            except UnicodeDecodeError as exc:
                return utf8_error(path, item, exc, None, field=name, row=row)
    return DataError(path, "text that is not valid UTF-8", field=name)


def field_str(rec: dict[str, Any], name: str, path: object, line: int, required: bool = True) -> str:
    """Field ``name`` of a record as a string (a numeric id becomes one); missing (when
    ``required``) or not a string is an error naming the line and field."""
    if name not in rec or rec[name] is None:
        if required:
            raise DataError(path, "is missing", line, name)
        return ""
    value = rec[name]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name.endswith("id"):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(path, f"expected a string, got {type(value).__name__}", line, name)
    return value


def read_qrels_tsv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """BEIR qrels: ``query-id corpus-id score`` with a header; TREC's 4-column form also accepted."""
    if not path.is_file():
        raise DataError(path, "file not found")
    for lineno, raw in utf8_lines(path):
        parts = raw.rstrip("\r\n").split("\t") if "\t" in raw else raw.split()
        if not raw.strip():
            continue
        if lineno == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(parts) == 4:  # TREC: qid iter docid rel
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataError(path, f"expected 3 tab-separated columns, found {len(parts)}", lineno)
        yield lineno, {"query-id": parts[0].strip(), "corpus-id": parts[1].strip(), "score": parts[2]}


def text_lines(path: Path, column: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """One document per non-empty line of a .txt file, numbered from 1."""
    for i, line in utf8_lines(path):
        if line.strip():
            yield i, {column: line.rstrip("\r\n")}

