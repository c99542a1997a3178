"""The losses hardneg trains with, all from sentence-transformers, chosen by name.

| name | loss | columns |
|---|---|---|
| ``mnrl`` | MultipleNegativesRankingLoss, in-batch negatives only | anchor, positive |
| ``mnrl-hn`` | MultipleNegativesRankingLoss with the mined negatives (InfoNCE) | anchor, positive, negative_1..n |
| ``cached-mnrl`` | CachedMultipleNegativesRankingLoss (GradCache: large batches, small memory) | as mnrl-hn |
| ``gist`` | GuidedInfoNCELoss: candidates a guide model scores above the positive are masked (n-tuples) | as mnrl-hn |
| ``gist-scores`` | GuidedInfoNCELoss guided by the miner's stored scores (own negatives only) | + label |
| ``margin-mse`` | MarginMSELoss on the stored teacher scores (label = s+ - s-) | + label |
| ``kl`` | DistillKLDivLoss on the stored teacher scores (label = [s+, s-...]) | + label |
| ``adore`` | AdoreLoss: each step's negatives retrieved from a fixed index by the student's queries | anchor, label |

``hardness_strength`` > 0 turns on sentence-transformers' hardness weighting of the mined
negatives (MNRL family)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .config import LOSSES
from .guided import GuidedInfoNCELoss

WITH_NEGATIVES = ("mnrl-hn", "cached-mnrl", "gist", "gist-scores", "margin-mse", "kl")
WITH_LABELS = ("margin-mse", "kl", "gist-scores")


def build_loss(name: str, model: Any, guide: Any = None, hardness_strength: float = 0.0,
               mini_batch_size: int = 16) -> Any:
    """A sentence-transformers loss object for ``name`` (see the table above)."""
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
        return losses.DistillKLDivLoss(model)
    if name == "adore":
        raise ConfigError("loss 'adore' retrieves from the run's corpus: train it with hardneg.train (a run)")
    raise ConfigError(f"unknown loss '{name}' (choose from {', '.join(LOSSES)})")
