"""Soft labels for distillation: the teachers' scores of each training row's [positive, negatives...],
normalised per row and fused.

Teachers score on different scales (BM25 0-40, cosines 0.2-0.9), so each teacher's scores of a row
are z-scored within the row (mean 0, std 1 over [s+, s-_1..n]) and the teachers are averaged: a fused
ensemble score per candidate, as hybrid retrieval fuses normalised scores. One teacher gets the same
normalisation, which lets one temperature fit any teacher.

- The KL loss (``kl``: sentence-transformers' ``DistillKLDivLoss``) turns the fused scores into the
  teacher distribution with ``softmax(label / teacher_temperature)``; the student's cosines go
  through ``softmax(cos / student_temperature)``.
- MarginMSE (``margin-mse``) regresses the student's cosine margin ``cos(q, d+) - cos(q, d-)`` on
  ``teacher_scale * (fused+ - fused-)``: one teacher standard deviation is worth ``teacher_scale`` cosine.

This is the soft-label idea of TAS-B (Hofstätter et al., SIGIR 2021: an ensemble of teachers, margins),
GPL (Wang et al., NAACL 2022: MarginMSE on a cross-encoder's pseudo-labels), LG-ANNA and UniME-V2
(a stronger model's scores of the mined list as soft targets).

Example::

    hardneg mine --dataset scifact --split train --teacher dense --score-with e5+bm25:stem --out runs/sf
    hardneg train --run runs/sf --out models/kl --loss kl --teacher-scores dense+e5+bm25_stem \\
        --teacher-temperature 1 --student-temperature 0.05
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError

NORMS = ("zscore", "none")


def parse_teachers(spec: str, available: Sequence[str]) -> list[str]:
    """``dense+e5+bm25_stem`` (or ``all``: every teacher the run scored) -> the names, checked."""
    names = list(available) if spec.strip() == "all" else [t.strip() for t in spec.split("+") if t.strip()]
    if not names:
        raise ConfigError(f"teacher_scores: no teacher in '{spec}'")
    return names


def fuse(scores: Sequence[np.ndarray], norm: str = "zscore") -> np.ndarray:
    """The fused soft label of each row: the mean over teachers of each teacher's row-normalised scores.

    Args:
        scores: one (rows, 1 + n) float array per teacher, column 0 the positive.
        norm: ``zscore`` (per row, per teacher; a row whose scores are all equal gets zeros) or
            ``none`` (raw scores averaged: only for teachers on one scale).

    Returns:
        (rows, 1 + n) float64.
    """
    if norm not in NORMS:
        raise ConfigError(f"unknown teacher score normalisation '{norm}' (use {', '.join(NORMS)})")
    stack = np.stack([np.asarray(s, dtype=np.float64) for s in scores])  # (teachers, rows, 1 + n)
    if norm == "zscore":
        mean = stack.mean(axis=2, keepdims=True)
        std = stack.std(axis=2, keepdims=True)
        stack = np.divide(stack - mean, std, out=np.zeros_like(stack), where=std > 0)
    return stack.mean(axis=0)
