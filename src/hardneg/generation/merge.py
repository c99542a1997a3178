"""Near-identical generated queries merged: two queries are the same when their normalised text (case
folded, punctuation dropped, whitespace collapsed) is. The same query written twice for one document is
kept once (the others are dropped as ``duplicate``); one written for several documents becomes one query
with each of them as a positive (it was written from each, and each survived its own round trip)."""

from __future__ import annotations

import numpy as np

from .validation import normalise


def first_of_groups(keys: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row (in the given order) with the same key."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def same_doc_duplicates(doc_row: np.ndarray, texts: list[str], kept: np.ndarray) -> np.ndarray:
    """Mask of the kept slots whose normalised text an earlier kept slot of the same document has."""
    rows = np.nonzero(kept)[0]
    dup = np.zeros(len(texts), dtype=bool)
    if rows.size:
        keys = np.array([f"{doc_row[i]}\x00{normalise(texts[i])}" for i in rows], dtype=object)
        dup[rows] = first_of_groups(keys) != np.arange(rows.size)
    return dup


def merged_query(texts: list[str], kept: np.ndarray, slot_ids: np.ndarray) -> np.ndarray:
    """Per slot, the id of the query it ends up in: for a kept slot, the id of the first kept slot with
    the same normalised text; "" for the others."""
    out = np.full(len(texts), "", dtype=object)
    rows = np.nonzero(kept)[0]
    if rows.size:
        keys = np.array([normalise(texts[i]) for i in rows], dtype=object)
        out[rows] = slot_ids[rows][first_of_groups(keys)]
    return out
