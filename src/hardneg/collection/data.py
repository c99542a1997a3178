"""Collections in: BEIR folders, Hugging Face datasets and query/positive pair files, validated.

Every loader returns a :class:`Collection` whose documents and queries are sorted by id, so that
nothing downstream depends on the order of the input files. Errors name the file, line and field.
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, HardnegWarning
from ..runs.files import sha256_file, sha256_texts

QUERY_COLUMNS = ("query", "anchor", "question", "queries")
POSITIVE_COLUMNS = ("positive", "positives", "pos", "document", "passage", "answer")
PAIR_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")


@dataclass(frozen=True)
class Qrels:
    """Relevance judgements as parallel arrays, sorted by (query, doc). grade > 0 means positive."""

    query_idx: np.ndarray
    doc_idx: np.ndarray
    grade: np.ndarray

    def __len__(self) -> int:
        return int(self.query_idx.size)

    def positives(self) -> Qrels:
        m = self.grade > 0
        return Qrels(self.query_idx[m], self.doc_idx[m], self.grade[m])


@dataclass
class Collection:
    """A corpus, its queries and qrels; ids sorted, texts aligned with ids. ``warnings`` are what the
    loader warned about (a run keeps them in its manifest); ``notes`` are the details behind them."""

    doc_ids: np.ndarray
    doc_texts: list[str]
    query_ids: np.ndarray
    query_texts: list[str]
    qrels: Qrels
    source: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_docs(self) -> int:
        return int(self.doc_ids.size)

    def positives(self) -> Qrels:
        return self.qrels.positives()

    def judged_queries(self) -> np.ndarray:
        """Indices of queries with at least one positive: the queries that get negatives."""
        return np.unique(self.positives().query_idx)

    def corpus_fingerprint(self) -> str:
        """Hash of the corpus content (ids and texts): embeddings are valid only for this value."""
        if "_corpus_fp" not in self.source:
            self.source["_corpus_fp"] = sha256_texts(list(self.doc_ids), self.doc_texts)
        return str(self.source["_corpus_fp"])

    def queries_fingerprint(self) -> str:
        if "_queries_fp" not in self.source:
            self.source["_queries_fp"] = sha256_texts(list(self.query_ids), self.query_texts)
        return str(self.source["_queries_fp"])

    def qrels_fingerprint(self) -> str:
        """Hash of the judgements (by id): runs mined against other positives differ."""
        h = hashlib.sha256()
        for a in (self.qrels.query_idx, self.qrels.doc_idx, self.qrels.grade):
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return sha256_texts(h.hexdigest(), self.queries_fingerprint(), self.corpus_fingerprint())

    def doc_index(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Map document ids to row indices (raises KeyError naming the first unknown id)."""
        return _lookup(self.doc_ids, ids, "document")

    def query_index(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        return _lookup(self.query_ids, ids, "query")

    def slice(self, num_queries: int, extra_docs: int = 0, seed: int = 0) -> Collection:
        """A small, self-consistent sub-collection: the first judged queries, every doc they judge,
        and ``extra_docs`` other documents chosen with ``seed``. For tests and ``--quick`` runs."""
        judged = self.judged_queries()[:num_queries]
        qmask = np.isin(self.qrels.query_idx, judged)
        keep_docs = np.unique(self.qrels.doc_idx[qmask])
        others = np.setdiff1d(np.arange(self.num_docs), keep_docs)
        rng = np.random.default_rng(seed)
        extra = rng.choice(others, size=min(extra_docs, others.size), replace=False)
        keep_docs = np.sort(np.concatenate([keep_docs, extra]).astype(np.int64))
        doc_map = np.full(self.num_docs, -1, dtype=np.int64)
        doc_map[keep_docs] = np.arange(keep_docs.size)
        q_map = np.full(self.query_ids.size, -1, dtype=np.int64)
        q_map[judged] = np.arange(judged.size)
        qr = Qrels(q_map[self.qrels.query_idx[qmask]], doc_map[self.qrels.doc_idx[qmask]],
                   self.qrels.grade[qmask])
        source = {k: v for k, v in self.source.items() if not k.startswith("_")}
        source["slice"] = {"num_queries": int(num_queries), "extra_docs": int(extra_docs), "seed": seed}
        return Collection(self.doc_ids[keep_docs], [self.doc_texts[i] for i in keep_docs],
                          self.query_ids[judged], [self.query_texts[i] for i in judged], qr,
                          source, list(self.notes), list(self.warnings))


    def holdout(self, num_queries: int, seed: int = 0, part: str = "fit") -> Collection:
        """Split the judged queries in two, corpus untouched: ``part="dev"`` keeps ``num_queries`` of
        them chosen by a seeded hash of their ids, ``part="fit"`` keeps the rest. For dev choices."""
        if part not in ("fit", "dev"):
            raise ValueError(f"part must be 'fit' or 'dev', not {part!r}")
        judged = self.judged_queries()
        if not 0 < num_queries < judged.size:
            raise ConfigError(f"holdout of {num_queries} queries needs 0 < n < {judged.size} judged queries")
        keys = np.array([hashlib.sha256(f"{seed}:{q}".encode()).hexdigest() for q in self.query_ids[judged]])
        dev = np.sort(judged[np.argsort(keys, kind="stable")[:num_queries]])
        keep = dev if part == "dev" else np.setdiff1d(judged, dev)
        q_map = np.full(self.query_ids.size, -1, dtype=np.int64)
        q_map[keep] = np.arange(keep.size)
        m = np.isin(self.qrels.query_idx, keep)
        qr = Qrels(q_map[self.qrels.query_idx[m]], self.qrels.doc_idx[m], self.qrels.grade[m])
        source = {k: v for k, v in self.source.items() if k != "_queries_fp"}
        source["holdout"] = {"num_queries": int(num_queries), "seed": seed, "part": part}
        return Collection(self.doc_ids, self.doc_texts, self.query_ids[keep],
                          [self.query_texts[i] for i in keep], qr, source, list(self.notes),
                          list(self.warnings))


def save_beir(collection: Collection, path: str | Path, split: str = "train") -> Path:
    """Write a collection as a BEIR folder (documents keep their joined text; titles are empty)."""
    from ..runs.files import write_text

    root = Path(path)
    write_text(root / "corpus.jsonl", "".join(
        json.dumps({"_id": d, "title": "", "text": t}, ensure_ascii=False) + "\n"
        for d, t in zip(collection.doc_ids.tolist(), collection.doc_texts)))
    write_text(root / "queries.jsonl", "".join(
        json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n"
        for q, t in zip(collection.query_ids.tolist(), collection.query_texts)))
    qr = collection.qrels
    write_text(root / "qrels" / f"{split}.tsv", "query-id\tcorpus-id\tscore\n" + "".join(
        f"{collection.query_ids[q]}\t{collection.doc_ids[d]}\t{g}\n"
        for q, d, g in zip(qr.query_idx.tolist(), qr.doc_idx.tolist(), qr.grade.tolist())))
    return root


def _lookup(sorted_ids: np.ndarray, ids: Sequence[str] | np.ndarray, what: str) -> np.ndarray:
    ids_arr = np.asarray(list(ids), dtype=object)
    pos = np.searchsorted(sorted_ids, ids_arr)
    pos_c = np.minimum(pos, max(sorted_ids.size - 1, 0))
    ok = (pos < sorted_ids.size) & (sorted_ids[pos_c] == ids_arr) if sorted_ids.size else np.zeros(ids_arr.size, bool)
    if not np.all(ok):
        raise KeyError(f"unknown {what} id {ids_arr[~ok][0]!r}")
    return pos.astype(np.int64)


# --------------------------------------------------------------------------- record readers


def _utf8_error(path: object, data: bytes, exc: UnicodeDecodeError, first_line: int | None = 1,
                **where: Any) -> DataError:
    """The error for bytes that are not UTF-8: the line (counted from ``first_line``) and the
    character column of the first bad byte. ``first_line=None`` names no line (a parquet value)."""
    start = exc.start
    line_start = data.rfind(b"\n", 0, start) + 1
    column = len(data[line_start:start].decode("utf-8", errors="replace")) + 1
    line = None if first_line is None else first_line + data.count(b"\n", 0, start)
    return DataError(path, f"not valid UTF-8 (byte 0x{data[start]:02x} at column {column})", line, **where)


def _read_utf8(path: Path) -> str:
    """A whole text file; bytes that are not UTF-8 are an error naming the line and column."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _utf8_error(path, data, exc) from None


def _utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) of a text file, read as bytes and decoded line by line, so that a
    byte that is not UTF-8 is an error naming its line and column (a text-mode file only raises
    ``UnicodeDecodeError``, with an offset into some buffer). Streams: memory is one line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _utf8_error(path, raw, exc, lineno) from None
            yield lineno, line


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(path, "file not found")
    for lineno, line in _utf8_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"malformed JSON ({exc.msg} at column {exc.colno})", lineno) from None
        if not isinstance(rec, dict):
            raise DataError(path, "expected a JSON object", lineno)
        yield lineno, rec


def _read_table(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a jsonl / json / parquet / csv / tsv file, numbered from 1 (lines for text files)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(path, "file not found")
    if suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif suffix == ".json":
        try:
            data = json.loads(_read_utf8(path))
        except json.JSONDecodeError as exc:
            raise DataError(path, f"malformed JSON ({exc.msg})", exc.lineno) from None
        if not isinstance(data, list):
            raise DataError(path, "expected a JSON list of objects")
        for i, rec in enumerate(data, start=1):
            if not isinstance(rec, dict):
                raise DataError(path, "expected a JSON object", i)
            yield i, rec
    elif suffix == ".parquet":
        yield from enumerate(_read_parquet(path).to_pylist(), start=1)
    elif suffix in (".csv", ".tsv"):
        # csv reads lines from any iterator of strings; line_num counts them (quoted newlines too)
        reader = csv.DictReader((line for _, line in _utf8_lines(path)),
                                delimiter="\t" if suffix == ".tsv" else ",")
        for rec in reader:
            if None in rec:
                raise DataError(path, "more fields than the header has", reader.line_num)
            yield reader.line_num, dict(rec)
    else:
        raise DataError(path, f"unsupported file type '{suffix}' (use one of {', '.join(PAIR_SUFFIXES)})")


def _read_parquet(path: Path) -> Any:
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
                return _utf8_error(path, item, exc, None, field=name, row=row)
    return DataError(path, "text that is not valid UTF-8", field=name)


def _field_str(rec: dict[str, Any], name: str, path: object, line: int, required: bool = True) -> str:
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


# --------------------------------------------------------------------------- builders


class _Builder:
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


def _add_corpus(b: _Builder, rows: Iterable[tuple[int, dict[str, Any]]], path: object) -> None:
    for line, rec in rows:
        doc_id = _field_str(rec, "_id", path, line)
        title = _field_str(rec, "title", path, line, required=False)
        if "text" not in rec:
            raise DataError(path, "is missing", line, "text")
        b.add_doc(doc_id, title, _field_str(rec, "text", path, line), path, line)


def _add_queries(b: _Builder, rows: Iterable[tuple[int, dict[str, Any]]], path: object) -> None:
    for line, rec in rows:
        b.add_query(_field_str(rec, "_id", path, line), _field_str(rec, "text", path, line), path, line)


def _parse_grade(value: object, path: object, line: int) -> int:
    try:
        f = float(str(value).strip())
    except ValueError:
        raise DataError(path, f"score '{value}' is not a number", line, "score") from None
    if f != int(f):
        raise DataError(path, f"score '{value}' is not an integer grade", line, "score")
    return int(f)


def _add_qrels_rows(b: _Builder, rows: Iterable[tuple[int, dict[str, Any]]], path: object) -> None:
    for line, rec in rows:
        qid = str(rec.get("query-id", rec.get("query_id", "")))
        did = str(rec.get("corpus-id", rec.get("corpus_id", "")))
        if not qid:
            raise DataError(path, "is missing", line, "query-id")
        if not did:
            raise DataError(path, "is missing", line, "corpus-id")
        b.add_qrel(qid, did, _parse_grade(rec.get("score", 1), path, line), path, line)


def _read_qrels_tsv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """BEIR qrels: ``query-id corpus-id score`` with a header; TREC's 4-column form also accepted."""
    if not path.is_file():
        raise DataError(path, "file not found")
    for lineno, raw in _utf8_lines(path):
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


# --------------------------------------------------------------------------- public loaders


def load_beir(path: str | Path, split: str = "train", strict: bool = False) -> Collection:
    """Load a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

    Empty documents are skipped with a warning (and their judgements dropped); ``strict=True``
    makes them an error. Queries must have text.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    corpus, queries, qrels = root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"
    for f in (corpus, queries):
        if not f.is_file():
            raise DataError(f, "file not found (a BEIR folder needs corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    if not qrels.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise DataError(qrels, f"file not found (split '{split}'; available: {', '.join(have) or 'none'})")
    b = _Builder(strict=strict)
    _add_corpus(b, _read_jsonl(corpus), corpus)
    _add_queries(b, _read_jsonl(queries), queries)
    _add_qrels_rows(b, _read_qrels_tsv(qrels), qrels)
    source = {"kind": "beir", "path": str(root.resolve()), "split": split,
              "checksums": {str(f.relative_to(root)): sha256_file(f) for f in (corpus, queries, qrels)}}
    return b.build(source)


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


def _add_pairs(b: _Builder, rows: Iterable[tuple[int, dict[str, Any]]], path: object,
               query_column: str | None, positive_column: str | None) -> None:
    qcol = pcol = None
    for line, rec in rows:
        if qcol is None:
            qcol = _pick_column(rec.keys(), query_column, QUERY_COLUMNS, path, "query", line)
            pcol = _pick_column(rec.keys(), positive_column, POSITIVE_COLUMNS, path, "positive", line)
        assert pcol is not None
        query = _field_str(rec, qcol, path, line)
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


def _text_lines(path: Path, column: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """One document per non-empty line of a .txt file, numbered from 1."""
    for i, line in _utf8_lines(path):
        if line.strip():
            yield i, {column: line.rstrip("\r\n")}


def _add_extra_corpus(b: _Builder, path: Path, text_column: str = "text") -> None:
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DataError(path, "file not found")
        rows: Iterable[tuple[int, dict[str, Any]]] = _text_lines(path, text_column)
    else:
        rows = _read_table(path)
    for line, rec in rows:
        text = _field_str(rec, text_column, path, line)
        title = _field_str(rec, "title", path, line, required=False)
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
    """
    path = Path(path)
    b = _Builder(strict=strict)
    _add_pairs(b, _read_table(path), path, query_column, positive_column)
    checksums = {path.name: sha256_file(path)}
    if corpus is not None:
        _add_extra_corpus(b, Path(corpus))
        checksums[Path(corpus).name] = sha256_file(corpus)
    return b.build({"kind": "pairs", "path": str(path.resolve()), "split": None, "checksums": checksums,
                    "corpus": str(Path(corpus).resolve()) if corpus else None})


def load_hf(dataset: Any, split: str = "train", query_column: str | None = None,
            positive_column: str | None = None, revision: str | None = None,
            strict: bool = False) -> Collection:
    """Load from Hugging Face: a ``datasets.Dataset`` / ``DatasetDict`` of pairs, or a hub id or local
    dataset folder, either of pairs or in the MTEB/BEIR layout (configs ``corpus``, ``queries`` and
    ``default`` for qrels; BEIR's ``<id>-qrels`` companion repository is tried too)."""
    import datasets as hfds

    if isinstance(dataset, hfds.DatasetDict):
        if split not in dataset:
            raise DataError("<DatasetDict>", f"no split '{split}' (available: {', '.join(dataset)})")
        dataset = dataset[split]
    if isinstance(dataset, hfds.Dataset):
        b = _Builder(strict=strict)
        name = f"<datasets.Dataset {dataset._fingerprint}>"
        _add_pairs(b, enumerate(dataset, start=1), name, query_column, positive_column)
        return b.build({"kind": "hf-object", "path": name, "split": split,
                        "checksums": {"fingerprint": dataset._fingerprint}})
    name = str(dataset)
    try:
        configs = hfds.get_dataset_config_names(name, revision=revision)
    except Exception as exc:  # noqa: BLE001 - the hub and the loader raise many types; each becomes a DataError
        raise DataError(name, f"cannot open Hugging Face dataset ({type(exc).__name__}: {exc})") from None
    if "corpus" in configs and "queries" in configs:
        b = _Builder(strict=strict)

        def rows(config: str, split_name: str | None = None, repo: str = name) -> Any:
            d = hfds.load_dataset(repo, config, revision=revision)
            part = d[split_name] if split_name else d[next(iter(d))]
            return part

        corpus = rows("corpus")
        queries = rows("queries")
        tag = f"hf:{name}"
        _add_corpus(b, enumerate(corpus, start=1), f"{tag}/corpus")
        _add_queries(b, enumerate(queries, start=1), f"{tag}/queries")
        try:
            qrels = hfds.load_dataset(name, "default", split=split, revision=revision)
            qtag = f"{tag}/default[{split}]"
        except Exception:  # noqa: BLE001 - no "default" qrels config: BEIR's separate -qrels repo
            qrels = hfds.load_dataset(f"{name}-qrels", split=split, revision=revision)
            qtag = f"hf:{name}-qrels[{split}]"
        _add_qrels_rows(b, enumerate(qrels, start=1), qtag)
        fps = {"corpus": corpus._fingerprint, "queries": queries._fingerprint, "qrels": qrels._fingerprint}
        return b.build({"kind": "hf", "path": name, "split": split, "revision": revision, "checksums": fps})
    d = hfds.load_dataset(name, split=split, revision=revision)
    col = load_hf(d, split, query_column, positive_column, strict=strict)
    col.source.update({"kind": "hf", "path": name, "revision": revision})
    return col


def load(dataset: Any, split: str = "train", corpus: str | Path | None = None,
         query_column: str | None = None, positive_column: str | None = None,
         strict: bool = False) -> Collection:
    """Load any supported source: a BEIR folder, a pairs file, a local or hub HF dataset, or a
    ``datasets`` object. See :func:`load_beir`, :func:`load_pairs` and :func:`load_hf`."""
    if isinstance(dataset, Collection):
        return dataset
    if not isinstance(dataset, (str, Path)):
        return load_hf(dataset, split, query_column, positive_column, strict=strict)
    p = Path(dataset)
    if p.is_dir() and ((p / "corpus.jsonl").exists() or (p / "queries.jsonl").exists()):
        return load_beir(p, split, strict=strict)
    if p.is_file() or p.suffix.lower() in PAIR_SUFFIXES:
        return load_pairs(p, corpus, query_column, positive_column, strict=strict)
    if p.is_dir() or "/" in str(dataset) and not str(dataset).startswith((".", "/")):
        return load_hf(str(dataset), split, query_column, positive_column, strict=strict)
    raise DataError(dataset, "dataset not found: not a BEIR folder, a pairs file or a Hugging Face id")
