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
| ``mnrl-idmask`` | IdMaskedMNRLLoss: mnrl-hn where no query's own positives (by id, qrels) are its negatives | + label (ids) |

``hardness_strength`` > 0 turns on sentence-transformers' hardness weighting of the mined
negatives (MNRL family)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .config import LOSSES
from .guided import GuidedInfoNCELoss
from .id_masking import IdMaskedMNRLLoss

WITH_NEGATIVES = ("mnrl-hn", "cached-mnrl", "gist", "gist-scores", "margin-mse", "kl", "mnrl-idmask")
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
    if name == "mnrl-idmask":
        if hardness_strength:
            raise ConfigError("loss 'mnrl-idmask' has no hardness weighting (hardness_strength must be 0)")
        return IdMaskedMNRLLoss(model)  # its positives come from the training table (train_on_table)
    raise ConfigError(f"unknown loss '{name}' (choose from {', '.join(LOSSES)})")
