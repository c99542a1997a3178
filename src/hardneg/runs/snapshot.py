"""The collection a run was mined from, kept content-addressed in the cache: document ids and
texts, query ids and texts, and the qrels, under ``CACHE/collections/<qrels fingerprint>/`` (the
qrels fingerprint covers the corpus and the queries too). Every consumer of a run (export,
training, the judge, the report) reads the collection from here, never from the dataset path, so
a run mined from an in-memory ``datasets.Dataset`` still exports. One copy serves every run mined
from the same collection. Loading checks it against the fingerprints in the run's manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..collection import Collection, Qrels
from ..errors import RunError
from .files import staged_dir
from .fingerprint import env_cache_dir

_FILES = ("docs.parquet", "queries.parquet", "qrels.parquet")


def snapshot_dir(cache_root: Path, key: str) -> Path:
    return cache_root / "collections" / key


def write_snapshot(col: Collection, cache_root: Path) -> dict[str, str]:
    """Keep ``col`` in the cache (zstd parquet; qrels as row indices into the sorted ids), unless
    a snapshot with its fingerprint is there already, and return what the manifest's
    ``data.snapshot`` records: the cache folder and the fingerprints to check on loading."""
    cache_root = Path(cache_root).resolve()
    key = col.qrels_fingerprint()
    final = snapshot_dir(cache_root, key)
    if not all((final / f).exists() for f in _FILES):
        with staged_dir(final, overwrite=True) as out:
            pq.write_table(pa.table({"doc_id": pa.array(col.doc_ids.tolist(), pa.string()),
                                     "text": pa.array(col.doc_texts, pa.string())}), out / "docs.parquet",
                           compression="zstd")
            pq.write_table(pa.table({"query_id": pa.array(col.query_ids.tolist(), pa.string()),
                                     "text": pa.array(col.query_texts, pa.string())}), out / "queries.parquet",
                           compression="zstd")
            pq.write_table(pa.table({"query_idx": pa.array(col.qrels.query_idx, pa.int64()),
                                     "doc_idx": pa.array(col.qrels.doc_idx, pa.int64()),
                                     "grade": pa.array(col.qrels.grade, pa.int32())}), out / "qrels.parquet",
                           compression="zstd")
    return {"cache_dir": str(cache_root), "corpus_fingerprint": col.corpus_fingerprint(),
            "queries_fingerprint": col.queries_fingerprint(), "qrels_fingerprint": key}


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def read_snapshot(data: dict[str, Any]) -> Collection:
    """The collection a run's manifest ``data`` section names, from the cache it was kept in (else
    from this user's cache), checked: its corpus, queries and qrels must hash to the recorded
    fingerprints."""
    want = data["snapshot"]
    key = want["qrels_fingerprint"]
    folders = [snapshot_dir(Path(want["cache_dir"]), key), snapshot_dir(env_cache_dir(None), key)]
    folder = next((f for f in folders if all((f / name).exists() for name in _FILES)), None)
    if folder is None:
        raise RunError(f"the collection this run was mined from is not in the cache any more "
                       f"({folders[0]}): mine it again")
    docs = pq.read_table(folder / "docs.parquet")
    queries = pq.read_table(folder / "queries.parquet")
    qrels = pq.read_table(folder / "qrels.parquet")
    source = {k: v for k, v in data.items() if k != "snapshot"}
    source["snapshot"] = str(folder)
    col = Collection(_column(docs, "doc_id").astype(object), docs.column("text").to_pylist(),
                     _column(queries, "query_id").astype(object), queries.column("text").to_pylist(),
                     Qrels(_column(qrels, "query_idx"), _column(qrels, "doc_idx"), _column(qrels, "grade")),
                     source)
    got = {"corpus_fingerprint": col.corpus_fingerprint(), "queries_fingerprint": col.queries_fingerprint(),
           "qrels_fingerprint": col.qrels_fingerprint()}
    if got["corpus_fingerprint"] != data.get("corpus_fingerprint") or any(want.get(k) != v for k, v in got.items()):
        raise RunError(f"{folder}: the collection kept for this run does not match its manifest "
                       "(a file was changed or replaced)")
    return col
