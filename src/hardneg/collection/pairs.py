"""load_pairs: (query, positive) pairs from jsonl / json / parquet / csv / tsv as a Collection.

Ids are content hashes of the texts, so identical queries merge and a positive shared by several
queries is one document. Also used by :mod:`.hf` for a ``datasets.Dataset`` of pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..runs.files import sha256_file
from .builder import Builder
from .readers import field_str, read_table, text_lines
from .types import Collection

QUERY_COLUMNS = ("query", "anchor", "question", "queries")
POSITIVE_COLUMNS = ("positive", "positives", "pos", "document", "passage", "answer")


def _text_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()[:16]


def _pick_column(columns: Iterable[str], wanted: str | None, candidates: Sequence[str], path: object,
                 what: str, line: int | None = None) -> str:
    cols = list(columns)
    if wanted is not None:
        if wanted not in cols:
            raise DataError(path, f"no {what} column '{wanted}' (columns: {', '.join(cols)})", line)
        return wanted
    for c in candidates:
        if c in cols:
            return c
    raise DataError(path, f"no {what} column found (looked for {', '.join(candidates)}; "
                          f"columns: {', '.join(cols)}); name it explicitly", line)


def add_pairs(b: Builder, rows: Iterable[tuple[int, dict[str, Any]]], path: object,
              query_column: str | None, positive_column: str | None) -> None:
    """Pair records into the builder: the query and positive columns are the named ones, else
    the first of :data:`QUERY_COLUMNS` / :data:`POSITIVE_COLUMNS` in the first record; a positive
    may be a list of strings."""
    qcol = pcol = None
    for line, rec in rows:
        if qcol is None:
            qcol = _pick_column(rec.keys(), query_column, QUERY_COLUMNS, path, "query", line)
            pcol = _pick_column(rec.keys(), positive_column, POSITIVE_COLUMNS, path, "positive", line)
        assert pcol is not None
        query = field_str(rec, qcol, path, line)
        if not query.strip():
            raise DataError(path, "empty query text", line, qcol)
        pos = rec.get(pcol)
        positives: list[Any] = pos if isinstance(pos, list) else [pos]
        if not positives or any(not isinstance(p, str) for p in positives):
            raise DataError(path, "expected a string or a list of strings", line, pcol)
        qid = _text_id("q", query)
        b.add_query(qid, query, path, line, dedupe=True)
        for p in positives:
            if not p.strip():
                raise DataError(path, "empty positive text", line, pcol)
            did = _text_id("d", p)
            b.add_doc(did, "", p, path, line, dedupe=True)
            b.add_qrel(qid, did, 1, path, line)


def _add_extra_corpus(b: Builder, path: Path, text_column: str = "text") -> None:
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DataError(path, "file not found")
        rows: Iterable[tuple[int, dict[str, Any]]] = text_lines(path, text_column)
    else:
        rows = read_table(path)
    for line, rec in rows:
        text = field_str(rec, text_column, path, line)
        title = field_str(rec, "title", path, line, required=False)
        body = f"{title} {text}".strip() if title.strip() else text
        if not body.strip():
            if b.strict:
                raise DataError(path, "empty document text", line, text_column)
            continue
        b.add_doc(_text_id("d", body), "", body, path, line, dedupe=True)


def load_pairs(path: str | Path, corpus: str | Path | None = None, query_column: str | None = None,
               positive_column: str | None = None, strict: bool = False) -> Collection:
    """Load (query, positive) pairs from jsonl / json / parquet / csv / tsv.

    Ids are content hashes, so identical query texts merge into one query with several positives
    (as sentence-transformers does). The corpus is the union of positives and the optional
    ``corpus`` file (jsonl/parquet/csv with a ``text`` column, or .txt with one document a line).

    Args:
        path: the pairs file.
        corpus: an optional file of more documents (distractors that no query judges).
        query_column: the query column; default: the first of ``query``, ``anchor``,
            ``question``, ``queries`` present.
        positive_column: the positive column (a string or a list of strings); default: the first
            of ``positive``, ``positives``, ``pos``, ``document``, ``passage``, ``answer`` present.
        strict: make an empty document of ``corpus`` an error instead of skipping it.

    Returns:
        The Collection; ``source`` records the files and their checksums.

    Example:
        ::

            from hardneg import load_pairs

            col = load_pairs("pairs.jsonl", corpus="more_docs.txt", query_column="question")
    """
    path = Path(path)
    b = Builder(strict=strict)
    add_pairs(b, read_table(path), path, query_column, positive_column)
    checksums = {path.name: sha256_file(path)}
    if corpus is not None:
        _add_extra_corpus(b, Path(corpus))
        checksums[Path(corpus).name] = sha256_file(corpus)
    return b.build({"kind": "pairs", "path": str(path.resolve()), "split": None, "checksums": checksums,
                    "corpus": str(Path(corpus).resolve()) if corpus else None})

