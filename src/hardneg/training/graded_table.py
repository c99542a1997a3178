"""The training table of the graded losses: one row per query, its graded list from a mined run.

A row is ``anchor, doc_1..doc_{P+k}, label``: up to ``P`` of the query's positives with their qrels
grade, spread over the grade levels (the first positive of every level, highest level first, then
the second of every level, and so on; within a level the run's order, which is document-id order),
listed highest grade first; then ``k`` negatives with grade 0. So a
query judged 3, 3, 3, 2, 1 with ``P`` = 3 gets grades 3, 2, 1, not 3, 3, 3: a list of one level
teaches nothing about levels.

The ``k`` negative slots take first the query's *judged* grade-0 documents (qrels rows with score 0,
in document-id order: judged non-relevant by a person, or the level-0 documents ``hardneg generate
graded`` wrote for it), then its mined negatives in rank order, a document listed once
(``judged_zeros=False``: mined negatives only). A collection without grade-0 qrels rows gets the
same table either way. A query with fewer than ``P`` positives or
``k`` negatives fills the empty slots with its first positive's text and grade -1 (padding: the
losses leave it out of every list). Rows with no positive are dropped. ``label`` holds the grades
as float32, aligned with ``doc_1..``.

Real graded qrels flow through as they are: NFCorpus dev/test (grades 1-2), Cranfield (1-4, and
225 grade-0 rows in test); so do the synthetic graded lists of ``hardneg generate graded``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..collection import Collection
from ..errors import ConfigError
from ..runs.columns import flat
from ..runs.run import Run

DEFAULT_POSITIVES = 4
"""Positives per query when ``graded_positives`` is not set."""


def _slots(row: np.ndarray, values: np.ndarray, rows: int, width: int, fill: float) -> np.ndarray:
    """(rows, width): each row's first ``width`` values (``row`` is sorted), ``fill`` where short."""
    start = np.searchsorted(row, np.arange(rows))
    rank = np.arange(row.size) - start[row]
    keep = rank < width
    out = np.full((rows, width), fill, dtype=values.dtype)
    out[row[keep], rank[keep]] = values[keep]
    return out


def _spread_over_grades(ids: np.ndarray, row: np.ndarray, grade: np.ndarray,
                        p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's chosen positives (at most ``p``), highest grade first: the first of every grade level
    (highest level first), then the second of every level, and so on; within a level, the run's order."""
    pos = np.arange(row.size)
    order = np.lexsort((pos, -grade.astype(np.float64), row))  # row, grade desc, run order
    r, g = row[order], grade[order]
    new_group = np.r_[True, (r[1:] != r[:-1]) | (g[1:] != g[:-1])]
    starts = np.flatnonzero(new_group)
    level_rank = np.empty(row.size, np.int64)
    level_rank[order] = pos - starts[np.cumsum(new_group) - 1]  # place among its row's positives of its grade
    turn = np.lexsort((-grade.astype(np.float64), level_rank, row))  # row, round, grade desc
    row_start = np.searchsorted(row[turn], row[turn], side="left")
    chosen = turn[pos - row_start < p]
    chosen = chosen[np.lexsort((chosen, -grade[chosen].astype(np.float64), row[chosen]))]
    return ids[chosen], row[chosen], grade[chosen]


def _judged_then_mined(col: Collection, query_ids: np.ndarray, neg_row: np.ndarray,
                       neg_doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, doc) of each query's negatives, rows sorted: its grade-0 qrels documents (document-id
    order) before its mined ones (rank order), each (row, doc) once."""
    row_of = np.full(col.query_ids.size, -1, dtype=np.int64)
    row_of[col.query_index(query_ids)] = np.arange(query_ids.size)
    qr = col.qrels
    zero = (qr.grade == 0) & (row_of[qr.query_idx] >= 0)
    if not zero.any():
        return neg_row, neg_doc
    row = np.concatenate([row_of[qr.query_idx[zero]], neg_row])
    doc = np.concatenate([qr.doc_idx[zero], neg_doc])
    order = np.argsort(row, kind="stable")  # judged before mined within a row
    row, doc = row[order], doc[order]
    _, first = np.unique(row * col.num_docs + doc, return_index=True)
    keep = np.sort(first)
    return row[keep], doc[keep]


def graded_table(run: Run, num_negatives: int | None = None, positives: int | None = None,
                 judged_zeros: bool = True) -> pa.Table:
    """The graded lists of a run as a sentence-transformers table (see the module docstring).

    Args:
        run: a mined run; its ``positive_grades`` are the qrels grades.
        num_negatives: ``k``, negative slots per query [default: as many as the run mined].
        positives: up to this many positives per query, spread over the grade levels [default 4].
        judged_zeros: the query's grade-0 qrels documents take its first negative slots, before the
            mined negatives [default True].

    Returns:
        ``anchor, doc_1..doc_n, label`` with n = positives + negatives.
    """
    p = DEFAULT_POSITIVES if positives is None else int(positives)
    if p < 1:
        raise ConfigError(f"graded_positives: must be at least 1, got {positives}")
    n_mined = int(run.manifest["config"]["num_negatives"])
    k = min(num_negatives or n_mined, n_mined)
    neg = run.negatives
    nq = neg.num_rows
    pos_ids, pos_row = flat(neg, "positive_ids")
    pos_grade, _ = flat(neg, "positive_grades")
    neg_ids, neg_row = flat(neg, "negative_ids")
    pos_ids, pos_row, pos_grade = _spread_over_grades(pos_ids, pos_row, pos_grade, p)
    col = run.collection()
    pos_doc = col.doc_index(pos_ids) if pos_ids.size else np.zeros(0, np.int64)
    neg_doc = col.doc_index(neg_ids) if neg_ids.size else np.zeros(0, np.int64)
    if judged_zeros:
        neg_row, neg_doc = _judged_then_mined(col, neg.column("query_id").to_numpy(zero_copy_only=False),
                                              neg_row, neg_doc)
    negatives = _slots(neg_row, neg_doc, nq, k, -1)
    docs = np.concatenate([_slots(pos_row, pos_doc, nq, p, -1), negatives], axis=1)
    grades = np.concatenate([_slots(pos_row, pos_grade.astype(np.float32), nq, p, -1.0),
                             np.where(negatives >= 0, 0.0, -1.0).astype(np.float32)], axis=1)
    has_positive = docs[:, 0] >= 0
    if not has_positive.any():
        raise ConfigError("graded losses: the run has no query with a positive")
    docs, grades = docs[has_positive], grades[has_positive]
    docs = np.where(docs >= 0, docs, docs[:, :1])  # padding: the row's first positive, left out by its grade -1
    anchors = col.query_index(neg.column("query_id").to_numpy(zero_copy_only=False)[has_positive])
    cols: dict[str, object] = {"anchor": [col.query_texts[i] for i in anchors]}
    for j in range(docs.shape[1]):
        cols[f"doc_{j + 1}"] = [col.doc_texts[i] for i in docs[:, j]]
    offsets = pa.array(np.arange(grades.shape[0] + 1, dtype=np.int32) * grades.shape[1], pa.int32())
    cols["label"] = pa.ListArray.from_arrays(offsets, pa.array(grades.ravel(), pa.float32()))
    return pa.table(cols)
