"""List-wise Wasserstein loss over graded lists (SyCL)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .graded_lists import GradedListLoss, grade_target, in_list


def wasserstein_1d(p: Tensor, t: Tensor, grades: Tensor) -> Tensor:
    """The 1-D Wasserstein-1 distance, per row, between the grade a list's distribution ``p`` puts its
    mass on and the grade ``t`` puts its mass on: items sorted by grade (highest first), the distance
    between the two cumulative distributions, each step weighted by the grade gap to the next item.

    ``W = sum_k (g_(k) - g_(k+1)) * |P(top k) - T(top k)|``, which is ``integral over c of
    |P(grade >= c) - T(grade >= c)| dc``: items of equal grade are one point of the line (their gap
    is 0), so their order does not count. All inputs (b, m); items out of a list have p = t = 0.
    """
    order = torch.sort(grades, dim=1, descending=True, stable=True).indices
    g = torch.gather(grades, 1, order)
    gap = g[:, :-1] - g[:, 1:]
    cdf_gap = torch.cumsum(torch.gather(p, 1, order) - torch.gather(t, 1, order), dim=1)[:, :-1]
    return (gap * cdf_gap.abs()).sum(dim=1)


def gaussian_w2(p: Tensor, t: Tensor) -> Tensor:
    """The SyCL code's form: the squared 2-Wasserstein (Frechet) distance between two Gaussians, one
    fitted to the rows of ``p`` and one to the rows of ``t`` (b samples of m-dimensional vectors):
    ``|mean_p - mean_t|^2 + Tr(S_p) + Tr(S_t) - 2 Tr((S_p S_t)^(1/2))``, covariances with ``1 / (b - 1)``.
    With ``C`` the centred rows over ``sqrt(b - 1)``, ``S = C^T C`` and ``Tr((S_p S_t)^(1/2))`` is the
    nuclear norm of ``C_p C_t^T`` (b x b; its singular values, whose gradient is stable). A scalar."""
    x, y = p.double(), t.double()
    b = x.size(0)
    cx = (x - x.mean(dim=0)) / max(b - 1, 1) ** 0.5
    cy = (y - y.mean(dim=0)) / max(b - 1, 1) ** 0.5
    mean_term = ((x.mean(dim=0) - y.mean(dim=0)) ** 2).sum()
    w2 = mean_term + (cx**2).sum() + (cy**2).sum() - 2 * torch.linalg.svdvals(cx @ cy.T).sum()
    return w2.to(p.dtype)


FORMS = ("list", "gaussian")


class GradedWassersteinLoss(GradedListLoss):
    """The Wasserstein distance between the model's softmax over a query's graded list and the
    distribution the grades give it: the loss (default ``form="list"``) is 0 when the model puts on each grade the mass the
    labels put there, and grows by ``mass x grade drop`` as mass moves to lower grades.

    ``loss = mean over queries of  W1(p, t)``, ``p = softmax(scale * cos(q, d_j))`` over the list,
    ``t`` the label distribution, ``W1`` the distance along the grade axis (:func:`wasserstein_1d`):
    sort the list by grade, highest first, and sum ``(g_k - g_k+1) * |P(top k) - T(top k)|``. For
    integer grades that is ``sum over c = 1..max of |P(grade >= c) - T(grade >= c)|``; with one
    positive and the default target, ``1 - p(positive)``.

    - The list is the row's documents ``d_1..d_n`` (positives with their qrels grade, mined negatives
      grade 0) and, with ``in_batch`` (the default), every other row's documents as grade-0 items.
    - The target ``t``: by default the grades normalised to sum 1 (grade-0 items get no mass); with
      ``grade_temperature`` T, ``softmax(g / T)`` over the list (the reference code's target at T = 1).

    Paper: Esfandiarpoor, Zerveas, Zhang, Mgonzo, Eickhoff, Bach, "Beyond Contrastive Learning:
    Synthetic Data Enables List-wise Training with Multiple Levels of Relevance" (SyCL), arXiv
    2503.23239, 2025.

    Departures from the authors' code (BatsResearch/sycl, ``train.py``, loss ``ws2``), which were read
    while writing this, and why:

    * The reference computes the closed-form 2-Wasserstein (Frechet) distance between two Gaussians
      fitted over the batch, one to the queries' predicted distributions and one to their target
      distributions (means and covariances across the batch's queries): it compares the two *sets*
      of distributions, not each query's pair, so giving query 1 query 2's prediction and query 2
      query 1's costs nothing. Here (``form="list"``, the default) each query's predicted and
      target distributions are compared exactly, with the 1-D W1 along the grade axis, and averaged
      over queries. ``form="gaussian"`` is the reference's distance (:func:`gaussian_w2`), for
      comparison; with ``grade_temperature`` 1 and ``in_batch`` it takes the reference's inputs too.
    * The reference's target is ``softmax(grade)`` (temperature 1) over the whole in-batch list, so
      most of it lies on grade-0 passages when the list is long; the default here normalises the
      grades (negatives 0), which keeps the target the same whatever the list length. Set
      ``grade_temperature`` 1 for the reference's target.
    * Scores are cosines x ``scale`` (as sentence-transformers' MNRL), where the reference used the
      encoder's dot products divided by a temperature.

    Args:
        model: the SentenceTransformer being trained.
        scale: inverse temperature of the cosine logits (MNRL's 20; ``1 / student_temperature``).
        in_batch: the other rows' documents join each row's list as grade-0 items.
        grade_temperature: None: normalised grades; T: ``softmax(grade / T)``.
        form: ``list`` (each query's W1 along the grade axis) or ``gaussian`` (the reference code's).

    Inputs:
        +-----------------------------+------------------------------------------------------------+
        | Texts                       | Labels                                                     |
        +=============================+============================================================+
        | (anchor, doc_1, ..., doc_n) | grades [g_1, ..., g_n]: > 0 positives, 0 negatives,        |
        |                             | < 0 padding (left out)                                     |
        +-----------------------------+------------------------------------------------------------+

    Example::

        hardneg mine --dataset ../shared/data/cranfield --split test --teacher bm25 --out runs/cran
        hardneg train --run runs/cran --out models/ws --loss graded-wasserstein --graded-positives 4
    """

    name = "graded-wasserstein"

    def __init__(self, model: Any, scale: float = 20.0, in_batch: bool = True, grade_temperature: float | None = None,
                 form: str = "list"):
        super().__init__(model, scale, in_batch, grade_temperature)
        if form not in FORMS:
            raise ConfigError(f"unknown Wasserstein form '{form}' (use {', '.join(FORMS)})")
        self.form = form

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        """The mean over rows of each row's W1 (``list``), or the batch's Gaussian W2 (``gaussian``)."""
        logits, grades, mask = self.scored_lists(embeddings, labels)
        if self.form == "list":
            return self.row_loss(logits, grades, mask).mean()
        p = torch.softmax(in_list(logits, mask), dim=1)
        return gaussian_w2(p, grade_target(grades, mask, self.grade_temperature))

    def row_loss(self, logits: Tensor, grades: Tensor, mask: Tensor) -> Tensor:
        """Each row's W1 between the model's distribution and the label distribution (b,)."""
        target = grade_target(grades, mask, self.grade_temperature)
        p = torch.softmax(in_list(logits, mask), dim=1)
        return wasserstein_1d(p, target, grades)

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the training manifest."""
        return {**super().get_config_dict(), "form": self.form}

    @property
    def citation(self) -> str:
        return ("Esfandiarpoor et al., Beyond Contrastive Learning: Synthetic Data Enables List-wise Training "
                "with Multiple Levels of Relevance, arXiv:2503.23239, 2025")
