"""How close each candidate is to its query's known positives: word-shingle Jaccard (near-duplicate
text) and embedding cosine (near-positive meaning), plus the leave-one-out calibration of the cosine
threshold. Unlabelled positives tend to look like the labelled ones; these catch what a score
threshold alone cannot."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import scipy.sparse as sp

SHINGLE = 3
HASH_BITS = 22
MIN_LOO = 20          # fewer leave-one-out values than this: fall back to FALLBACK_COSINE
FALLBACK_COSINE = 0.8
_WORD = re.compile(r"\w+")


def shingle_matrix(texts: list[str], n: int = SHINGLE) -> sp.csr_matrix:
    """Binary (texts x 2^HASH_BITS) matrix of hashed word n-shingles (short texts: their words)."""
    indptr, indices = [0], []
    mask = (1 << HASH_BITS) - 1
    for t in texts:
        words = _WORD.findall(t.casefold())
        grams = {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))} if words else set()
        hs = {int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") & mask for g in grams}
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
                     pair_fn: object) -> np.ndarray:
    """(rows x candidates) max similarity of each candidate to any known positive of its row.
    ``pos_local`` (sorted) is the row of each positive; ``pair_fn(a, b)`` scores doc pairs."""
    out = np.full(ids.shape, -np.inf)
    if pos_local.size == 0:
        return out
    c = ids.shape[1]
    pr = np.repeat(pos_local, c)
    cols = np.tile(np.arange(c), pos_local.size)
    ok = valid[pr, cols]
    sims = np.full(pr.size, -np.inf)
    sims[ok] = pair_fn(ids[pr[ok], cols[ok]], np.repeat(pos_docs, c)[ok])  # type: ignore[operator]
    np.maximum.at(out, (pr, cols), sims)
    return out


def leave_one_out(pos_rows: np.ndarray, pos_docs: np.ndarray, pair_fn: object) -> np.ndarray:
    """For each known positive of a query with two or more: its highest similarity to the others.
    This is how much a positive resembles its fellow positives: the yardstick for unlabelled ones."""
    order = np.argsort(pos_rows, kind="stable")
    rows, docs = pos_rows[order], pos_docs[order]
    counts = np.bincount(rows)
    multi = counts[rows] >= 2
    rows, docs = rows[multi], docs[multi]
    if rows.size == 0:
        return np.empty(0)
    start = np.searchsorted(rows, rows)
    end = start + counts[rows]
    lengths = end - start
    i = np.repeat(np.arange(rows.size), lengths)
    j = start[i] + np.arange(i.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    keep = i != j
    i, j = i[keep], j[keep]
    sims = pair_fn(docs[i], docs[j])  # type: ignore[operator]
    best = np.full(rows.size, -np.inf)
    np.maximum.at(best, i, sims)
    return best


def calibrated_threshold(loo: np.ndarray, quantile: float) -> tuple[float, str]:
    """The ``quantile`` of the leave-one-out similarities: a candidate closer to a known positive than
    that is dropped. Too few values: a fixed fallback, and the reason says so."""
    if loo.size < MIN_LOO:
        return FALLBACK_COSINE, f"only {loo.size} leave-one-out values (< {MIN_LOO}): fixed {FALLBACK_COSINE}"
    value = float(np.quantile(loo, quantile))
    return value, (f"quantile {quantile:g} of the highest cosine between each known positive and the other "
                   f"positives of its query ({loo.size} positives)")
