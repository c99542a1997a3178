"""The losses hardneg trains with, all from sentence-transformers, chosen by name.

| name | loss | columns |
|---|---|---|
| ``mnrl`` | MultipleNegativesRankingLoss, in-batch negatives only | anchor, positive |
| ``mnrl-hn`` | MultipleNegativesRankingLoss with the mined negatives (InfoNCE) | anchor, positive, negative_1..n |
| ``cached-mnrl`` | CachedMultipleNegativesRankingLoss (GradCache: large batches, small memory) | as mnrl-hn |
| ``gist`` | GuidedInfoNCELoss: candidates a guide model scores above the positive are masked (n-tuples) | as mnrl-hn |
| ``gist-scores`` | GuidedInfoNCELoss guided by the miner's stored scores (own negatives only) | + label |
| ``margin-mse`` | MarginMSELoss on the stored teacher scores (label = s+ - s-) | + label |
| ``kl`` | DistillKLDivLoss, listwise over [positive + negatives], teacher and student temperatures | + label |
| ``mnrl-kl`` | InfoNCEDistillLoss: MNRL (mined + in-batch negatives) + weighted listwise KL to the labels | + label |
| ``mochi`` | MoCHiLoss: MNRL plus synthetic negatives mixed from the hardest ones (``mochi_*`` knobs) | as mnrl-hn |
| ``cet`` | CETLoss: MNRL, each mined negative weighted by its pooling propensity (CET) | + label |
| ``adore`` | AdoreLoss: each step's negatives retrieved from a fixed index by the student's queries | anchor, label |
| ``mnrl-idmask`` | IdMaskedMNRLLoss: mnrl-hn where no query's own positives (by id, qrels) are its negatives | + label (ids) |
| ``graded-wasserstein`` | GradedWassersteinLoss (SyCL): 1-D Wasserstein between the model's softmax over a graded list and the grades' (``wasserstein_form``) | anchor, doc_1..n, label (grades) |
| ``graded-softmax`` | GradedSoftmaxLoss: list-wise softmax cross-entropy to the grades' distribution (ListNet) | as graded-wasserstein |

Labels are the filter teacher's raw scores, or with ``teacher_scores`` several teachers' scores
fused per row (:mod:`hardneg.training.soft_labels`); the graded losses' labels are the qrels grades of each query's list
(:mod:`hardneg.training.graded_table`). ``hardness_strength`` > 0 turns on sentence-transformers' hardness weighting of the mined
negatives (MNRL family)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .config import LOSSES
from .distill_infonce import InfoNCEDistillLoss
from .guided import GuidedInfoNCELoss
from .id_masking import IdMaskedMNRLLoss

WITH_NEGATIVES = ("mnrl-hn", "cached-mnrl", "gist", "gist-scores", "margin-mse", "kl", "mnrl-kl", "mochi", "cet",
                  "mnrl-idmask")
WITH_LABELS = ("margin-mse", "kl", "mnrl-kl", "gist-scores")
GRADED = ("graded-wasserstein", "graded-softmax")


def build_loss(name: str, model: Any, guide: Any = None, hardness_strength: float = 0.0,
               mini_batch_size: int = 16, teacher_temperature: float = 1.0, student_temperature: float | None = None,
               distill_weight: float = 1.0, infonce_weight: float = 1.0, seed: int = 0,
               mochi: dict[str, Any] | None = None, graded: dict[str, Any] | None = None) -> Any:
    """A sentence-transformers loss object for ``name`` (see the table above); ``mochi`` holds
    :class:`~.mochi.MoCHiLoss`'s keyword arguments, ``seed`` seeds its draws; ``graded`` the graded
    losses' (``in_batch``, ``grade_temperature``, graded-wasserstein's ``form``; their scale is
    ``1 / student_temperature``)."""
    from sentence_transformers.sentence_transformer import losses

    hard: dict[str, Any] = {"hardness_mode": "hard_negatives", "hardness_strength": hardness_strength} if hardness_strength else {}
    if name in ("mnrl", "mnrl-hn"):
        return losses.MultipleNegativesRankingLoss(model, **hard)
    if name == "cached-mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size, **hard)
    if name == "gist":
        if guide is None:
            raise ConfigError("loss 'gist' needs a guide model (--guide MODEL)")
        return GuidedInfoNCELoss(model, guide=guide)
    if name == "gist-scores":
        return GuidedInfoNCELoss(model, use_scores=True)
    if name == "margin-mse":
        return losses.MarginMSELoss(model)
    if name == "kl":
        return losses.DistillKLDivLoss(model, teacher_temperature=teacher_temperature,
                                       student_temperature=student_temperature or 1.0)
    if name == "mnrl-kl":
        return InfoNCEDistillLoss(model, distill_weight, infonce_weight, teacher_temperature=teacher_temperature,
                                  student_temperature=student_temperature)
    if name == "mochi":
        from .mochi import MoCHiLoss

        return MoCHiLoss(model, seed=seed, **(mochi or {}))
    if name == "cet":
        from .cet import CETLoss

        return CETLoss(model)
    if name == "adore":
        raise ConfigError("loss 'adore' retrieves from the run's corpus: train it with hardneg.train (a run)")
    if name == "mnrl-idmask":
        if hardness_strength:
            raise ConfigError("loss 'mnrl-idmask' has no hardness weighting (hardness_strength must be 0)")
        return IdMaskedMNRLLoss(model)  # its positives come from the training table (train_on_table)
    if name in GRADED:
        from .graded_softmax import GradedSoftmaxLoss
        from .graded_wasserstein import GradedWassersteinLoss

        if hardness_strength:
            raise ConfigError(f"loss '{name}' has no hardness weighting (hardness_strength must be 0)")
        cls = GradedWassersteinLoss if name == "graded-wasserstein" else GradedSoftmaxLoss
        return cls(model, scale=1.0 / (student_temperature or 0.05), **(graded or {}))
    raise ConfigError(f"unknown loss '{name}' (choose from {', '.join(LOSSES)})")
