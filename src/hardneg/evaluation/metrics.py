"""Per-query metrics of a ranking, with pytrec_eval semantics (the BEIR / MTEB standard).

Choices, stated once:
- queries evaluated: every query with at least one positive (grade > 0) in the split's qrels;
  a query the run does not cover scores 0 (pytrec_eval alone would skip it);
- ties: as trec_eval, by score descending, then doc id descending;
- ``ignore_identical_ids`` (default on, as BEIR): a document whose id equals the query id is
  removed from that query's ranking before scoring;
- ``mrr@k`` is trec_eval's ``recip_rank`` on the top-k of the run; ``ndcg@k`` is ``ndcg_cut.k``
  (linear gains = grades); ``recall@k`` is ``recall.k`` (relevant = grade >= 1).

``ndcg@k``, ``recall@k`` and ``mrr@k`` are computed on (queries x depth) arrays
(:func:`columnar_metrics`, equal to pytrec_eval's per-query values, tested); every other measure
goes to pytrec_eval itself (:func:`pytrec_eval_metrics`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..collection import Collection
from ..errors import ConfigError

DEFAULT_MEASURES = ("ndcg@10", "recall@100", "mrr@10")
"""The measures reported by default, by ``hardneg evaluate`` and by every experiment cell: the one definition."""
_ALIASES = {"ndcg": "ndcg_cut", "recall": "recall", "r": "recall", "mrr": "recip_rank", "rr": "recip_rank",
            "map": "map_cut", "p": "P", "precision": "P", "success": "success"}


@dataclass
class Ranking:
    """Top-k document indices and scores per query, as arrays (queries x k, -1 = empty slot)."""

    query_idx: np.ndarray
    doc_idx: np.ndarray
    scores: np.ndarray


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


COLUMNAR = ("ndcg_cut", "recall", "recip_rank")
"""Measure families (with a cutoff) scored by :func:`columnar_metrics`; others go to pytrec_eval."""


def pytrec_eval_metrics(col: Collection, ranking: Ranking, parsed: list[tuple[str, str, int | None]],
                        ignore_identical_ids: bool = True) -> dict[str, np.ndarray]:
    """Per-query values (one per judged query, in query order; 0 where the run has none) of parsed
    measures, computed by pytrec_eval from the dicts it takes."""
    if not parsed:
        return {}
    import pytrec_eval

    judged = np.unique(col.positives().query_idx)
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
    out: dict[str, np.ndarray] = {}
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
        out[key] = np.array([float(res.get(q, {}).get(field_name, 0.0)) for q in judged_ids], dtype=np.float64)
    return out


class _neg(str):
    """A string that sorts in reverse (for trec_eval's doc-id-descending tie order)."""

    def __lt__(self, other: str) -> bool:  # type: ignore[override]
        return str.__gt__(self, other)


def columnar_metrics(col: Collection, ranking: Ranking, parsed: list[tuple[str, str, int | None]],
                     ignore_identical_ids: bool = True) -> dict[str, np.ndarray]:
    """``ndcg_cut``, ``recall`` and ``recip_rank`` at cutoffs, as (queries x depth) numpy, with
    trec_eval's arithmetic (ties by doc id descending, gain / log2(rank + 1) summed in rank order, libm's
    log2), so the per-query values equal pytrec_eval's. Returns one value per judged query, in query
    order, 0 for a query the ranking does not cover."""
    if not parsed:
        return {}
    keep = _drop_identical(col, ranking) if ignore_identical_ids else ranking.doc_idx >= 0
    nq, nd = ranking.doc_idx.shape[0], col.num_docs
    # trec_eval order: score desc, doc id desc (doc index order is id order); dropped slots go last.
    s = np.where(keep, ranking.scores, -np.inf)
    d = np.where(keep, ranking.doc_idx, -1)
    order = np.lexsort((-d, -s, ~keep), axis=1)
    d = np.take_along_axis(d, order, axis=1)
    kept = np.take_along_axis(keep, order, axis=1)
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
    rel = gains > 0
    n_rel = np.bincount(rows, minlength=nq).astype(np.float64)
    # Each query's grades, best first, for the ideal DCG.
    o = np.lexsort((-grades, rows))
    ideal_rows, ideal_grades = rows[o], grades[o]
    ideal_rank = np.arange(ideal_rows.size) - np.searchsorted(ideal_rows, np.arange(nq))[ideal_rows]
    pick = row_of[judged]
    covered = pick >= 0
    out: dict[str, np.ndarray] = {}
    for key, fam, cut in parsed:
        k = int(cut or 0)
        if fam == "ndcg_cut":
            log2 = np.array([math.log2(i + 2) for i in range(k)])  # libm's log2, as trec_eval's C code
            kk = min(k, d.shape[1])
            dcg = _sum_in_order(gains[:, :kk] / log2[:kk])
            ideal = np.zeros((nq, k))
            m = ideal_rank < k
            ideal[ideal_rows[m], ideal_rank[m]] = ideal_grades[m]
            idcg = _sum_in_order(ideal / log2)
            value = np.divide(dcg, idcg, out=np.zeros(nq), where=idcg > 0)
        elif fam == "recall":
            value = np.divide(rel[:, :k].sum(axis=1).astype(np.float64), n_rel, out=np.zeros(nq), where=n_rel > 0)
        elif fam == "recip_rank":
            first = np.argmax(rel[:, :k], axis=1)
            value = np.where(rel[:, :k].any(axis=1), 1.0 / (first + 1.0), 0.0)
        else:
            raise ValueError(f"no columnar form for '{key}' (use pytrec_eval_metrics)")
        per = np.zeros(judged.size)
        per[covered] = value[pick[covered]]
        out[key] = per
    return out


def _sum_in_order(x: np.ndarray) -> np.ndarray:
    """Row sums accumulated left to right, as a C loop does (numpy's sum pairs terms: other roundings)."""
    return np.cumsum(x, axis=1)[:, -1] if x.shape[1] else np.zeros(x.shape[0])
