"""BM25 with bm25s: its score matrix, used as sparse matrices so search and pair scoring are
vectorised and agree exactly."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.sparse as sp

from ...collection import Collection
from ...progress import SILENT, Reporter
from ...runs.cache import Cache
from ...runs.fingerprint import settings_key
from .base import Teacher


def import_bm25s() -> Any:
    """``import bm25s``. Where JAX is installed, bm25s runs a JAX op at import, and JAX then takes 75% of
    the GPU's memory up front, so a trainer in the same process runs out of memory (seen on an H200).
    hardneg never uses bm25s's JAX path: unless the user configured JAX, it allocates on demand."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import bm25s

    return bm25s


class BM25Teacher(Teacher):
    """Lexical teacher: bm25s (Lucene BM25, k1=1.5, b=0.75) with English stop words. No stemming by
    default, which reproduces the published BM25 figure on SciFact (0.662 vs BEIR's 0.665);
    ``stemmer="english"`` (teacher ``bm25:stem``) adds Snowball stemming (0.686 there)."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene",
                 stemmer: str | None = None, stopwords: str | None = "en", name: str = "bm25"):
        self.k1, self.b, self.method, self.stemmer, self.stopwords, self.name = k1, b, method, stemmer, stopwords, name
        self._fp: str | None = None

    def settings(self) -> dict[str, object]:
        return {"k1": self.k1, "b": self.b, "method": self.method, "stemmer": self.stemmer,
                "stopwords": self.stopwords}

    def prepare(self, collection: Collection, query_idx: np.ndarray, cache: Cache,
                reporter: Reporter = SILENT) -> None:
        bm25s = import_bm25s()
        from bm25s.tokenization import Tokenizer

        stem = None
        if self.stemmer:
            import Stemmer

            stem = Stemmer.Stemmer(self.stemmer).stemWord
        tok = Tokenizer(stemmer=stem, stopwords=self.stopwords or [])
        with reporter.task("bm25 index", 2) as adv:
            corpus_tokens = tok.tokenize(list(collection.doc_texts), return_as="tuple", show_progress=False)
            retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
            retriever.index(corpus_tokens, show_progress=False)
            adv(1)
            if retriever.nonoccurrence_array is not None:
                raise ValueError(f"BM25 method '{self.method}' is not supported (use lucene, robertson or atire)")
            sc = retriever.scores
            vocab = len(sc["indptr"]) - 1
            # rows = tokens, columns = documents; stored transposed for fast document slices.
            term_doc = sp.csr_matrix((sc["data"], sc["indices"], sc["indptr"]), shape=(vocab, sc["num_docs"]))
            self._doc_term = term_doc.T.tocsr().astype(np.float64)
            self._doc_term_f32 = self._doc_term.astype(np.float32)
            q_tokens = tok.tokenize([collection.query_texts[i] for i in range(len(collection.query_texts))],
                                    update_vocab=False, return_as="ids", show_progress=False)
            rows = np.repeat(np.arange(len(q_tokens)), [len(t) for t in q_tokens])
            cols = np.fromiter((t for ts in q_tokens for t in ts), dtype=np.int64, count=rows.size)
            qt = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(len(q_tokens), vocab))
            qt.sum_duplicates()
            self._query_term = qt.astype(np.float64)
            self._query_term_f32 = qt.astype(np.float32)
            adv(1)
        self._fp = settings_key("bm25", self.settings(), collection.corpus_fingerprint(),
                                collection.queries_fingerprint())

    def fingerprint(self) -> str:
        if self._fp is None:
            raise RuntimeError("prepare() the teacher first")
        return self._fp

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "settings": self.settings()}

    def _num_docs(self) -> int:
        return int(self._doc_term.shape[0])

    def _score_block(self, query_idx: np.ndarray, d0: int, d1: int) -> np.ndarray:
        return (self._query_term_f32[query_idx] @ self._doc_term_f32[d0:d1].T).toarray()

    def pair_scores(self, query_idx: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
        out = np.empty(len(query_idx), dtype=np.float64)
        for s in range(0, len(query_idx), 200_000):
            q, d = query_idx[s:s + 200_000], doc_idx[s:s + 200_000]
            out[s:s + len(q)] = np.asarray(self._query_term[q].multiply(self._doc_term[d]).sum(axis=1)).ravel()
        return out
