"""Synthetic documents: the ids that say a document was written by a generator, not found in the corpus.

A generated document is attached to one query through the qrels (a graded document of
``hardneg generate graded`` is judged at its level for the query it was written for, and for no
other). Its id says so wherever the folder is read (every loader keeps ids, none keeps a record's
metadata): ``gen-<kind>:<query id>:<part>...``, e.g. ``gen-graded:q12:2:0`` (query ``q12``, level 2,
sample 0). The miner never offers a synthetic document as a candidate (reason ``synthetic``): it
was written for one query, so for a similar query it may well be relevant, and it is judged for
its own query already.

Example::

    synthetic_id("graded", "q12", 2, 0)                    # 'gen-graded:q12:2:0'
    synthetic_mask(np.array(["d1", "gen-graded:q12:2:0"], dtype=object))  # [False, True]
"""

from __future__ import annotations

import re

import numpy as np

PREFIX = "gen-"
_ID = re.compile(r"gen-[a-z][a-z0-9]*:")


def synthetic_id(kind: str, query_id: str, *parts: object) -> str:
    """The id of a document generator ``kind`` wrote for ``query_id`` (``parts``: level, sample, ...)."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", kind):
        raise ValueError(f"generator kind must be lower-case letters and digits, not {kind!r}")
    return ":".join([f"{PREFIX}{kind}", str(query_id), *map(str, parts)])


def synthetic_mask(doc_ids: np.ndarray) -> np.ndarray:
    """Per document id, whether it names a synthetic document (``gen-<kind>:...``)."""
    ids = np.asarray(doc_ids, dtype=object)
    out = np.zeros(ids.size, dtype=bool)
    if ids.size:
        maybe = np.flatnonzero(np.char.startswith(ids.astype(str), PREFIX))
        out[maybe] = [_ID.match(str(ids[i])) is not None for i in maybe]
    return out
