"""Hybrid teacher: several teachers' rankings fused by reciprocal rank or normalised scores."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...collection import Collection
from ...progress import SILENT, Reporter
from ...runs.cache import Cache
from ...runs.fingerprint import settings_key
from .base import Teacher

FUSIONS = ("rrf", "minmax", "zscore")


class HybridTeacher(Teacher):
    """Fuses sub-teachers. Each retrieves its own top-k; the union is re-scored by every teacher
    and ranked by the fused score: ``rrf`` (sum of 1/(60 + rank), rank counted within each
    teacher's list) or ``minmax`` / ``zscore`` (per-query normalised scores, summed with weights)."""

    def __init__(self, teachers: list[Teacher], fusion: str = "rrf", weights: list[float] | None = None,
                 rrf_k: int = 60, name: str = "hybrid"):
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion '{fusion}' (choose from {', '.join(FUSIONS)})")
        names = [t.name for t in teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"hybrid teachers need distinct names, got {names}")
        self.teachers, self.fusion, self.rrf_k, self.name = teachers, fusion, rrf_k, name
        self.weights = weights or [1.0] * len(teachers)

    def prepare(self, collection: Collection, query_idx: np.ndarray, cache: Cache,
                reporter: Reporter = SILENT) -> None:
        for t in self.teachers:
            t.prepare(collection, query_idx, cache, reporter)

    def fingerprint(self) -> str:
        return settings_key("hybrid", self.fusion, self.rrf_k, self.weights, [t.fingerprint() for t in self.teachers])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "fusion": self.fusion, "weights": self.weights,
                "teachers": [t.describe() for t in self.teachers]}

    def pair_scores(self, query_idx: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError("a fused score exists only within a search; filter on a member teacher")

    def search(self, query_idx: np.ndarray, k: int, reporter: Reporter = SILENT,
               ) -> tuple[np.ndarray, np.ndarray]:
        results = [t.search(query_idx, k, reporter) for t in self.teachers]
        nq = len(query_idx)
        union = np.concatenate([r[0] for r in results], axis=1)
        # Unique ids per row (sorted), padding with -1 where rows have fewer.
        union = np.sort(np.where(union < 0, np.iinfo(np.int64).max, union), axis=1)
        dup = np.zeros(union.shape, dtype=bool)
        dup[:, 1:] = union[:, 1:] == union[:, :-1]
        union[dup] = np.iinfo(np.int64).max
        union = np.sort(union, axis=1)
        valid = union != np.iinfo(np.int64).max
        union[~valid] = -1
        fused = np.zeros(union.shape, dtype=np.float64)
        rows, cols = np.nonzero(valid)
        for (ids, scores), t, w in zip(results, self.teachers, self.weights):
            if self.fusion == "rrf":
                contrib = np.zeros(union.shape, dtype=np.float64)
                rank_of = _rank_lookup(ids, union)
                has = rank_of > 0
                contrib[has] = 1.0 / (self.rrf_k + rank_of[has])
            else:
                s = np.full(union.shape, np.nan)
                s[rows, cols] = t.pair_scores(query_idx[rows], union[rows, cols])
                contrib = _normalise(s, scores, self.fusion)
            fused += w * np.where(valid, contrib, 0.0)
        fused[~valid] = -np.inf
        order = np.lexsort((np.where(valid, union, np.iinfo(np.int64).max), -fused), axis=1)[:, :k]
        out_i = np.take_along_axis(union, order, axis=1)
        out_s = np.take_along_axis(fused, order, axis=1)
        self.member_results = results
        assert out_i.shape[0] == nq
        return out_i, out_s


def _rank_lookup(ranked: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """1-based rank of each of ``ids`` within the same row of ``ranked`` (0 where absent)."""
    nq, k = ranked.shape
    if nq == 0 or k == 0:
        return np.zeros(ids.shape, dtype=np.float64)
    big = int(max(ranked.max(), ids.max())) + 2
    rows = np.arange(nq, dtype=np.int64)[:, None]
    keys = (rows * big + ranked).ravel()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    want = (rows * big + ids).ravel()
    pos = np.minimum(np.searchsorted(sorted_keys, want), sorted_keys.size - 1)
    hit = (sorted_keys[pos] == want) & (ids.ravel() >= 0)
    out = np.zeros(want.size, dtype=np.float64)
    out[hit] = order[pos[hit]] % k + 1
    return out.reshape(ids.shape)


def _normalise(s: np.ndarray, ref: np.ndarray, how: str) -> np.ndarray:
    """Normalise scores per query with statistics of the teacher's own top-k list ``ref``."""
    ref = np.where(np.isfinite(ref), ref, np.nan)
    if how == "minmax":
        lo, hi = np.nanmin(ref, axis=1, keepdims=True), np.nanmax(ref, axis=1, keepdims=True)
        out = (s - lo) / np.where(hi > lo, hi - lo, 1.0)
    else:
        mu, sd = np.nanmean(ref, axis=1, keepdims=True), np.nanstd(ref, axis=1, keepdims=True)
        out = (s - mu) / np.where(sd > 0, sd, 1.0)
    return np.nan_to_num(out, nan=0.0)
