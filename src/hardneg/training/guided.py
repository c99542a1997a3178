"""Guided InfoNCE: in-batch and mined negatives that a guide scores as close to (or above) the
positive are masked out of the softmax, so likely false negatives stop pushing the model the
wrong way (GISTEmbed, Solatorio 2024, generalised to n-tuples).

Guide = a model (every candidate in the batch is checked) or the miner's stored scores (each
row's own mined negatives are checked: column ``label`` = [s+, s-_1..s-_n]).

A guide model reads its own tokens. The loss receives the student's token ids only, so when the two
tokenizers differ (another vocabulary, another input layout such as static embeddings' flat ids,
or a guide that reads fewer tokens) each column is decoded back to text with the student's
tokenizer and tokenised again by the guide, as sentence-transformers' GISTEmbedLoss does. The
guide then sees what the student saw: the text after the student's truncation and normalisation
(an uncased student hands a cased guide lower-cased text)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise
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
        self.retokenize = guide is not None and not reads_same_tokens(model, guide)

    def _embed(self, model: Any, features: dict[str, Tensor]) -> Tensor:
        return nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    def guide_similarities(self, feats: list[dict[str, Tensor]]) -> Tensor:
        """The guide's cosine similarity of every anchor (rows) to every candidate (columns), on
        features in the guide's own tokens."""
        from sentence_transformers.util import batch_to_device

        if self.retokenize:
            feats = [batch_to_device(self.guide.preprocess(decode(self.model, f)), self.guide.device) for f in feats]
        else:
            feats = [dict(f) for f in feats]  # a model writes its outputs into the dict it is given
        with torch.no_grad():
            g_anchor = self._embed(self.guide, feats[0])
            g_docs = torch.cat([self._embed(self.guide, f) for f in feats[1:]])
        return g_anchor @ g_docs.T

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        feats = list(sentence_features)
        anchor = self._embed(self.model, feats[0])
        docs = torch.cat([self._embed(self.model, f) for f in feats[1:]])
        b = anchor.size(0)
        logits = anchor @ docs.T  # (b, b * (1 + n)); column i is row i's positive
        target = torch.arange(b, device=logits.device)
        with torch.no_grad():
            if self.guide is not None:
                g = self.guide_similarities(feats).to(logits.device)
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

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the training manifest."""
        return {"margin": self.margin, "scale": self.scale, "use_scores": self.use_scores,
                "guide_retokenizes": self.retokenize}

    @property
    def citation(self) -> str:
        return "GISTEmbed: Solatorio, 2024, arXiv:2402.16829"


def reads_same_tokens(model: Any, guide: Any) -> bool:
    """True when the guide can take the student's features as they are: one vocabulary, one input
    layout (module type) and a guide that reads at least as many tokens."""
    return (type(model[0]) is type(guide[0]) and guide.max_seq_length >= model.max_seq_length
            and model.tokenizer.get_vocab() == guide.tokenizer.get_vocab())


def decode(model: Any, features: dict[str, Tensor]) -> list[str]:
    """The texts of one column, decoded from the student's token ids with its own tokenizer
    (padding and special tokens dropped)."""
    ids = features["input_ids"]
    if "offsets" in features:  # static embeddings: one flat id list, row i starts at offsets[i]
        bounds = [*features["offsets"].tolist(), ids.numel()]
    elif "cu_seq_lens_q" in features:  # packed rows (flash attention): boundaries given
        bounds = features["cu_seq_lens_q"].tolist()
    else:
        return _decode_rows(model.tokenizer, ids.tolist())
    flat = ids.reshape(-1).tolist()
    return _decode_rows(model.tokenizer, [flat[a:b] for a, b in pairwise(bounds)])


def _decode_rows(tokenizer: Any, rows: list[list[int]]) -> list[str]:
    """Decode with a transformers tokenizer (``batch_decode``) or a tokenizers one (``decode_batch``)."""
    if hasattr(tokenizer, "batch_decode"):
        return list(tokenizer.batch_decode(rows, skip_special_tokens=True))
    return list(tokenizer.decode_batch(rows, skip_special_tokens=True))
