"""The validating builder: documents, queries and qrels added one record at a time, checked, then
sorted by id into a :class:`Collection`.

Checks: empty or duplicate ids, queries without text, judgements of unknown query or corpus ids,
grades that are not integers, one pair judged twice with different grades. Empty documents are
skipped with a warning (their judgements dropped, with a note) unless ``strict``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import DataError, HardnegWarning
from .readers import field_str
from .types import Collection, Qrels


class Builder:
    """Collects documents, queries and qrels with validation, then sorts them by id."""

    def __init__(self, strict: bool = False):
        self.docs: dict[str, str] = {}
        self.doc_where: dict[str, tuple[str, int]] = {}
        self.queries: dict[str, str] = {}
        self.query_where: dict[str, tuple[str, int]] = {}
        self.qrels: dict[tuple[str, str], int] = {}
        self.empty_docs: dict[str, tuple[str, int]] = {}
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.strict = strict

    def add_doc(self, doc_id: str, title: str, text: str, path: object, line: int,
                dedupe: bool = False) -> None:
        if not doc_id.strip():
            raise DataError(path, "empty id", line, "_id")
        body = f"{title} {text}".strip() if title.strip() else text.strip()
        if doc_id in self.docs or doc_id in self.empty_docs:
            if dedupe:
                return
            first = self.doc_where.get(doc_id) or self.empty_docs[doc_id]
            raise DataError(path, f"duplicate id '{doc_id}' (first seen at {first[0]}:{first[1]})", line, "_id")
        if not body:
            if self.strict:
                raise DataError(path, f"document '{doc_id}' has an empty title and text", line, "text")
            self.empty_docs[doc_id] = (str(path), line)
            return
        self.docs[doc_id] = body
        self.doc_where[doc_id] = (str(path), line)

    def add_query(self, qid: str, text: str, path: object, line: int, dedupe: bool = False) -> None:
        if not qid.strip():
            raise DataError(path, "empty id", line, "_id")
        if qid in self.queries:
            if dedupe:
                return
            first = self.query_where[qid]
            raise DataError(path, f"duplicate id '{qid}' (first seen at {first[0]}:{first[1]})", line, "_id")
        if not text.strip():
            raise DataError(path, f"query '{qid}' has an empty text", line, "text")
        self.queries[qid] = text.strip()
        self.query_where[qid] = (str(path), line)

    def add_qrel(self, qid: str, did: str, grade: int, path: object, line: int) -> None:
        if qid not in self.queries:
            raise DataError(path, f"query id '{qid}' is not in the queries", line, "query-id")
        if did in self.empty_docs:
            where = self.empty_docs[did]
            self.notes.append(f"{path}:{line}: judgement of empty document '{did}' "
                              f"({where[0]}:{where[1]}) dropped")
            return
        if did not in self.docs:
            raise DataError(path, f"corpus id '{did}' is not in the corpus", line, "corpus-id")
        key = (qid, did)
        if key in self.qrels and self.qrels[key] != grade:
            raise DataError(path, f"pair ({qid}, {did}) judged twice with different grades", line, "score")
        self.qrels[key] = grade

    def build(self, source: dict[str, Any]) -> Collection:
        if not self.docs:
            raise DataError(source.get("path", "<input>"), "the corpus has no non-empty documents")
        if self.empty_docs:
            doc_id, (path, line) = next(iter(self.empty_docs.items()))
            self.warnings.append(f"{path}:{line}: field 'text': {len(self.empty_docs)} empty document(s) "
                                 f"skipped, the first is '{doc_id}' (--strict makes them an error)")
        for msg in self.warnings:
            warnings.warn(msg, HardnegWarning, stacklevel=3)
        doc_ids = np.array(sorted(self.docs), dtype=object)
        query_ids = np.array(sorted(self.queries), dtype=object)
        dmap = {d: i for i, d in enumerate(doc_ids)}
        qmap = {q: i for i, q in enumerate(query_ids)}
        if self.qrels:
            keys = sorted(self.qrels.items(), key=lambda kv: (qmap[kv[0][0]], dmap[kv[0][1]]))
            qi = np.fromiter((qmap[k[0][0]] for k in keys), dtype=np.int64, count=len(keys))
            di = np.fromiter((dmap[k[0][1]] for k in keys), dtype=np.int64, count=len(keys))
            gr = np.fromiter((k[1] for k in keys), dtype=np.int32, count=len(keys))
        else:
            qi = di = np.zeros(0, dtype=np.int64)
            gr = np.zeros(0, dtype=np.int32)
        source = dict(source)
        source["counts"] = {"docs": int(doc_ids.size), "queries": int(query_ids.size),
                            "qrels": int(qi.size), "positives": int((gr > 0).sum()),
                            "empty_docs_skipped": len(self.empty_docs)}
        return Collection(doc_ids, [self.docs[d] for d in doc_ids], query_ids,
                          [self.queries[q] for q in query_ids], Qrels(qi, di, gr), source, self.notes,
                          self.warnings)


def add_corpus(b: Builder, rows: Iterable[tuple[int, dict[str, Any]]], path: object) -> None:
    """BEIR corpus records (``_id``, ``title``, ``text``) into the builder."""
    for line, rec in rows:
        doc_id = field_str(rec, "_id", path, line)
        title = field_str(rec, "title", path, line, required=False)
        if "text" not in rec:
            raise DataError(path, "is missing", line, "text")
        b.add_doc(doc_id, title, field_str(rec, "text", path, line), path, line)


def add_queries(b: Builder, rows: Iterable[tuple[int, dict[str, Any]]], path: object) -> None:
    """BEIR query records (``_id``, ``text``) into the builder."""
    for line, rec in rows:
        b.add_query(field_str(rec, "_id", path, line), field_str(rec, "text", path, line), path, line)


def _parse_grade(value: object, path: object, line: int) -> int:
    try:
        f = float(str(value).strip())
    except ValueError:
        raise DataError(path, f"score '{value}' is not a number", line, "score") from None
    if f != int(f):
        raise DataError(path, f"score '{value}' is not an integer grade", line, "score")
    return int(f)


def add_qrels_rows(b: Builder, rows: Iterable[tuple[int, dict[str, Any]]], path: object) -> None:
    """Judgement records (``query-id``, ``corpus-id``, ``score``; ``_`` spellings too) into the builder."""
    for line, rec in rows:
        qid = str(rec.get("query-id", rec.get("query_id", "")))
        did = str(rec.get("corpus-id", rec.get("corpus_id", "")))
        if not qid:
            raise DataError(path, "is missing", line, "query-id")
        if not did:
            raise DataError(path, "is missing", line, "corpus-id")
        b.add_qrel(qid, did, _parse_grade(rec.get("score", 1), path, line), path, line)

