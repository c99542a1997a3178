"""Retrieval quality with pytrec_eval semantics (the BEIR / MTEB standard).

Choices, stated once:
- queries evaluated: every query with at least one positive (grade > 0) in the split's qrels;
  a query the run does not cover scores 0 (pytrec_eval alone would skip it);
- ties: as trec_eval, by score descending, then doc id descending;
- ``ignore_identical_ids`` (default on, as BEIR): a document whose id equals the query id is
  removed from that query's ranking before scoring;
- ``mrr@k`` is trec_eval's ``recip_rank`` on the top-k of the run; ``ndcg@k`` is ``ndcg_cut.k``
  (linear gains = grades); ``recall@k`` is ``recall.k`` (relevant = grade >= 1).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import Collection
from .errors import ConfigError
from .io import write_text

DEFAULT_MEASURES = ("ndcg@10", "recall@100", "mrr@10")
_ALIASES = {"ndcg": "ndcg_cut", "recall": "recall", "r": "recall", "mrr": "recip_rank", "rr": "recip_rank",
            "map": "map_cut", "p": "P", "precision": "P", "success": "success"}


@dataclass
class Ranking:
    """Top-k document indices and scores per query, as arrays (queries x k, -1 = empty slot)."""

    query_idx: np.ndarray
    doc_idx: np.ndarray
    scores: np.ndarray


@dataclass
class Evaluation:
    """Mean metrics, per-query values and the number of queries they average over."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False)
    queries: int
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {**{k: round(v, 6) for k, v in self.metrics.items()}, "queries": self.queries}

    def save_per_query(self, path: str | Path) -> Path:
        """One JSON object per line: query_id and every measure (for paired significance tests)."""
        qids = sorted(next(iter(self.per_query.values()), {}))
        lines = [json.dumps({"query_id": q, **{m: v[q] for m, v in self.per_query.items()}}) for q in qids]
        return write_text(path, "\n".join(lines) + "\n")


def parse_measure(name: str) -> tuple[str, str, int | None]:
    """``ndcg@10`` -> (key, pytrec_eval family, cutoff). Bare pytrec_eval names pass through."""
    m = re.fullmatch(r"([a-zA-Z_]+)@(\d+)", name.strip())
    if m:
        fam = _ALIASES.get(m.group(1).lower())
        if fam is None:
            raise ConfigError(f"unknown measure '{name}' (ndcg@k, recall@k, mrr@k, map@k, p@k, success@k, or a "
                              "pytrec_eval name)")
        return name.strip().lower(), fam, int(m.group(2))
    import pytrec_eval

    if name not in pytrec_eval.supported_measures:
        raise ConfigError(f"unknown measure '{name}'")
    return name, name, None


def _drop_identical(col: Collection, ranking: Ranking) -> np.ndarray:
    ok = ranking.doc_idx >= 0
    ids = np.where(ok, ranking.doc_idx, 0)
    same = col.doc_ids[ids] == col.query_ids[ranking.query_idx][:, None]
    return ok & ~same


def evaluate_ranking(col: Collection, ranking: Ranking, measures: tuple[str, ...] = DEFAULT_MEASURES,
                     ignore_identical_ids: bool = True) -> Evaluation:
    """Score a ranking against the collection's qrels with pytrec_eval."""
    import pytrec_eval

    parsed = [parse_measure(m) for m in measures]
    pos = col.positives()
    judged = np.unique(pos.query_idx)
    qrels: dict[str, dict[str, int]] = {}
    for q, d, g in zip(col.query_ids[col.qrels.query_idx].tolist(), col.doc_ids[col.qrels.doc_idx].tolist(),
                       col.qrels.grade.tolist()):
        qrels.setdefault(q, {})[d] = int(g)
    keep = _drop_identical(col, ranking) if ignore_identical_ids else ranking.doc_idx >= 0
    run: dict[str, dict[str, float]] = {}
    qids = col.query_ids[ranking.query_idx].tolist()
    for row, q in enumerate(qids):  # pytrec_eval takes dicts
        m = keep[row]
        run[q] = dict(zip(col.doc_ids[ranking.doc_idx[row, m]].tolist(), ranking.scores[row, m].astype(float).tolist()))
    judged_ids = col.query_ids[judged].tolist()
    qrels = {q: qrels[q] for q in judged_ids}
    per_query: dict[str, dict[str, float]] = {}
    for key, fam, cut in parsed:
        if fam == "recip_rank" and cut is not None:
            # Reciprocal rank at k: trec_eval ranks by (score desc, docid desc); keep that top-k.
            sub = {q: dict(sorted(r.items(), key=lambda kv: (-kv[1], _neg(kv[0])))[:cut]) for q, r in run.items()}
            res = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(sub)
            field_name = "recip_rank"
        else:
            measure = f"{fam}.{cut}" if cut is not None else fam
            res = pytrec_eval.RelevanceEvaluator(qrels, {measure}).evaluate(run)
            field_name = f"{fam}_{cut}" if cut is not None else fam
        per_query[key] = {q: float(res.get(q, {}).get(field_name, 0.0)) for q in judged_ids}
    metrics = {k: float(np.mean(list(v.values()))) if v else 0.0 for k, v in per_query.items()}
    return Evaluation(metrics, per_query, len(judged_ids))


class _neg(str):
    """A string that sorts in reverse (for trec_eval's doc-id-descending tie order)."""

    def __lt__(self, other: str) -> bool:  # type: ignore[override]
        return str.__gt__(self, other)


def fast_metrics(col: Collection, ranking: Ranking, ndcg_k: int = 10, recall_k: int = 100, mrr_k: int = 10,
                 ignore_identical_ids: bool = True) -> dict[str, float]:
    """The three headline metrics, vectorised in numpy (for in-training evaluation). Same
    semantics as :func:`evaluate_ranking`; tests hold it equal to pytrec_eval."""
    keep = _drop_identical(col, ranking) if ignore_identical_ids else ranking.doc_idx >= 0
    nq, nd = ranking.doc_idx.shape[0], col.num_docs
    # trec_eval order: score desc, doc id desc (doc index order is id order).
    s = np.where(keep, ranking.scores, -np.inf)
    d = np.where(keep, ranking.doc_idx, -1)
    order = np.lexsort((-d, -s), axis=1)
    d = np.take_along_axis(d, order, axis=1)
    kept = np.take_along_axis(keep, order, axis=1)
    # Compact the kept documents to the front so positions are ranks.
    pack = np.argsort(~kept, axis=1, kind="stable")
    d = np.take_along_axis(d, pack, axis=1)
    kept = np.take_along_axis(kept, pack, axis=1)
    pos = col.positives()
    row_of = np.full(col.query_ids.size, -1, dtype=np.int64)
    row_of[ranking.query_idx] = np.arange(nq)
    judged = np.unique(pos.query_idx)
    rows = row_of[pos.query_idx]
    covered_pos = rows >= 0
    rows, pdocs, grades = rows[covered_pos], pos.doc_idx[covered_pos], pos.grade[covered_pos].astype(np.float64)
    # Gain of each ranked document: look (row, doc) up among the positives' sorted keys.
    keys = rows * nd + pdocs
    o = np.argsort(keys)
    sorted_keys, sorted_grades = keys[o], grades[o]
    flat = (np.arange(nq)[:, None] * nd + np.maximum(d, 0)).ravel()
    gains = np.zeros(flat.size)
    if sorted_keys.size:
        idx = np.minimum(np.searchsorted(sorted_keys, flat), sorted_keys.size - 1)
        gains = np.where(sorted_keys[idx] == flat, sorted_grades[idx], 0.0)
    gains = gains.reshape(d.shape) * kept
    n_rel = np.bincount(rows, minlength=nq).astype(np.float64)
    k = min(ndcg_k, d.shape[1])
    disc = 1.0 / np.log2(np.arange(2, ndcg_k + 2))
    dcg = (gains[:, :k] * disc[:k]).sum(axis=1)
    # Ideal DCG from all positives of each query, grades sorted descending.
    ideal = np.zeros((nq, ndcg_k))
    o = np.lexsort((-grades, rows))
    rows, grades = rows[o], grades[o]
    starts = np.searchsorted(rows, np.arange(nq))
    rank_in = np.arange(rows.size) - starts[rows]
    m = rank_in < ndcg_k
    ideal[rows[m], rank_in[m]] = grades[m]
    idcg = (ideal * disc).sum(axis=1)
    ndcg = np.divide(dcg, idcg, out=np.zeros(nq), where=idcg > 0)
    rel = gains > 0
    recall = np.divide(rel[:, :recall_k].sum(axis=1), n_rel, out=np.zeros(nq), where=n_rel > 0)
    first = np.argmax(rel[:, :mrr_k], axis=1)
    mrr = np.where(rel[:, :mrr_k].any(axis=1), 1.0 / (first + 1), 0.0)
    pick = row_of[judged[np.isin(judged, ranking.query_idx)]]
    denom = max(judged.size, 1)
    return {"ndcg@10" if ndcg_k == 10 else f"ndcg@{ndcg_k}": float(ndcg[pick].sum() / denom),
            "recall@100" if recall_k == 100 else f"recall@{recall_k}": float(recall[pick].sum() / denom),
            "mrr@10" if mrr_k == 10 else f"mrr@{mrr_k}": float(mrr[pick].sum() / denom)}


def evaluate(dataset: Any, split: str = "test", model: str | None = None, teacher: str = "dense",
             measures: tuple[str, ...] = DEFAULT_MEASURES, depth: int = 1000, cache_dir: str | None = None,
             ignore_identical_ids: bool = True, batch_size: int = 32, max_length: int | None = None,
             query_prompt: str | None = None, doc_prompt: str | None = None, reporter: Any = None,
             encoder: str = "auto") -> Evaluation:
    """Retrieve over the whole corpus for the split's judged queries and score the ranking.
    ``teacher`` is ``dense`` (with ``model``, default the packaged MiniLM), ``bm25`` or ``hybrid``.
    Corpus embeddings come from (and go to) the same cache as mining."""
    from .cache import Cache
    from .config import MineConfig
    from .data import load
    from .fingerprint import env_cache_dir
    from .mine import build_teacher
    from .progress import SILENT

    spec = teacher if teacher != "dense" or not model else f"dense:{model}"
    # The teacher spec and encoder are parsed and checked before the data is loaded.
    cfg = MineConfig(dataset=str(dataset) if isinstance(dataset, str | Path) else "<collection>", split=split,
                     teacher=spec, batch_size=batch_size, max_length=max_length, query_prompt=query_prompt,
                     doc_prompt=doc_prompt, encoder=encoder)
    col = load(dataset, split)
    name = str(dataset) if isinstance(dataset, str | Path) else str(col.source.get("path", "<collection>"))
    t = build_teacher(cfg)
    q_idx = col.judged_queries()
    t.prepare(col, q_idx, Cache(env_cache_dir(cache_dir)), reporter or SILENT)
    ids, scores = t.search(q_idx, min(depth, col.num_docs), reporter or SILENT)
    result = evaluate_ranking(col, Ranking(q_idx, ids, scores), measures, ignore_identical_ids)
    result.details = {"dataset": name, "split": split, "teacher": t.describe(), "depth": depth}
    return result
