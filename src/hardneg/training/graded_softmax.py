"""Graded list-wise softmax cross-entropy (ListNet's top-one loss over a query's graded list)."""

from __future__ import annotations

import torch
from torch import Tensor

from .graded_lists import GradedListLoss, grade_target, in_list


class GradedSoftmaxLoss(GradedListLoss):
    """The cross-entropy between the distribution the grades give a query's list and the model's
    softmax over the same list:

    ``loss = mean over queries of  - sum_j  t_j * log softmax(scale * cos(q, d_j))``

    - The list is the row's documents ``d_1..d_n`` (its positives with their qrels grade, then its mined
      negatives with grade 0) and, with ``in_batch`` (the default), every other row's documents as extra
      grade-0 items, as MultipleNegativesRankingLoss uses them.
    - The target ``t``: by default the grades normalised to sum 1 (``t_j = g_j / sum g``), so grade-0
      items get no mass and a grade-2 document twice a grade-1 one's. With ``grade_temperature`` T it
      is ListNet's ``softmax(g / T)`` over the whole list (grade-0 items then get mass too).
    - With the default target, in-batch items and one positive per row this is
      MultipleNegativesRankingLoss with hard negatives (InfoNCE), exactly: the graded loss is InfoNCE
      with several positives weighted by grade.

    It is cross-entropy, not KL: the two differ by the target's entropy, a constant of the labels,
    so the gradients are the same (``scale * (p - t)`` on each logit).

    Paper: Cao, Qin, Liu, Tsai, Li, "Learning to Rank: From Pairwise Approach to Listwise Approach"
    (ListNet, ICML 2007: the top-one probability cross-entropy); used with graded relevance for
    dense retrievers by Esfandiarpoor et al., "Beyond Contrastive Learning: Synthetic Data Enables
    List-wise Training with Multiple Levels of Relevance" (SyCL, arXiv 2503.23239, 2025), whose
    main loss is :class:`~hardneg.training.graded_wasserstein.GradedWassersteinLoss`.

    Args:
        model: the SentenceTransformer being trained.
        scale: inverse temperature of the cosine logits (MNRL's 20; ``1 / student_temperature``).
        in_batch: the other rows' documents join each row's list as grade-0 items.
        grade_temperature: None: normalised grades; T: ``softmax(grade / T)``.

    Inputs:
        +-----------------------------+------------------------------------------------------------+
        | Texts                       | Labels                                                     |
        +=============================+============================================================+
        | (anchor, doc_1, ..., doc_n) | grades [g_1, ..., g_n]: > 0 positives, 0 negatives,        |
        |                             | < 0 padding (left out)                                     |
        +-----------------------------+------------------------------------------------------------+

    Example::

        hardneg mine --dataset ../shared/data/nfcorpus --split dev --teacher dense --out runs/nf-dev
        hardneg train --run runs/nf-dev --out models/graded --loss graded-softmax --graded-positives 4
    """

    name = "graded-softmax"

    def row_loss(self, logits: Tensor, grades: Tensor, mask: Tensor) -> Tensor:
        """Each row's cross-entropy (b,)."""
        target = grade_target(grades, mask, self.grade_temperature)
        log_p = torch.log_softmax(in_list(logits, mask), dim=1)
        return -(target * torch.where(mask, log_p, torch.zeros_like(log_p))).sum(dim=1)

    @property
    def citation(self) -> str:
        return "Cao et al., Learning to Rank: From Pairwise Approach to Listwise Approach (ListNet), ICML 2007"
