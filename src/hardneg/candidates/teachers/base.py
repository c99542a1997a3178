"""The one interface every teacher implements: prepare, score pairs, search."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ...collection import Collection
from ...progress import SILENT, Reporter
from ...runs.cache import Cache
from ..search import POOL_PAD, BlockTopk, argpartition_topk, exact_rerank, running_topk


class Teacher(ABC):
    """Scores (query, document) pairs of one collection. ``search`` returns, per query, the top-k
    documents sorted by (score desc, doc index asc) with exact float64 scores; ``pair_scores``
    returns the same numbers for any pairs, so filters compare like with like."""

    name: str = "teacher"

    @abstractmethod
    def prepare(self, collection: Collection, query_idx: np.ndarray, cache: Cache,
                reporter: Reporter = SILENT) -> None:
        """Index or encode what ``search``/``pair_scores`` need for these queries."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Identity of the scoring function (model, settings, corpus): equal means same scores."""

    @abstractmethod
    def pair_scores(self, query_idx: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
        """Exact float64 scores for collection query indices paired with doc indices."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": type(self).__name__, "fingerprint": self.fingerprint()}

    doc_chunk, query_chunk = 32768, 1024  # the (queries x documents) block of the coarse search

    def search(self, query_idx: np.ndarray, k: int, reporter: Reporter = SILENT,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query, exact: a coarse running top-k over corpus chunks (each chunk's top-k from
        :meth:`_block_topk`), then exact re-ranking of the pool with :meth:`pair_scores`."""
        n = self._num_docs()
        with reporter.task(f"search ({self.name})", len(query_idx) * n) as adv:
            pool_i, pool_s = running_topk(None, len(query_idx), n, min(n, k + POOL_PAD), doc_chunk=self.doc_chunk,
                                          query_chunk=self.query_chunk, on_progress=adv,
                                          block_topk=self._block_topk(query_idx))
        ids, scores, self.exhaustive_queries = exact_rerank(
            pool_i, pool_s, k, lambda rows, d: self.pair_scores(query_idx[rows], d), n)
        return ids, scores

    def _block_topk(self, query_idx: np.ndarray) -> BlockTopk:
        """The coarse top-k of a block of these queries: by default :meth:`_score_block` + argpartition."""
        return argpartition_topk(lambda rows, d0, d1: self._score_block(query_idx[rows], d0, d1))

    def _num_docs(self) -> int:
        raise NotImplementedError

    def _score_block(self, query_idx: np.ndarray, d0: int, d1: int) -> np.ndarray:
        raise NotImplementedError
