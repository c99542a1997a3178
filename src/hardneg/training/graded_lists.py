"""What the graded list-wise losses share: the model's scores of each query's graded list (and of the
batch's other documents), the padding mask, and the target distribution the grades give.

A row of a graded table is ``[query, d_1..d_n]`` with a label vector of ``n`` grades: the query's
positives with their qrels grade (highest first), then its mined negatives with grade 0; a grade
< 0 marks a padding slot (a query with fewer positives or negatives than the table's width), which
takes no part in any row's list. See :mod:`hardneg.training.graded_table`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError


def in_list(logits: Tensor, mask: Tensor) -> Tensor:
    """The logits with every item outside its row's list at -inf (no mass under a softmax)."""
    return torch.where(mask, logits, torch.full_like(logits, float("-inf")))


def grade_target(grades: Tensor, mask: Tensor, temperature: float | None = None) -> Tensor:
    """The label distribution over each row's list.

    Args:
        grades: (b, m) grades, >= 0 where ``mask``.
        mask: (b, m) bool, the items in each row's list.
        temperature: None: the grades normalised to sum 1 (``g / sum(g)``: grade-0 items get no mass,
            one positive gets all of it); a float T: ``softmax(g / T)`` over the list (ListNet's
            target: every grade-0 item gets ``exp(0)`` before normalising).

    Returns:
        (b, m) probabilities, 0 outside ``mask``.
    """
    g = torch.where(mask, grades, torch.zeros_like(grades))
    if temperature is None:
        total = g.sum(dim=1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("a graded list has no positive grade (the normalised target needs one)")
        return g / total
    return torch.softmax(in_list(g / temperature, mask), dim=1)


class GradedListLoss(nn.Module):
    """Base of the graded losses: cosine x ``scale`` between each query and its list's documents
    (and, with ``in_batch``, every other row's documents as extra grade-0 items); subclasses turn
    (logits, grades, mask) into a per-row loss with :meth:`row_loss`."""

    name = "graded"

    def __init__(self, model: Any, scale: float = 20.0, in_batch: bool = True, grade_temperature: float | None = None):
        super().__init__()
        self.model, self.scale, self.in_batch = model, float(scale), bool(in_batch)
        self.grade_temperature = None if grade_temperature is None else float(grade_temperature)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        if labels is None:
            raise ConfigError(f"loss '{self.name}' needs a grade label column: train it on a hardneg run")
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def scored_lists(self, embeddings: list[Tensor], labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(logits, grades, mask), each (b, n * b): column ``j * b + i`` is row i's document j.
        Row i's own documents carry its grades; the other rows' documents grade 0 (in the list only
        with ``in_batch``); padding slots are out of every row's list."""
        from sentence_transformers.util import cos_sim

        queries, docs = embeddings[0], torch.cat(embeddings[1:], dim=0)
        b, n = queries.size(0), len(embeddings) - 1
        g = labels.to(queries.device, queries.dtype).reshape(b, n)
        logits = cos_sim(queries, docs) * self.scale
        rows = torch.arange(b, device=queries.device)
        own = torch.arange(n, device=queries.device)[None, :] * b + rows[:, None]  # (b, n): row i's columns
        grades = torch.zeros_like(logits)
        grades[rows[:, None], own] = g.clamp(min=0)
        real = (g >= 0).T.reshape(1, -1)  # column j * b + i is real unless row i's slot j is padding
        if self.in_batch:
            mask = real.expand(b, -1).clone()
        else:
            mask = torch.zeros_like(logits, dtype=torch.bool)
            mask[rows[:, None], own] = g >= 0
        return logits, grades, mask

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        """The mean over rows of :meth:`row_loss`, from the columns' embeddings and the grades (b, n)."""
        logits, grades, mask = self.scored_lists(embeddings, labels)
        return self.row_loss(logits, grades, mask).mean()

    def row_loss(self, logits: Tensor, grades: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the training manifest."""
        return {"scale": self.scale, "in_batch": self.in_batch, "grade_temperature": self.grade_temperature}
