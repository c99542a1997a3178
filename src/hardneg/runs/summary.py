"""A run's summary: counts, shortfall and score histograms of positives vs kept vs dropped negatives."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc

from .run import Run


def _hist(values: np.ndarray, edges: np.ndarray) -> list[int]:
    return np.histogram(values[np.isfinite(values)], bins=edges)[0].tolist() if values.size else [0] * (edges.size - 1)


def summary(run: Run, bins: int = 10) -> dict[str, Any]:
    """A JSON-ready summary of a run: teacher, filters and sampler, the manifest's counts, how many
    queries fell short of negatives, and histograms of the filter teacher's scores for positives,
    selected negatives, kept-but-not-selected and dropped candidates.

    Args:
        run: a mining result (:class:`~hardneg.runs.run.Run`).
        bins: number of histogram bins, over the range of every finite score.

    Returns:
        A dict: ``counts``, ``shortfall_histogram``, ``score_edges``, ``histograms``, ``score_means``, ...

    Example::

        s = hardneg.summary(hardneg.Run.load("runs/scifact"))
        s["counts"]["coverage"], s["score_means"]["selected"]
    """
    m = run.manifest
    cand = run.candidates
    score_col = f"score_{m['filter_on']}"
    scores = cand.column(score_col).to_numpy(zero_copy_only=False)
    reason = cand.column("reason").combine_chunks().dictionary_decode().to_numpy(zero_copy_only=False)
    selected = cand.column("selected").to_numpy(zero_copy_only=False)
    kept = cand.column("kept").to_numpy(zero_copy_only=False)
    pos = pc.list_flatten(run.negatives.column("positive_scores").combine_chunks()).to_numpy(zero_copy_only=False)
    groups = {"positives": pos, "selected": scores[selected], "kept_not_selected": scores[kept & ~selected],
              "dropped": scores[~kept & (reason != "positive")]}
    finite = np.concatenate([g[np.isfinite(g)] for g in groups.values()])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    shortfall = run.negatives.column("shortfall").to_numpy()
    return {
        "run": str(run.path) if run.path else None,
        "teacher": m["teacher"]["name"], "filters": m["filters"], "sampler": m["sampler"],
        "counts": m["counts"],
        "shortfall_histogram": {int(k): int(v) for k, v in zip(*np.unique(shortfall, return_counts=True))},
        "score_edges": edges.round(4).tolist(),
        "histograms": {k: _hist(v, edges) for k, v in groups.items()},
        "score_means": {k: (float(np.nanmean(v)) if v.size else None) for k, v in groups.items()},
    }


stats = summary  # the name the public API had first (``hardneg.stats``)
