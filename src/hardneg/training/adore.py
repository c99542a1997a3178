"""ADORE-style training (loss ``adore``): negatives retrieved live, at every step, from a fixed index.

The corpus is encoded once with the BASE model (the model training starts from), through hardneg's
embedding cache with the run's dense settings (encoder, prompts, max length, dtype), so a run mined by
the same model costs no encoding. At every step the current student encodes the batch's queries; each
query retrieves the exact top ``adore_depth`` documents of the fixed index by dot product, its own
positives (every positive of the query, by id) excluded; the top ``adore_negatives`` of them (default:
all) are its negatives. The loss is InfoNCE over [the row's positive, those negatives], document
vectors taken from the fixed index (no gradient): only the query side trains.

Paper: Zhan, Mao, Liu, Guo, Zhang, Ma, "Optimizing Dense Retrieval Model Training with Hard
Negatives", SIGIR 2021, arXiv:2104.08051 (ADORE: "Algorithm for Directly Optimizing Ranking
pErformance"; STAR is their static-plus-random-negatives stage, see :mod:`hardneg.training.refresh`
for refreshed static negatives).

How this departs from ADORE. ADORE trains a query encoder of its own (initialised from the STAR model)
while the document encoder and the index stay frozen, and the final system is that query encoder over
that index. A sentence-transformers bi-encoder is one shared-weight (Siamese) network: here the loss
still takes gradients from the query side only, but the update moves the document encoder too, and the
saved model (which hardneg evaluates by re-encoding the corpus with it) ranks documents it has not been
trained to match. Keep the budget short or the learning rate small, and compare on held-out data. Also,
ADORE optimises a pairwise RankNet-style loss weighted by the change in the target metric (LambdaRank)
over the top 200; this uses listwise InfoNCE (MNRL's scale of 20 on cosine scores, 1 on raw dot
products), and no in-batch negatives. The whole index lives on the training device (documents x
dimension float32) and each step scores the batch against all of it.

Inputs: columns ``anchor`` and ``label`` (the row index; see :func:`adore_table`): one row per (query,
positive) of the run.

Example::

    import hardneg

    run = hardneg.mine("scifact", teacher="dense", out="runs/scifact-dense")
    hardneg.train(run, "models/adore", loss="adore", adore_depth=200, learning_rate=5e-6, max_steps=100)
    # CLI: hardneg train --run runs/scifact-dense --out models/adore --loss adore --adore-depth 200
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor, nn

from ..export import _flat
from ..runs.run import Run


class AdoreLoss(nn.Module):
    """InfoNCE of the student's query embedding against document vectors of a fixed index: the row's
    positive and the top negatives retrieved from the index by the current query embedding.

    Args:
        model: the student (a SentenceTransformer).
        index: (documents, dim) fixed document vectors (the base model's).
        target: (rows,) the positive document of each training row.
        positives: (rows, p) every positive of each row's query, padded with -1 (never retrieved).
        depth: documents retrieved per query (positives excluded).
        negatives: how many of the top retrieved enter the loss (None = all ``depth``).
        normalize: L2-normalise the query embedding (True when the index is normalised).
        scale: multiplies the scores before the softmax (default: 20 with ``normalize``, else 1).
    """

    index: Tensor
    target: Tensor
    positives: Tensor

    def __init__(self, model: Any, index: Tensor, target: Tensor, positives: Tensor, depth: int = 200,
                 negatives: int | None = None, normalize: bool = True, scale: float | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("index", index.float(), persistent=False)
        self.register_buffer("target", target.long(), persistent=False)
        self.register_buffer("positives", positives.long(), persistent=False)
        self.depth, self.num_negatives, self.normalize = depth, negatives, normalize
        self.scale = (20.0 if normalize else 1.0) if scale is None else scale
        self.last_negatives: Tensor | None = None  # the (rows, k) ids retrieved in the last step

    def retrieve(self, queries: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The exact top negatives of the index for these query embeddings: (ids, found), both
        (rows, k); ``found`` is False where the index had no more non-positive documents."""
        with torch.no_grad():
            scores = queries.float() @ self.index.T
            pos = self.positives[rows]
            r, c = torch.nonzero(pos >= 0, as_tuple=True)
            scores[r, pos[r, c]] = float("-inf")
            k = min(self.depth, self.index.size(0))
            top, ids = torch.topk(scores, k, dim=1)
            if self.num_negatives is not None:
                top, ids = top[:, : self.num_negatives], ids[:, : self.num_negatives]
        return ids, torch.isfinite(top)

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise ValueError("AdoreLoss needs the row index of every example as its label")
        rows = labels.long().to(self.index.device)
        q = self.model(dict(sentence_features[0]))["sentence_embedding"].float()
        if self.normalize:
            q = nn.functional.normalize(q, dim=-1)
        ids, found = self.retrieve(q.detach(), rows)
        self.last_negatives = ids
        docs = torch.cat([self.target[rows][:, None], ids], dim=1)
        logits = torch.einsum("bd,bkd->bk", q, self.index[docs]) * self.scale
        missing = torch.cat([torch.zeros_like(found[:, :1]), ~found], dim=1)
        logits = logits.masked_fill(missing, float("-inf"))
        return nn.functional.cross_entropy(logits, torch.zeros_like(rows))

    def get_config_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "negatives": self.num_negatives, "normalize": self.normalize,
                "scale": self.scale, "index_docs": int(self.index.size(0))}

    @property
    def citation(self) -> str:
        return "ADORE: Zhan et al., SIGIR 2021, arXiv:2104.08051"


def adore_rows(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per (query, positive) of the run, in the order of the ``pair`` table: the query's
    collection index, the positive's document index, and every positive of the query (-1 padded)."""
    col, neg = run.collection(), run.negatives
    q_idx = col.query_index(neg.column("query_id").to_numpy(zero_copy_only=False))
    pos_ids, pos_par = _flat(neg, "positive_ids")
    pos_doc = col.doc_index(pos_ids)
    count = np.bincount(pos_par, minlength=q_idx.size)
    slot = np.arange(pos_par.size) - np.concatenate([[0], np.cumsum(count)])[pos_par]
    per_query = np.full((q_idx.size, max(int(count.max(initial=0)), 1)), -1, dtype=np.int64)
    per_query[pos_par, slot] = pos_doc
    return q_idx[pos_par], pos_doc, per_query[pos_par]


def adore_table(run: Run) -> pa.Table:
    """The training table of loss ``adore``: ``anchor`` (query text) and ``label`` (row index)."""
    col = run.collection()
    q_idx, _, _ = adore_rows(run)
    return pa.table({"anchor": [col.query_texts[i] for i in q_idx],
                     "label": pa.array(np.arange(q_idx.size, dtype=np.int64))})


def build_adore_loss(run: Run, student: Any, base_model: str | None, depth: int,
                     negatives: int | None) -> tuple[AdoreLoss, dict[str, Any]]:
    """The loss with the base model's corpus index (from the embedding cache), and what the manifest
    records about the index."""
    from ..candidates.teachers import DenseTeacher
    from ..runs.cache import Cache
    from ..runs.fingerprint import env_cache_dir

    t0 = time.perf_counter()
    mined = run.manifest["config"]
    col = run.collection()
    teacher = DenseTeacher(base_model, mined.get("query_prompt"), mined.get("doc_prompt"), mined.get("max_length"),
                           batch_size=int(mined.get("batch_size", 32)), device=mined.get("device"),
                           encoder=mined.get("encoder", "auto"), embedding_dtype=mined.get("embedding_dtype", "fp32"))
    cache = Cache(env_cache_dir(mined.get("cache_dir")))
    teacher.resolve(cache)
    index = teacher.embed(col.doc_texts, teacher.doc_prompt or "", cache, "documents")
    vectors = torch.from_numpy(np.asarray(index[0:len(index)], dtype=np.float32))
    _, target, positives = adore_rows(run)
    loss = AdoreLoss(student, vectors, torch.from_numpy(target), torch.from_numpy(positives), depth, negatives,
                     normalize=bool(teacher.normalize))
    info = {"model": teacher.model_spec or "default", "model_fingerprint": teacher.model_fingerprint,
            "encoder": teacher.encoder, "doc_prompt": teacher.doc_prompt, "docs": int(vectors.shape[0]),
            "seconds": round(time.perf_counter() - t0, 2)}
    return loss, info
