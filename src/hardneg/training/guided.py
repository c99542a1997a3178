"""Guided InfoNCE: in-batch and mined negatives that a guide scores as close to (or above) the
positive are masked out of the softmax, so likely false negatives stop pushing the model the
wrong way (GISTEmbed, Solatorio 2024, generalised to n-tuples).

Guide = a model (every candidate in the batch is checked) or the miner's stored scores (each
row's own mined negatives are checked: column ``label`` = [s+, s-_1..s-_n])."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


class GuidedInfoNCELoss(nn.Module):
    """InfoNCE over (anchor, positive, negative_1..n) with guide masking.

    A candidate j is masked for anchor i when guide(i, j) > guide(i, positive_i) - margin.
    The own positive is never masked. Inputs: anchor, positive, any number of negatives."""

    def __init__(self, model: Any, guide: Any = None, use_scores: bool = False, margin: float = 0.0,
                 scale: float = 20.0):
        super().__init__()
        if guide is None and not use_scores:
            raise ValueError("give a guide model or use_scores=True")
        self.model, self.guide, self.use_scores, self.margin, self.scale = model, guide, use_scores, margin, scale
        self.masked_fraction = 0.0  # share of candidates masked in the last batch (for logging)

    def _embed(self, model: Any, features: dict[str, Tensor]) -> Tensor:
        return nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        feats = list(sentence_features)
        anchor = self._embed(self.model, feats[0])
        docs = torch.cat([self._embed(self.model, f) for f in feats[1:]])
        b = anchor.size(0)
        logits = anchor @ docs.T  # (b, b * (1 + n)); column i is row i's positive
        target = torch.arange(b, device=logits.device)
        with torch.no_grad():
            if self.guide is not None:
                g_anchor = self._embed(self.guide, feats[0])
                g_docs = torch.cat([self._embed(self.guide, f) for f in feats[1:]])
                g = g_anchor @ g_docs.T
                mask = g > (g[target, target] - self.margin)[:, None]
            else:
                mask = torch.zeros_like(logits, dtype=torch.bool)
            if self.use_scores and labels is not None:
                lab = labels.to(logits.device)
                n = lab.size(1) - 1
                own = lab[:, 1:] > (lab[:, :1] - self.margin)  # own negatives too close to the positive
                cols = b + torch.arange(n, device=logits.device)[None, :] * b + target[:, None]
                mask[target[:, None].expand(-1, n), cols] |= own
            mask[target, target] = False
            self.masked_fraction = float(mask.float().mean())
        logits = logits.masked_fill(mask, float("-inf")) * self.scale
        return nn.functional.cross_entropy(logits, target)

    @property
    def citation(self) -> str:
        return "GISTEmbed: Solatorio, 2024, arXiv:2402.16829"
