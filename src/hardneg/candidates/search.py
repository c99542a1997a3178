"""Top-k search: a corpus-chunked running top-k, faiss indexes, and an exact re-ranking step that
makes every path return the same documents in the same order (ties broken by document index,
which is document-id order because collections are sorted by id)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

ScoreBlock = Callable[[np.ndarray, int, int], np.ndarray]
"""(query rows, doc start, doc end) -> coarse float32 scores of shape (len(rows), end - start)."""
PairScores = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(query rows, doc indices) -> exact float64 scores, one per pair."""

POOL_PAD = 16  # extra coarse candidates kept so that the exact re-ranking has room at the boundary


BlockTopk = Callable[[np.ndarray, int, int, int], tuple[np.ndarray, np.ndarray]]
"""(query rows, doc start, doc end, k) -> (doc indices relative to start, scores) of the block's top k."""


def argpartition_topk(score_block: ScoreBlock) -> BlockTopk:
    """Coarse top-k of a block by scoring it whole (``score_block``) and ``np.argpartition``."""

    def block_topk(rows: np.ndarray, d0: int, d1: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(score_block(rows, d0, d1), dtype=np.float32)
        if k >= d1 - d0:
            return np.broadcast_to(np.arange(d1 - d0), s.shape), s
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        return part, np.take_along_axis(s, part, axis=1)
    return block_topk


def knn_block_topk(queries: np.ndarray, docs: Any) -> BlockTopk:
    """Exact inner-product top-k of a corpus chunk with faiss's ``knn``. ``docs`` is any sliceable
    (n, dim) matrix (an on-disk :class:`EmbeddingMatrix` too); the last chunk read is kept while
    :func:`running_topk` loops over query chunks, so each chunk is read once."""
    import faiss

    last: dict[tuple[int, int], np.ndarray] = {}

    def block_topk(rows: np.ndarray, d0: int, d1: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        if (d0, d1) not in last:
            last.clear()
            last[(d0, d1)] = np.ascontiguousarray(docs[d0:d1], dtype=np.float32)
        scores, ids = faiss.knn(queries[rows], last[(d0, d1)], k, metric=faiss.METRIC_INNER_PRODUCT)
        return ids, scores
    return block_topk


def running_topk(score_block: ScoreBlock | None, num_queries: int, num_docs: int, k: int,
                 doc_chunk: int = 32768, query_chunk: int = 1024,
                 on_progress: Callable[[int], None] | None = None,
                 block_topk: BlockTopk | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` coarse (index, score) pairs per query over the whole corpus. The corpus is read
    once, chunk by chunk (outer loop), and at most one (query_chunk x doc_chunk) score block is in
    memory at a time, so peak memory is bounded by a chunk, not by the corpus. Rows are not sorted.
    ``block_topk`` (e.g. faiss's exact knn for dense vectors) replaces scoring + argpartition."""
    topk = block_topk or argpartition_topk(score_block)  # type: ignore[arg-type]
    k = min(k, num_docs)
    best_i = np.full((num_queries, k), -1, dtype=np.int64)
    best_s = np.full((num_queries, k), -np.inf, dtype=np.float32)
    for d0 in range(0, num_docs, doc_chunk):
        d1 = min(d0 + doc_chunk, num_docs)
        for q0 in range(0, num_queries, query_chunk):
            rows = np.arange(q0, min(q0 + query_chunk, num_queries))
            part, ps = topk(rows, d0, d1, min(k, d1 - d0))
            cat_s = np.concatenate([best_s[rows], np.asarray(ps, dtype=np.float32)], axis=1)
            cat_i = np.concatenate([best_i[rows], np.asarray(part, dtype=np.int64) + d0], axis=1)
            sel = np.argpartition(-cat_s, k - 1, axis=1)[:, :k]
            best_s[rows] = np.take_along_axis(cat_s, sel, axis=1)
            best_i[rows] = np.take_along_axis(cat_i, sel, axis=1)
            if on_progress:
                on_progress(rows.size * (d1 - d0))
    return best_i, best_s


def exact_rerank(pool_i: np.ndarray, pool_s: np.ndarray, needed: int, pair_scores: PairScores,
                 num_docs: int, verify: bool = True, rel_eps: float = 1e-4,
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """Re-score a coarse pool exactly, sort by (score desc, doc index asc) and keep ``needed``.

    With ``verify`` (exact and flat searches), a query whose ``needed``-th exact score is within
    float error of the pool's lowest coarse score may have lost a tied document outside the pool:
    that query is scored against the whole corpus instead. Returns (ids, scores, n_exhaustive)."""
    nq = pool_i.shape[0]
    needed = min(needed, num_docs)
    valid = pool_i >= 0
    rows, cols = np.nonzero(valid)
    fine = np.full(pool_i.shape, -np.inf, dtype=np.float64)
    if rows.size:
        fine[rows, cols] = pair_scores(rows, pool_i[rows, cols])
    ids = np.where(valid, pool_i, np.iinfo(np.int64).max)
    order = np.lexsort((ids, -fine), axis=1)[:, :needed]
    out_i = np.take_along_axis(pool_i, order, axis=1)
    out_s = np.take_along_axis(fine, order, axis=1)
    n_exhaustive = 0
    if verify and pool_i.shape[1] < num_docs and needed > 0 and nq:
        coarse_min = np.where(valid, pool_s, np.inf).min(axis=1).astype(np.float64)
        boundary = out_s[:, needed - 1]
        eps = rel_eps * np.maximum(1.0, np.abs(boundary))
        unsafe = np.nonzero(boundary <= coarse_min + 2 * eps)[0]
        n_exhaustive = int(unsafe.size)
        all_docs = np.arange(num_docs, dtype=np.int64)
        for q in unsafe:  # rare: only when ties straddle the pool boundary
            s = pair_scores(np.full(num_docs, q, dtype=np.int64), all_docs)
            o = np.lexsort((all_docs, -s))[:needed]
            out_i[q], out_s[q] = o, s[o]
    return out_i, out_s, n_exhaustive


def pair_dot(queries: Any, docs: Any, rows: np.ndarray, doc_idx: np.ndarray, step: int = 8192) -> np.ndarray:
    """float64 dot products of ``queries[rows[i]]`` and ``docs[doc_idx[i]]``, ``step`` pairs at a
    time (~25 MB for 384-d), so memory does not grow with the number of pairs."""
    out = np.empty(len(rows), dtype=np.float64)
    for s in range(0, len(rows), step):
        q = np.asarray(queries[rows[s:s + step]], dtype=np.float64)
        d = np.asarray(docs[doc_idx[s:s + step]], dtype=np.float64)
        out[s:s + len(q)] = (q * d).sum(axis=1)
    return out


def faiss_pool(corpus: Any, queries: np.ndarray, k: int, kind: str, seed: int = 0,
               add_chunk: int = 65536, timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Coarse top-k by inner product with a faiss index: ``flat`` (exact), ``hnsw``, ``ivf``,
    ``ivfsq`` (8-bit codes: dim bytes a vector) or ``ivfpq`` (product codes: ~dim/8 bytes a vector),
    the last two for corpora whose float vectors do not fit in memory.
    ``corpus`` is any (n, dim) matrix that can be sliced (an on-disk :class:`EmbeddingMatrix` too);
    it is added in chunks, and IVF indexes train on a seeded sample (64 rows a list, at least 10,000).
    ``timings`` receives ``train_s``, ``add_s`` and ``search_s``: an index is built once and searched by
    many query batches, and the three grow differently with the corpus."""
    import time

    t0 = time.perf_counter()
    k = min(k, corpus.shape[0])
    xq = np.ascontiguousarray(queries, dtype=np.float32)
    index = trained_index(corpus, kind, seed)
    if kind == "hnsw":
        index.hnsw.efSearch = max(128, 2 * k)
    t1 = time.perf_counter()
    add_vectors(index, corpus, add_chunk)
    t2 = time.perf_counter()
    scores, ids = index.search(xq, k)
    if timings is not None:
        timings.update(train_s=t1 - t0, add_s=t2 - t1, search_s=time.perf_counter() - t2)
    return ids.astype(np.int64), scores.astype(np.float32)


def trained_index(corpus: Any, kind: str, seed: int = 0) -> Any:
    """An empty inner-product faiss index of ``kind`` for ``corpus``, trained where it needs to be
    (IVF kinds: on a seeded sample of the corpus), with its search settings (nprobe) set."""
    import faiss

    n, dim = corpus.shape
    # ivfpq scans few lists of compact codes (and the exact rerank repairs the order).
    nlist = max(1, min(int((1 if kind in ("ivfpq", "ivfsq") else 4) * np.sqrt(n)), n // 39 or 1))
    index: Any  # one of faiss's index classes
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    elif kind in ("ivf", "ivfpq", "ivfsq"):
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        elif kind == "ivfsq":
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        else:
            m = next(m for m in (dim // 8, dim // 4, dim // 2, dim, 1) if m and dim % m == 0)
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, max(64 * nlist, 10_000)), replace=False))  # PQ: 39 x 256
        index.train(np.ascontiguousarray(corpus[sample], dtype=np.float32))
        index.nprobe = min(nlist, max(8, nlist // 8) if kind == "ivf" else 64)
    else:
        raise ValueError(f"unknown faiss index '{kind}' (flat, hnsw, ivf, ivfpq, ivfsq)")
    return index


def add_vectors(index: Any, corpus: Any, add_chunk: int = 65536) -> None:
    """Add ``corpus`` to ``index`` in chunks, row i with id i. IVF lists are assigned by a GEMM +
    argmax against the centroids and handed to ``add_core``: the same lists as faiss's own ``add``
    (tested), which ran ~4.6x slower here."""
    import faiss

    n = corpus.shape[0]
    centroids = index.quantizer.reconstruct_n(0, index.nlist) if isinstance(index, faiss.IndexIVF) else None
    for s in range(0, n, add_chunk):
        x = np.ascontiguousarray(corpus[s:min(s + add_chunk, n)], dtype=np.float32)
        if centroids is None:
            index.add(x)
        else:
            lists = np.concatenate([np.argmax(x[i:i + 8192] @ centroids.T, axis=1)
                                    for i in range(0, len(x), 8192)]).astype(np.int64)
            row_ids = np.arange(s, s + len(x), dtype=np.int64)  # named: swig_ptr keeps no reference
            index.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(row_ids), faiss.swig_ptr(lists))


def recall_at(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-k found by an approximate search (rows are queries)."""
    hits = [np.intersect1d(a[a >= 0], e[e >= 0]).size / max(1, (e >= 0).sum()) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) if hits else 1.0
