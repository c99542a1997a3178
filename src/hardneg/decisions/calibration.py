"""Calibrated thresholds from the known positives themselves (leave-one-out): treat each labelled
positive in turn as if it were unlabelled, see what the rule would need to catch it, and take a
quantile. Thresholds then follow the teacher and the data instead of a constant (ST #3279)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .filters import FilterSpec
from .similarity import pair_cosine

MIN_LOO = 20          # fewer leave-one-out values than this: fall back to the fixed default
FALLBACK = {"near_positive": 0.8, "percpos": 0.95}


def _pairs(pos_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index pairs of distinct positives of the same query (queries with two or more)."""
    order = np.argsort(pos_rows, kind="stable")
    rows = pos_rows[order]
    counts = np.bincount(rows)[rows]
    start = np.searchsorted(rows, rows)
    i = np.repeat(np.arange(rows.size), counts)
    j = start[i] + np.arange(i.size) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = i != j
    return order[i[keep]], order[j[keep]]


def leave_one_out(pos_rows: np.ndarray, pos_docs: np.ndarray, pair_fn: object) -> np.ndarray:
    """For each known positive of a query with two or more: its highest similarity to the others.
    This is how much a positive resembles its fellow positives: the yardstick for unlabelled ones."""
    i, j = _pairs(pos_rows)
    if i.size == 0:
        return np.empty(0)
    sims = pair_fn(pos_docs[i], pos_docs[j])  # type: ignore[operator]
    best = np.full(pos_rows.size, -np.inf)
    np.maximum.at(best, i, sims)
    return best[np.isfinite(best)]


def leave_one_out_percpos(pos_rows: np.ndarray, pos_scores: np.ndarray) -> np.ndarray:
    """For each known positive (of a query with two or more): the ``p`` at which percpos, with the
    lowest *other* positive as reference, would just catch it: ``1 + (s - ref) / |ref|``."""
    i, j = _pairs(pos_rows)
    if i.size == 0:
        return np.empty(0)
    ref = np.full(pos_rows.size, np.inf)
    np.minimum.at(ref, i, pos_scores[j])
    has = np.isfinite(ref) & (ref != 0)
    return 1.0 + (pos_scores[has] - ref[has]) / np.abs(ref[has])


def calibrated_threshold(loo: np.ndarray, quantile: float, kind: str = "near_positive") -> tuple[float, str]:
    """The ``quantile`` of the leave-one-out values: a candidate beyond it is dropped, so about
    ``1 - quantile`` of unlabelled positives like the labelled ones are caught. Too few values: the
    fixed default, and the reason says so."""
    if loo.size < MIN_LOO:
        return FALLBACK[kind], f"only {loo.size} leave-one-out values (< {MIN_LOO}): fixed {FALLBACK[kind]}"
    value = float(np.quantile(loo, quantile))
    what = {"near_positive": "the highest cosine between each known positive and the other positives of its query",
            "percpos": "the p at which percpos (lowest other positive as reference) catches each known positive"}
    return value, f"quantile {quantile:g} of {what[kind]} ({loo.size} positives)"


def calibrate_filters(filters: list[FilterSpec], quantile: float, pos_rows: np.ndarray, pos_docs: np.ndarray,
                      filter_scores: np.ndarray, filter_on: str, vectors: Any = None, near_model: Any = None,
                      ) -> tuple[list[FilterSpec], dict[str, Any] | None]:
    """The filter chain with every ``auto`` value (``near_positive:auto``, ``percpos:auto``) set from the
    known positives by leave-one-out, and what was set, with its reason, for the manifest (None when
    nothing was ``auto``).

    Args:
        filters: the parsed filter chain.
        quantile: the leave-one-out quantile (``calibration_quantile``).
        pos_rows: query row of each known positive; ``pos_docs`` its document index.
        filter_scores: each positive's score by the ``filter_on`` teacher.
        vectors: document embeddings (``near_positive``), of ``near_model``.

    Example::

        chain, why = calibrate_filters(FilterSpec.parse("percpos:auto"), 0.95, pos_rows, pos_docs,
                                       scores, "bm25")
    """
    resolved, calibration = [], {}
    for f in filters:
        if f.auto and f.kind == "near_positive":
            loo = leave_one_out(pos_rows, pos_docs, lambda a, b: pair_cosine(vectors, a, b))
            value, why = calibrated_threshold(loo, quantile, f.kind)
            calibration[f.kind] = {"value": round(value, 6), "why": why, "model": near_model}
            f = replace(f, value=round(value, 6))
        elif f.auto and f.kind == "percpos":
            loo = leave_one_out_percpos(pos_rows, filter_scores)
            value, why = calibrated_threshold(loo, quantile, f.kind)
            calibration[f.kind] = {"value": round(value, 6), "why": why, "scores": filter_on}
            f = replace(f, value=round(value, 6))
        resolved.append(f)
    return resolved, calibration or None
