"""CET: pooling-bias correction of mined negatives. A selection (pooling-propensity) model estimates
how likely each unlabelled top candidate was to be judged; its negative term in the InfoNCE is
weighted by that probability.

Relevance labels come from pooling: annotators judge only what a few basic systems ranked high,
so an unlabelled document is a true negative only if it was judged. A strong teacher's top
candidates that the pool never reached are unlabelled, not irrelevant: hard negatives that are
really false negatives. CET models the observed label as ``y = s * r`` (selected into the pool AND
relevant), learns a selection model ``S`` and a relevance model ``R`` together, each fitted on
targets that the other's estimate de-biases, and trains the ranker with every unlabelled
candidate's negative term weighted by its selection propensity.

Paper: Cai, Guo, Fan, Ai, Zhang, Cheng, "Hard Negatives or False Negatives: Correcting Pooling
Bias in Training Neural Ranking Models", CIKM 2022, arXiv:2209.05072.

What this module does:

1. :func:`candidate_features` reads the run's candidates (every document searched per query, with
   its rank and each teacher's score). Selection features: ``log(1 + rank)`` of the search and, when
   the run has several teachers, of each teacher's own rank (pooling is by rank). Relevance
   features: each teacher's score standardised within the query. Target ``y`` = the candidate is
   a labelled positive.
2. :class:`SelectionModel` fits ``P(y=1|x) = S(x_s) * R(x_r)``, two logistic regressions, by
   alternating estimation (EM): for an unlabelled candidate the expected selection is
   ``S(1-R)/(1-SR)`` and the expected relevance ``R(1-S)/(1-SR)``; each model is refitted on
   those soft targets (Newton steps, L2), and round after round. Pooling judges top ranks, so the
   selection model's rank coefficients are kept <= 0: its propensity never rises with depth.
   The fit is deterministic (zero start, no sampling), so it needs no seed.
3. :func:`cet_table` puts each mined negative's propensity ``S`` (in [0, 1]) in the ``label``
   column, aligned with ``negative_1..n``.
4. :class:`CETLoss` is sentence-transformers' MultipleNegativesRankingLoss (cosine, scale 20, joint
   softmax over positive, in-batch documents and mined negatives) in which a row's own mined
   negative ``j`` enters the denominator as ``w_j * exp(s_j)`` (its logit plus ``log w_j``). In-batch
   documents of other queries keep weight 1 (random documents for this query, not pooled
   candidates). With every weight 1 it is MNRL, exactly.

Only the paper's abstract and introduction could be read while writing this (no reference code
was found): the ``y = s * r`` factorisation, the EM and the propensity weight of each negative are
this module's reading of the paper's "a relevance model and a selection model, each trained with
bias weights from the other's estimate" (in the manner of the dual learning algorithm of unbiased
learning to rank), not a transcription of its equations.

Where it departs from the paper, and why:

* The paper's relevance model is the neural ranker itself, trained with the selection model in one
  coupled loop. Here the relevance side of the EM is a logistic model on the teachers' scores,
  fitted once with the selection model before training; the student is then trained with the fixed
  propensities. Refitting with the student's scores between epochs would need the candidates
  re-encoded by the student each epoch, and the equal step budgets of the experiments are about one
  epoch, so that refit would never fire.
* The paper's selection model is a neural model over the pooling signals; a logistic model on rank
  features is its smallest form, enough for one or a few teachers.
* Candidates are the run's (the teacher's top ``depth``), not the dataset's real pool, which
  BEIR-style qrels do not record; labelled positives outside the candidates are not in the fit.

Inputs: (anchor, positive, negative_1..n, label) with label = [w_1..w_n], w_j in [0, 1].

Example::

    from hardneg.training.cet import CETLoss, cet_table

    table = cet_table(run, num_negatives=4)  # anchor, positive, negative_1..4, label
    loss = CETLoss(model)
    # or: hardneg train --run runs/scifact --out models/cet --loss cet
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..runs.columns import list_matrix


@dataclass
class Features:
    """Per candidate: selection features (rank columns first), relevance features, the label."""

    selection: np.ndarray  # (n, p_s) log(1 + rank) columns
    relevance: np.ndarray  # (n, p_r) within-query standardised scores
    labelled: np.ndarray  # (n,) bool: a labelled positive


def _within_query(codes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank from 1 by value, descending; z-score) of each value within its query."""
    order = np.lexsort((-values, codes))
    start = np.r_[0, np.flatnonzero(np.diff(codes[order])) + 1]
    counts = np.diff(np.r_[start, order.size])
    rank = np.empty(values.size)
    rank[order] = np.arange(order.size) - np.repeat(start, counts) + 1
    n = np.bincount(codes).astype(np.float64)
    mean = np.bincount(codes, values) / np.maximum(n, 1)
    var = np.bincount(codes, (values - mean[codes]) ** 2) / np.maximum(n, 1)
    return rank, (values - mean[codes]) / np.maximum(np.sqrt(var[codes]), 1e-12)


def candidate_features(candidates: pa.Table) -> Features:
    """Selection and relevance features of every candidate of a run (see the module docstring)."""
    codes = candidates.column("query_id").combine_chunks().dictionary_encode().indices.to_numpy()
    teachers = [c for c in candidates.column_names if c.startswith("score_")]
    search_rank = candidates.column("rank").to_numpy().astype(np.float64)
    selection, relevance = [np.log1p(search_rank)], []
    for t in teachers:
        score = candidates.column(t).to_numpy(zero_copy_only=False).astype(np.float64)
        score = np.where(np.isfinite(score), score, np.nanmin(np.where(np.isfinite(score), score, np.nan)))
        rank, z = _within_query(codes, score)
        if len(teachers) > 1:
            selection.append(np.log1p(rank))
        relevance.append(z)
    reason = candidates.column("reason").combine_chunks().cast(pa.string()).to_numpy(zero_copy_only=False)
    return Features(np.stack(selection, axis=1), np.stack(relevance, axis=1), reason == "positive")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))


def _newton(x: np.ndarray, target: np.ndarray, coef: np.ndarray, l2: float, steps: int,
            nonpositive: np.ndarray) -> np.ndarray:
    """Logistic regression on soft targets (intercept in column 0, not penalised), a few Newton steps
    from ``coef``; coefficients flagged ``nonpositive`` are projected onto <= 0 after each step."""
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(steps):
        p = _sigmoid(x @ coef)
        grad = x.T @ (p - target) / len(x) + penalty * coef
        hess = (x * (p * (1 - p))[:, None]).T @ x / len(x) + np.diag(penalty + 1e-9)
        coef = coef - np.linalg.solve(hess, grad)
        coef[nonpositive] = np.minimum(coef[nonpositive], 0.0)
    return coef


@dataclass
class SelectionModel:
    """``P(labelled) = S(selection features) * R(relevance features)``, fitted by coupled EM.

    Args:
        iterations: EM rounds (each refits both models on the other's de-biased targets).
        newton_steps: Newton steps per refit.
        l2: ridge penalty on the (standardised) feature weights.
    """

    iterations: int = 30
    newton_steps: int = 3
    l2: float = 1e-3
    coef_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    coef_r: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scale_s: tuple[np.ndarray, np.ndarray] = field(default_factory=lambda: (np.zeros(0), np.ones(0)))
    scale_r: tuple[np.ndarray, np.ndarray] = field(default_factory=lambda: (np.zeros(0), np.ones(0)))

    @staticmethod
    def _design(x: np.ndarray, scale: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.ones((len(x), 1)), (x - scale[0]) / scale[1]], axis=1)

    def fit(self, f: Features) -> SelectionModel:
        y = f.labelled.astype(np.float64)
        if not 0 < y.sum() < y.size:
            raise ConfigError("cet: the selection model needs labelled positives among the run's candidates "
                              "and unlabelled ones (no positive was retrieved, or nothing else was)")
        self.scale_s = (f.selection.mean(0), np.maximum(f.selection.std(0), 1e-12))
        self.scale_r = (f.relevance.mean(0), np.maximum(f.relevance.std(0), 1e-12))
        xs, xr = self._design(f.selection, self.scale_s), self._design(f.relevance, self.scale_r)
        rank_cols = np.r_[False, np.ones(f.selection.shape[1], dtype=bool)]  # every selection feature is a log-rank
        cs, cr = np.zeros(xs.shape[1]), np.zeros(xr.shape[1])
        for _ in range(self.iterations):
            s, r = _sigmoid(xs @ cs), _sigmoid(xr @ cr)
            unseen = np.maximum(1 - s * r, 1e-12)  # s * r reaches 1 in float64 on separable data: 0 / 0
            target_s = np.where(y == 1, 1.0, s * (1 - r) / unseen)  # E-step: P(selected | unlabelled)
            target_r = np.where(y == 1, 1.0, r * (1 - s) / unseen)  # P(relevant | unlabelled)
            cs = _newton(xs, target_s, cs, self.l2, self.newton_steps, rank_cols)
            cr = _newton(xr, target_r, cr, self.l2, self.newton_steps, np.zeros(xr.shape[1], dtype=bool))
        self.coef_s, self.coef_r = cs, cr
        return self

    def propensity(self, selection: np.ndarray) -> np.ndarray:
        """S: the probability that a candidate with these selection features was judged, in [0, 1]."""
        return np.clip(_sigmoid(self._design(selection, self.scale_s) @ self.coef_s), 0.0, 1.0)

    def relevance(self, relevance: np.ndarray) -> np.ndarray:
        """R: the relevance model's probability, in [0, 1]."""
        return np.clip(_sigmoid(self._design(relevance, self.scale_r) @ self.coef_r), 0.0, 1.0)


def negative_weights(run: Any, model: SelectionModel | None = None) -> tuple[pa.Table, SelectionModel]:
    """The run's negatives table with ``negative_scores`` replaced by each mined negative's
    selection propensity, and the fitted model."""
    cand = run.candidates
    f = candidate_features(cand)
    model = (model or SelectionModel()).fit(f)
    weight = model.propensity(f.selection)
    keyed = pa.table({"query_id": cand.column("query_id"), "doc_id": cand.column("doc_id"), "w": weight})
    neg = run.negatives
    lengths = neg.column("negative_ids").combine_chunks().value_lengths().to_numpy(zero_copy_only=False)
    flat = pa.table({
        "query_id": pa.array(np.repeat(neg.column("query_id").to_numpy(zero_copy_only=False), lengths), pa.string()),
        "doc_id": neg.column("negative_ids").combine_chunks().flatten(),
        "i": np.arange(int(lengths.sum()))})
    joined = flat.join(keyed.group_by(["query_id", "doc_id"]).aggregate([("w", "max")]), ["query_id", "doc_id"])
    order = np.argsort(joined.column("i").to_numpy())
    w = joined.column("w_max").to_numpy(zero_copy_only=False)[order]
    if w.size != lengths.sum():
        raise ConfigError("cet: a mined negative is missing from the run's candidates")
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    i = neg.column_names.index("negative_scores")
    column = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(w, pa.float64()))
    return neg.set_column(i, "negative_scores", column), model


def cet_table(run: Any, num_negatives: int | None = None) -> pa.Table:
    """anchor, positive, negative_1..k and ``label`` = the k negatives' selection propensities."""
    from ..export import st_table
    from ..runs.run import Run

    weighted, _ = negative_weights(run)
    table = st_table(Run(weighted, run.candidates, run.manifest, run.path, run.collection()), "n-tuple",
                     with_scores=True)
    n = int(run.manifest["config"]["num_negatives"])
    k = min(num_negatives or n, n)
    label = list_matrix(table, "score")[:, 1: k + 1]
    keep = ["anchor", "positive"] + [f"negative_{j + 1}" for j in range(k)]
    return table.select(keep).append_column("label", pa.array(label.tolist(), pa.list_(pa.float32())))


class CETLoss(nn.Module):
    """MultipleNegativesRankingLoss whose own mined negatives count ``w_j * exp(s_j)`` in the
    softmax denominator, ``w`` = the selection propensities in ``labels`` (b, n).

    Args:
        model: the SentenceTransformer being trained.
        scale: inverse temperature of the cosine logits (MNRL's 20).
    """

    def __init__(self, model: Any, scale: float = 20.0):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        if labels is None:
            raise ConfigError("loss 'cet' needs the propensity label column: train it on a hardneg run")

        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        """The loss from the columns' embeddings (anchors, positives, negative columns) and weights (b, n)."""
        from sentence_transformers.util import cos_sim

        queries, docs_all = embeddings[0], torch.cat(embeddings[1:], dim=0)
        b, n = queries.size(0), len(embeddings) - 2
        rows = torch.arange(b, device=queries.device)
        scores = cos_sim(queries, docs_all) * self.scale
        positive = scores[rows, rows]
        w = labels.to(scores.device, scores.dtype).reshape(b, n)
        if ((w < 0) | (w > 1)).any():
            raise ValueError("CET weights must lie in [0, 1]")
        cols = b + torch.arange(n, device=scores.device)[None, :] * b + rows[:, None]  # row i's own negatives
        own = scores[rows[:, None], cols]
        scores = scores.index_put((rows[:, None].expand(-1, n), cols), own + torch.log(w))
        return -(positive - torch.logsumexp(scores, dim=1)).mean()

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the training manifest."""
        return {"scale": self.scale}

    @property
    def citation(self) -> str:
        return "Cai et al., Hard Negatives or False Negatives: Correcting Pooling Bias, CIKM 2022, arXiv:2209.05072"
