"""Paired comparison of two systems on the same queries: the mean difference, a paired bootstrap
confidence interval of it, and a paired randomisation p-value, both from scipy.stats and seeded.

Inputs are per-query values of one measure (e.g. nDCG@10), aligned query by query. The
randomisation test flips the sign of each query's difference (``permutation_test`` with
``permutation_type='samples'``: exact when 2^n fits in the resamples); the interval resamples
queries with their pairs kept (``bootstrap`` with ``paired=True``, BCa). The minimum detectable effect
says how large a true difference these queries would show at ``p < 1 - confidence`` most of the time,
so that a difference that is not significant can be read: too small, or too few queries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10000
POWER = 0.8
_BATCH = 1000  # resamples held in memory at once (x queries)


@dataclass(frozen=True)
class Comparison:
    """``mean(a - b)`` over ``n`` paired queries, its confidence interval, two-sided p-value and minimum
    detectable effect (:func:`minimum_detectable_effect`)."""

    delta: float
    ci_low: float
    ci_high: float
    p: float
    n: int
    mde: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired values must align query by query: {x.size} vs {y.size}")
    return x, y


def paired_randomisation(a: Any, b: Any, n: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of ``mean(a - b)`` under random sign flips of the per-query differences
    (``scipy.stats.permutation_test``, paired samples; exact enumeration when 2^queries <= ``n``).

    Args:
        a, b: per-query values of the two systems, aligned.
        n: random sign-flip resamples.
        seed: seed of the resampling.

    Example:
        ::

            paired_randomisation([0.5, 0.7, 0.9], [0.4, 0.6, 0.9])  # 0.5: 2 of the 4 sign patterns
    """
    from scipy.stats import permutation_test

    x, y = _paired(a, b)
    if x.size == 0 or not np.any(x - y):
        return 1.0
    res = permutation_test((x, y), _mean_difference, permutation_type="samples", vectorized=True,
                           n_resamples=n, batch=_BATCH, alternative="two-sided",
                           random_state=np.random.default_rng(seed))
    return float(min(res.pvalue, 1.0))


def paired_bootstrap_ci(a: Any, b: Any, n: int = RESAMPLES, seed: int = 0,
                        confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Confidence interval of ``mean(a - b)`` by resampling queries with their pairs kept
    (``scipy.stats.bootstrap``, ``paired=True``, BCa). Every query with the same difference: the
    interval is that difference.

    Args:
        a, b: per-query values of the two systems, aligned.
        n: bootstrap resamples.
        seed: seed of the resampling.
        confidence: the interval's confidence level.

    Example:
        ::

            low, high = paired_bootstrap_ci(new_ndcg, baseline_ndcg, seed=0)
    """
    from scipy.stats import bootstrap

    x, y = _paired(a, b)
    d = x - y
    if d.size == 0:
        return 0.0, 0.0
    if np.all(d == d[0]) or d.size < 2:  # no spread to resample (BCa is undefined there)
        return float(d.mean()), float(d.mean())
    for method in ("BCa", "percentile"):  # BCa's corrections can be undefined on a few odd samples
        res = bootstrap((x, y), _mean_difference, n_resamples=n, batch=_BATCH, vectorized=True, paired=True,
                        confidence_level=confidence, method=method, random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            break
    return low, high


def minimum_detectable_effect(a: Any, b: Any, power: float = POWER, confidence: float = CONFIDENCE) -> float:
    """The smallest true ``mean(a - b)`` that a two-sided test at level ``1 - confidence`` on these
    queries detects with probability ``power``, given the spread of their per-query differences: the
    normal approximation of a paired test, ``(z(1 - alpha / 2) + z(power)) * sd(a - b) / sqrt(n)``
    (Cohen, *Statistical Power Analysis for the Behavioral Sciences*, 1988; for IR test collections:
    Sakai, "Statistical reform in information retrieval?", SIGIR Forum 2014, and Webber, Moffat and
    Zobel, "Statistical power in retrieval experimentation", CIKM 2008). A measured difference below it
    that is not significant says little either way: the test set is too small to tell.

    Args:
        a, b: per-query values of the two systems, aligned.
        power: the probability of detection asked for.
        confidence: one minus the test's significance level.

    Example:
        ::

            minimum_detectable_effect(new_ndcg, baseline_ndcg)  # e.g. 0.042 on 300 SciFact test queries
    """
    from scipy.stats import norm

    x, y = _paired(a, b)
    if x.size < 2:
        return float("inf")
    z = norm.ppf(1 - (1 - confidence) / 2) + norm.ppf(power)
    return float(z * np.std(x - y, ddof=1) / np.sqrt(x.size))


def compare(a: Any, b: Any, resamples: int = RESAMPLES, seed: int = 0,
            confidence: float = CONFIDENCE) -> Comparison:
    """System ``a`` against system ``b`` on the same queries: the mean per-query difference, its paired
    bootstrap confidence interval and its paired randomisation p-value (both seeded by ``seed``), and
    the minimum detectable effect at 80% power.

    Args:
        a, b: per-query values of one measure for the two systems, aligned query by query.
        resamples: resamples of both the randomisation test and the bootstrap.
        seed: seed of both.
        confidence: the interval's confidence level.

    Example:
        ::

            from hardneg.evaluation.comparison import compare

            c = compare(new_ndcg, baseline_ndcg)
            print(f"{c.delta:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] p={c.p:.3f} over {c.n} queries")
    """
    x, y = _paired(a, b)
    low, high = paired_bootstrap_ci(x, y, resamples, seed, confidence)
    return Comparison(float(np.mean(x - y)) if x.size else 0.0, low, high,
                      paired_randomisation(x, y, resamples, seed), int(x.size),
                      minimum_detectable_effect(x, y, confidence=confidence))
