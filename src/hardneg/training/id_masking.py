"""Id-masked InfoNCE: MultipleNegativesRankingLoss (cosine, scale 20, in-batch and mined negatives)
in which no query is ever pushed away from one of its own positives. Every candidate document of
the batch (the rows' positives and their mined negatives) is known by its document id, and a
candidate that the run's qrels judge a positive of query i is dropped from query i's softmax
(its logit set to -inf), unless it is query i's own positive column. So when query B's positive is
also a positive of query A (in-batch), or one of A's mined negatives is a positive of B, the pair
stops acting as a negative. Texts are never compared: two documents with one text stay two ids.

This is NGAME's in-batch masking: with hard batches (clusters of similar queries,
:mod:`hardneg.training.hard_batches`) the other queries' positives are often relevant to a query,
and NGAME excludes the known ones from its negatives. K. Dahiya et al., "NGAME: Negative
Mining-aware Mini-batching for Extreme Classification", WSDM 2023, arXiv:2207.04452.

Inputs: columns ``anchor, positive, negative_1..n`` and a ``label`` column of integer ids per row,
``[query, positive doc, negative_1 doc, ..., negative_n doc]`` (indices into the run's collection;
:func:`id_labels` builds them in the row order of hardneg's n-tuple table). The positives of every
query are given once to the loss (:meth:`IdMaskedMNRLLoss.remember_positives`); hardneg's
trainer gives it the (query, positive) pairs of the training table, whose rows hold every
positive of every query in the run's qrels, one per row. With nothing masked the loss equals
sentence-transformers' MultipleNegativesRankingLoss on the same batch.

Example::

    loss = IdMaskedMNRLLoss(model)
    loss.remember_positives(query_idx, doc_idx)  # the qrels' positive pairs, as collection indices
    # dataset columns: anchor, positive, negative_1..n, label ([q, pos, neg_1..neg_n] ids)

or, through hardneg: ``hardneg train --run runs/nfcorpus --out m --loss mnrl-idmask``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from ..runs.run import Run


def pair_keys(query: Any, doc: Any) -> Any:
    """One int64 per (query, doc) pair (ids below 2**31): numpy or torch, as given."""
    return (query << 32) | doc


class IdMaskedMNRLLoss(nn.Module):
    """InfoNCE over (anchor, positive, negative_1..n) that masks, by document id, every candidate that
    is a positive of the row's query (other than its own positive column). See the module docstring."""

    def __init__(self, model: Any, scale: float = 20.0) -> None:
        super().__init__()
        self.model, self.scale = model, scale
        self.positive_keys = torch.empty(0, dtype=torch.int64)
        self.masked_fraction = 0.0  # share of candidates masked in the last batch (for logging)

    def remember_positives(self, query_idx: np.ndarray, doc_idx: np.ndarray) -> None:
        """The positive (query, doc) pairs, as the integer ids the label column uses."""
        q, d = np.asarray(query_idx, dtype=np.int64), np.asarray(doc_idx, dtype=np.int64)
        if q.size and (min(q.min(), d.min()) < 0 or max(q.max(), d.max()) >= 2**31):
            raise ValueError("ids must lie in [0, 2**31)")
        self.positive_keys = torch.from_numpy(np.unique(pair_keys(q, d)))

    def positive_mask(self, ids: Tensor) -> Tensor:
        """(b, b * (1 + n)) True where candidate column j is a positive of row i's query, save row i's own
        positive column. ``ids``: the label rows [query, positive, negatives...]; the candidates are
        ordered as the loss concatenates them: every row's positive, then every row's negative_1, ..."""
        b = ids.size(0)
        docs = ids[:, 1:].T.reshape(-1)
        if self.positive_keys.device != ids.device:  # moved once, to the device the batches are on
            self.positive_keys = self.positive_keys.to(ids.device)
        known = torch.cat([self.positive_keys, pair_keys(ids[:, 0], ids[:, 1])])
        mask = torch.isin(pair_keys(ids[:, :1], docs[None, :]), known)
        own = torch.arange(b, device=ids.device)
        mask[own, own] = False
        return mask

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        from sentence_transformers.util import cos_sim

        if labels is None or labels.dim() != 2 or labels.size(1) != len(embeddings):
            raise ValueError("IdMaskedMNRLLoss needs a label column of ids [query, positive, negatives...] per row")
        queries, docs = embeddings[0], torch.cat(embeddings[1:])
        scores = cos_sim(queries, docs) * self.scale  # (b, b * (1 + n)); column i is row i's positive
        with torch.no_grad():
            mask = self.positive_mask(labels.to(scores.device).long())
            self.masked_fraction = float(mask.float().mean())
        target = torch.arange(queries.size(0), device=scores.device)
        return nn.functional.cross_entropy(scores.masked_fill(mask, float("-inf")), target)

    def get_config_dict(self) -> dict[str, Any]:
        """The settings recorded in the training manifest."""
        return {"scale": self.scale, "similarity_fct": "cos_sim", "positive_pairs": int(self.positive_keys.numel())}

    @property
    def citation(self) -> str:
        return "NGAME: Dahiya et al., WSDM 2023, arXiv:2207.04452"


def id_labels(run: Run, num_negatives: int | None = None) -> np.ndarray:
    """(rows, 2 + k) int64 ids [query, positive, negative_1..k] (indices into the run's collection),
    row for row as :func:`hardneg.export.st_table` builds the n-tuples: queries with the full number of
    negatives, each positive its own row, in the run's order."""
    neg, col = run.negatives, run.collection()
    n = int(run.manifest["config"]["num_negatives"])
    k = min(num_negatives or n, n)
    pos, negs = neg.column("positive_ids").combine_chunks(), neg.column("negative_ids").combine_chunks()
    pos_par = pc.list_parent_indices(pos).to_numpy(zero_copy_only=False)
    neg_par = pc.list_parent_indices(negs).to_numpy(zero_copy_only=False)
    full = np.bincount(neg_par, minlength=neg.num_rows) == n
    keep = full[pos_par]
    query = col.query_index(neg.column("query_id").to_numpy(zero_copy_only=False))
    neg_matrix = col.doc_index(pc.list_flatten(negs).to_numpy(zero_copy_only=False)[full[neg_par]]).reshape(-1, n)
    rows = (np.cumsum(full) - 1)[pos_par[keep]]
    positive = col.doc_index(pc.list_flatten(pos).to_numpy(zero_copy_only=False)[keep])
    return np.column_stack([query[pos_par[keep]], positive, neg_matrix[rows, :k]]).astype(np.int64)
