"""How close each candidate is to its query's known positives: word-shingle Jaccard (near-duplicate
text) and embedding cosine (near-positive meaning). Unlabelled positives tend to look like the
labelled ones; these catch what a score threshold alone cannot."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..runs.files import hash64

SHINGLE = 3
HASH_BITS = 22
_WORD = re.compile(r"\w+")


def shingle_matrix(texts: list[str], n: int = SHINGLE) -> sp.csr_matrix:
    """Binary (texts x 2^HASH_BITS) matrix of hashed word n-shingles (short texts: their words)."""
    indptr, indices = [0], []
    mask = (1 << HASH_BITS) - 1
    for t in texts:
        words = _WORD.findall(t.casefold())
        grams = {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))} if words else set()
        hs = {hash64(g) & mask for g in grams}
        indices.extend(sorted(hs))
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
                         shape=(len(texts), 1 << HASH_BITS))


def pair_jaccard(m: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard similarity of rows ``a[i]`` and ``b[i]`` of a binary matrix."""
    out = np.empty(a.size)
    sizes = np.asarray(m.sum(axis=1)).ravel()
    for s in range(0, a.size, 200_000):
        x, y = a[s:s + 200_000], b[s:s + 200_000]
        inter = np.asarray(m[x].multiply(m[y]).sum(axis=1)).ravel()
        union = sizes[x] + sizes[y] - inter
        out[s:s + x.size] = np.divide(inter, union, out=np.zeros(x.size), where=union > 0)
    return out


def pair_cosine(vectors: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of rows ``a[i]`` and ``b[i]`` of ``vectors``, in chunks."""
    out = np.empty(a.size)
    for s in range(0, a.size, 100_000):
        x = np.asarray(vectors[a[s:s + 100_000]], dtype=np.float32)
        y = np.asarray(vectors[b[s:s + 100_000]], dtype=np.float32)
        num = (x * y).sum(axis=1)
        den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        out[s:s + x.shape[0]] = np.divide(num, den, out=np.zeros(x.shape[0], dtype=np.float32), where=den > 0)
    return out


def max_to_positives(ids: np.ndarray, valid: np.ndarray, pos_local: np.ndarray, pos_docs: np.ndarray,
                     pair_fn: object) -> tuple[np.ndarray, np.ndarray]:
    """(rows x candidates) max similarity of each candidate to any known positive of its row, and that
    positive's document index (-1 where none; the first positive of the row on a tie). ``pos_local``
    (sorted) is the row of each positive; ``pair_fn(a, b)`` scores doc pairs."""
    out = np.full(ids.shape, -np.inf)
    nearest = np.full(ids.shape, -1, dtype=np.int64)
    if pos_local.size == 0:
        return out, nearest
    c = ids.shape[1]
    pr = np.repeat(pos_local, c)
    cols = np.tile(np.arange(c), pos_local.size)
    which = np.repeat(np.arange(pos_local.size), c)
    ok = valid[pr, cols]
    sims = np.full(pr.size, -np.inf)
    sims[ok] = pair_fn(ids[pr[ok], cols[ok]], np.repeat(pos_docs, c)[ok])  # type: ignore[operator]
    np.maximum.at(out, (pr, cols), sims)
    best = ok & (sims == out[pr, cols])
    first = np.full(ids.shape, pos_local.size)
    np.minimum.at(first, (pr[best], cols[best]), which[best])
    has = first < pos_local.size
    nearest[has] = pos_docs[first[has]]
    return out, nearest


def knn_positive_share(ids: np.ndarray, valid: np.ndarray, pos_local: np.ndarray, pos_docs: np.ndarray,
                       vectors: np.ndarray, k: int = 10, budget: int = 20_000_000) -> np.ndarray:
    """(rows x candidates) share of each candidate's nearest neighbours, within its query's pool
    (known positives + candidates), that are known positives: the kNN "intrinsic" noise test. A
    query with n positives looks at min(k, 2n) neighbours, so a majority is reachable."""
    rows, c = ids.shape
    npos = np.bincount(pos_local, minlength=rows)
    width = int(npos.max()) if npos.size else 0
    pos_mat = np.full((rows, max(width, 1)), -1, dtype=np.int64)
    if pos_local.size:
        start = np.searchsorted(pos_local, np.arange(rows))
        pos_mat[pos_local, np.arange(pos_local.size) - start[pos_local]] = pos_docs
    out = np.zeros(ids.shape)
    kq = np.minimum(k, 2 * npos)
    chunk = max(1, budget // (c * (c + pos_mat.shape[1])))  # bounds the (chunk x c x pool) similarity block
    for s in range(0, rows, chunk):
        e = min(s + chunk, rows)
        pool = np.concatenate([ids[s:e], pos_mat[s:e]], axis=1)
        ok = np.concatenate([valid[s:e], pos_mat[s:e] >= 0], axis=1)
        v = np.asarray(vectors[np.maximum(pool, 0)], dtype=np.float32)
        v /= np.maximum(np.linalg.norm(v, axis=2, keepdims=True), 1e-12)
        sims = np.einsum("bid,bjd->bij", v[:, :c], v)
        sims[~np.broadcast_to(ok[:, None, :], sims.shape)] = -np.inf
        sims[:, np.arange(c), np.arange(c)] = -np.inf  # not its own neighbour
        order = np.argsort(-sims, axis=2, kind="stable")
        is_pos = np.concatenate([np.zeros((e - s, c), bool), pos_mat[s:e] >= 0], axis=1)
        ranked_pos = np.take_along_axis(np.broadcast_to(is_pos[:, None, :], sims.shape), order, axis=2)
        within = np.arange(sims.shape[2])[None, None, :] < kq[s:e, None, None]
        out[s:e] = (ranked_pos & within).sum(axis=2) / np.maximum(kq[s:e, None], 1)
    return np.where(valid, out, 0.0)


def candidate_similarities(kinds: set[str], ids: np.ndarray, valid: np.ndarray, pos_local: np.ndarray,
                           pos_docs: np.ndarray, doc_texts: list[str], vectors: Any,
                           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each candidate's highest similarity to a known positive of its query, for the rules ``kinds``
    that need one (``near_duplicate``: shingle Jaccard of the texts; ``near_positive``: cosine of
    ``vectors``; ``knn_positive``: share of positives among its nearest neighbours), and, for the two
    pairwise rules, which positive that was (document index, -1 where none). ``ids`` are (rows x
    candidates) document indices; ``pos_local`` (sorted) the row of each positive ``pos_docs``."""
    values, nearest = {}, {}
    if "near_duplicate" in kinds:
        needed = np.unique(np.concatenate([ids[valid], pos_docs]))
        local_row = np.full(len(doc_texts), -1, dtype=np.int64)
        local_row[needed] = np.arange(needed.size)
        shingles = shingle_matrix([doc_texts[i] for i in needed])
        values["near_duplicate"], nearest["near_duplicate"] = max_to_positives(
            ids, valid, pos_local, pos_docs, lambda a, b: pair_jaccard(shingles, local_row[a], local_row[b]))
    if "knn_positive" in kinds:
        values["knn_positive"] = knn_positive_share(ids, valid, pos_local, pos_docs, vectors)
    if "near_positive" in kinds:
        values["near_positive"], nearest["near_positive"] = max_to_positives(
            ids, valid, pos_local, pos_docs, lambda a, b: pair_cosine(vectors, a, b))
    return values, nearest
