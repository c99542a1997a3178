"""MoCHi: InfoNCE with hard negatives synthesised in embedding space, inside the loss.

For each query the loss takes its ``num_hard`` hardest negatives by the student's current cosine
score (its own mined negatives and every other document in the batch, never its own positive) and
adds two kinds of synthetic negatives to the softmax:

* ``num_mix`` mixes of two distinct hard negatives: ``h = a*n_i + (1 - a)*n_j``, ``a ~ U(0, 1)``,
  then L2-normalised;
* ``num_query_mix`` mixes of the query with one hard negative: ``h = b*q + (1 - b)*n_j``,
  ``b ~ U(0, beta_max)`` with ``beta_max <= 0.5`` (the negative keeps the larger share), then
  L2-normalised. Such a point lies on the arc from ``n_j`` towards ``q``, so it is at least as
  close to the query as ``n_j``: a harder negative.

The synthetic points carry no gradient (detached, as in the paper); only the query side of their
logits is trained. Everything else is sentence-transformers' ``MultipleNegativesRankingLoss``
(cosine similarity, ``scale`` 20, one joint softmax over positive, in-batch documents and mined
negatives): with ``num_mix = num_query_mix = 0`` the value is MNRL's, exactly. The random draws
come from a ``torch.Generator`` seeded with ``seed`` (the trainer's seed), on the CPU, so a run is
reproducible on any device.

Paper: Kalantidis, Sariyildiz, Pion, Weinzaepfel, Larlus, "Hard Negative Mixing for Contrastive
Learning", NeurIPS 2020, arXiv:2010.01028. The paper mixes the hardest negatives of a MoCo memory
queue (N = 1024 of 16k, s = s' = 256 there); here the pool is the batch: its documents and mined
negatives, ``batch_size * (1 + n) - 1`` candidates per query, hence the smaller defaults.

Inputs: (anchor, positive, negative_1..n) n-tuples, no label (n may be 0: pairs).

Example::

    from hardneg.training.mochi import MoCHiLoss

    loss = MoCHiLoss(model, num_hard=16, num_mix=16, num_query_mix=8, beta_max=0.5, seed=0)
    # or: hardneg train --run runs/scifact --out models/mochi --loss mochi --mochi-hard 16
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn


class Synthetic(NamedTuple):
    """Synthetic negatives of a batch: ``points[i, k] = normalise(weight[i, k] * first[i, k] +
    (1 - weight[i, k]) * second[i, k])``. The first ``num_mix`` per row mix two hard negatives
    (weight = alpha), the next ``num_query_mix`` mix the query (first) with one (weight = beta).
    ``hard`` holds each row's hardest document columns, hardest first."""

    points: Tensor  # (b, k, d), unit norm
    first: Tensor  # (b, k, d)
    second: Tensor  # (b, k, d)
    weight: Tensor  # (b, k)
    hard: Tensor  # (b, N) column indices into the documents


def synthetic_negatives(queries: Tensor, docs: Tensor, scores: Tensor, own: Tensor, num_hard: int,
                        num_mix: int, num_query_mix: int, beta_max: float,
                        generator: torch.Generator | None = None) -> Synthetic:
    """MoCHi's synthetic negatives for each row (no gradient).

    Args:
        queries: (b, d) unit query embeddings.
        docs: (m, d) unit document embeddings (every candidate of the batch).
        scores: (b, m) the student's current scores of each query against each document.
        own: (b,) each query's own positive column, never taken as a negative.
        num_hard: N, how many of the hardest negatives the mixes are drawn from (capped at m - 1).
        num_mix: s, mixes of two distinct hard negatives per query.
        num_query_mix: s', mixes of the query with one hard negative per query.
        beta_max: the largest weight of the query in a query mix (at most 0.5).
        generator: the source of randomness (drawn on the CPU).
    """
    b, m = scores.shape
    n_hard = min(num_hard, m - 1)
    if n_hard < 1:
        raise ValueError("MoCHi needs at least one negative per query")
    with torch.no_grad():
        q, d = queries.detach(), docs.detach()
        masked = scores.detach().clone()
        masked[torch.arange(b, device=scores.device), own] = float("-inf")
        hard = masked.topk(n_hard, dim=1).indices  # (b, N), hardest first
        # Pairs of distinct hard negatives (the same one twice when only one exists).
        i = torch.randint(n_hard, (b, num_mix), generator=generator)
        step = torch.randint(1, n_hard, (b, num_mix), generator=generator) if n_hard > 1 else torch.zeros_like(i)
        j = (i + step) % n_hard
        alpha = torch.rand((b, num_mix), generator=generator, dtype=d.dtype)
        # Query mixes: one hard negative each, the query's weight below beta_max.
        k = torch.randint(n_hard, (b, num_query_mix), generator=generator)
        beta = torch.rand((b, num_query_mix), generator=generator, dtype=d.dtype) * beta_max
        cols = hard.cpu()
        first = torch.cat([d[cols.gather(1, i).to(d.device)],
                           q[:, None, :].expand(-1, num_query_mix, -1)], dim=1)
        second = torch.cat([d[cols.gather(1, j).to(d.device)], d[cols.gather(1, k).to(d.device)]], dim=1)
        weight = torch.cat([alpha, beta], dim=1).to(d.device)
        points = nn.functional.normalize(weight[..., None] * first + (1 - weight[..., None]) * second, p=2, dim=-1)
    return Synthetic(points, first, second, weight, hard)


class MoCHiLoss(nn.Module):
    """MultipleNegativesRankingLoss plus MoCHi's synthetic hard negatives (see the module docstring).

    Args:
        model: the SentenceTransformer being trained.
        num_hard: N, the hardest negatives per query the mixes come from.
        num_mix: s, synthetic mixes of two hard negatives per query.
        num_query_mix: s', synthetic mixes of the query with a hard negative per query.
        beta_max: upper bound of the query's weight in a query mix, in (0, 0.5].
        scale: inverse temperature of the cosine logits (MNRL's 20).
        seed: seeds the generator of the mixing coefficients and pairs.
    """

    def __init__(self, model: Any, num_hard: int = 16, num_mix: int = 16, num_query_mix: int = 8,
                 beta_max: float = 0.5, scale: float = 20.0, seed: int = 0):
        super().__init__()
        if num_hard < 1 or num_mix < 0 or num_query_mix < 0:
            raise ValueError("MoCHi needs num_hard >= 1, num_mix >= 0, num_query_mix >= 0")
        if not 0.0 < beta_max <= 0.5:
            raise ValueError("MoCHi's beta_max must be in (0, 0.5]: the query is the smaller part of a mix")
        self.model, self.num_hard, self.num_mix, self.num_query_mix = model, num_hard, num_mix, num_query_mix
        self.beta_max, self.scale, self.seed = beta_max, scale, seed
        self.generator = torch.Generator().manual_seed(seed)

    def resume_state(self) -> dict[str, Any]:
        """The mixing generator's state, for a checkpoint (:mod:`hardneg.training.checkpoints`)."""
        return {"generator": self.generator.get_state()}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features))

    def compute_loss_from_embeddings(self, embeddings: list[Tensor]) -> Tensor:
        """The loss from the columns' embeddings: anchors, then positives, then each negative column."""
        from sentence_transformers.util import cos_sim

        queries, docs_all = embeddings[0], torch.cat(embeddings[1:], dim=0)
        b = queries.size(0)
        rows = torch.arange(b, device=queries.device)
        scores = cos_sim(queries, docs_all) * self.scale  # as MNRL computes them
        positive = scores[rows, rows]
        if self.num_mix + self.num_query_mix:
            q = nn.functional.normalize(queries, p=2, dim=1)
            syn = synthetic_negatives(q, nn.functional.normalize(docs_all, p=2, dim=1), scores, rows,
                                      self.num_hard, self.num_mix, self.num_query_mix, self.beta_max, self.generator)
            extra = torch.einsum("bd,bkd->bk", q, syn.points) * self.scale
            scores = torch.cat([scores, extra], dim=1)
        return -(positive - torch.logsumexp(scores, dim=1)).mean()

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the training manifest."""
        return {"num_hard": self.num_hard, "num_mix": self.num_mix, "num_query_mix": self.num_query_mix,
                "beta_max": self.beta_max, "scale": self.scale, "seed": self.seed}

    @property
    def citation(self) -> str:
        return "Kalantidis et al., Hard Negative Mixing for Contrastive Learning, NeurIPS 2020, arXiv:2010.01028"
