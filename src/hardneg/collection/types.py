"""The Collection and Qrels types: documents, queries and graded judgements as id-sorted arrays.

A collection's fingerprints (of its corpus, queries and qrels) are computed once and kept on the
object as private attributes; ``source`` holds only what describes where the data came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..runs.files import sha256_texts


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
    # fingerprints, computed on first use (the texts are hashed once per object)
    _corpus_fp: str | None = field(default=None, init=False, repr=False, compare=False)
    _queries_fp: str | None = field(default=None, init=False, repr=False, compare=False)

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
        if self._corpus_fp is None:
            self._corpus_fp = sha256_texts(list(self.doc_ids), self.doc_texts)
        return self._corpus_fp

    def queries_fingerprint(self) -> str:
        if self._queries_fp is None:
            self._queries_fp = sha256_texts(list(self.query_ids), self.query_texts)
        return self._queries_fp

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
        and ``extra_docs`` other documents chosen with ``seed``. For tests and ``--quick`` runs.

        Args:
            num_queries: how many judged queries to keep (the first ones, by id).
            extra_docs: how many other documents to add to those the kept queries judge.
            seed: chooses the extra documents.

        Returns:
            A new Collection; its ``source`` records the slice.

        Example:
            ::

                small = hardneg.load("data/scifact", split="train").slice(20, extra_docs=500)
        """
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
        source = dict(self.source)
        source["slice"] = {"num_queries": int(num_queries), "extra_docs": int(extra_docs), "seed": seed}
        return Collection(self.doc_ids[keep_docs], [self.doc_texts[i] for i in keep_docs],
                          self.query_ids[judged], [self.query_texts[i] for i in judged], qr,
                          source, list(self.notes), list(self.warnings))


    def holdout(self, num_queries: int, seed: int = 0, part: str = "fit") -> Collection:
        """Split the judged queries in two, corpus untouched: ``part="dev"`` keeps ``num_queries`` of
        them chosen by a seeded hash of their ids, ``part="fit"`` keeps the rest. For dev choices.

        Args:
            num_queries: the size of the dev part (0 < n < the number of judged queries).
            seed: chooses which queries go to dev.
            part: ``"fit"`` or ``"dev"``, the part to return.

        Returns:
            A new Collection with the same corpus (and corpus fingerprint); its ``source`` records
            the holdout.

        Example:
            ::

                col = hardneg.load("data/scifact", split="train")
                fit, dev = col.holdout(100, part="fit"), col.holdout(100, part="dev")
        """
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
        source = dict(self.source)
        source["holdout"] = {"num_queries": int(num_queries), "seed": seed, "part": part}
        out = Collection(self.doc_ids, self.doc_texts, self.query_ids[keep],
                         [self.query_texts[i] for i in keep], qr, source, list(self.notes),
                         list(self.warnings))
        out._corpus_fp = self._corpus_fp  # same corpus: its fingerprint holds
        return out


def _lookup(sorted_ids: np.ndarray, ids: Sequence[str] | np.ndarray, what: str) -> np.ndarray:
    ids_arr = np.asarray(list(ids), dtype=object)
    pos = np.searchsorted(sorted_ids, ids_arr)
    pos_c = np.minimum(pos, max(sorted_ids.size - 1, 0))
    ok = (pos < sorted_ids.size) & (sorted_ids[pos_c] == ids_arr) if sorted_ids.size else np.zeros(ids_arr.size, bool)
    if not np.all(ok):
        raise KeyError(f"unknown {what} id {ids_arr[~ok][0]!r}")
    return pos.astype(np.int64)
