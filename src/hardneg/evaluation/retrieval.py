"""Retrieval quality: retrieve over the whole corpus with a teacher and score the ranking
(:mod:`hardneg.evaluation.metrics` holds the measures and their pytrec_eval semantics)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..collection import Collection
from ..runs.files import write_text
from .metrics import (
    COLUMNAR,
    DEFAULT_MEASURES,
    Ranking,
    columnar_metrics,
    parse_measure,
    pytrec_eval_metrics,
)

__all__ = ["DEFAULT_MEASURES", "Evaluation", "Ranking", "evaluate", "evaluate_ranking"]


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

    @classmethod
    def read(cls, metrics_path: str | Path, per_query_path: str | Path,
             measures: tuple[str, ...] = DEFAULT_MEASURES) -> Evaluation:
        """The evaluation saved by :meth:`as_json` (written as ``metrics_path``, where other keys become
        ``details``) and :meth:`save_per_query`, for these measures."""
        saved = json.loads(Path(metrics_path).read_text())
        per_query: dict[str, dict[str, float]] = {k: {} for k in measures}
        for line in Path(per_query_path).read_text().splitlines():
            r = json.loads(line)
            for k in measures:
                per_query[k][r["query_id"]] = r[k]
        details = {k: v for k, v in saved.items() if k not in measures and k != "queries"}
        return cls({k: saved[k] for k in measures}, per_query, saved["queries"], details)


def evaluate_ranking(col: Collection, ranking: Ranking, measures: tuple[str, ...] = DEFAULT_MEASURES,
                     ignore_identical_ids: bool = True) -> Evaluation:
    """Score a ranking against the collection's qrels with pytrec_eval's semantics: ``ndcg@k``,
    ``recall@k`` and ``mrr@k`` in columnar numpy (:func:`columnar_metrics`, equal to pytrec_eval's
    per-query values, tested), every other measure with pytrec_eval itself."""
    parsed = [parse_measure(m) for m in measures]
    judged_ids = col.query_ids[np.unique(col.positives().query_idx)].tolist()
    fast = [p for p in parsed if p[1] in COLUMNAR and p[2] is not None]
    values = columnar_metrics(col, ranking, fast, ignore_identical_ids)
    values |= pytrec_eval_metrics(col, ranking, [p for p in parsed if p not in fast], ignore_identical_ids)
    per_query = {key: dict(zip(judged_ids, values[key].tolist())) for key, _, _ in parsed}
    metrics = {key: float(np.mean(values[key])) if judged_ids else 0.0 for key, _, _ in parsed}
    return Evaluation(metrics, per_query, len(judged_ids))


def evaluate(dataset: Any, split: str = "test", model: str | None = None, teacher: str = "dense",
             measures: tuple[str, ...] = DEFAULT_MEASURES, depth: int = 1000, cache_dir: str | None = None,
             ignore_identical_ids: bool = True, batch_size: int = 32, max_length: int | None = None,
             query_prompt: str | None = None, doc_prompt: str | None = None, reporter: Any = None,
             encoder: str = "auto") -> Evaluation:
    """Retrieve over the whole corpus for the split's judged queries and score the ranking
    (:mod:`hardneg.evaluation.metrics` states the semantics). Corpus embeddings come from (and go to)
    the same cache as mining.

    Args:
        dataset: a BEIR folder, a :class:`~hardneg.Collection` or anything :func:`hardneg.load` reads.
        split: the qrels split whose judged queries are evaluated.
        model: the encoder of a dense teacher (default: the packaged MiniLM).
        teacher: ``dense``, ``bm25``, ``hybrid`` or a full teacher spec.
        measures: ``ndcg@k``, ``recall@k``, ``mrr@k``, ``map@k``, ``p@k``, ``success@k`` or pytrec_eval names.
        depth: documents retrieved per query.
        cache_dir: the embedding cache folder.
        ignore_identical_ids: drop a document whose id equals the query id (as BEIR).
        batch_size, max_length, query_prompt, doc_prompt, encoder: encoding options, as for mining.
        reporter: progress reporter (default: silent).

    Returns:
        An :class:`Evaluation`: mean metrics, per-query values, the number of queries.

    Example:
        ::

            import hardneg

            ev = hardneg.evaluate("data/scifact", split="test", teacher="bm25")
            print(ev.metrics["ndcg@10"], ev.queries)
    """
    from ..candidates.build import build_teacher
    from ..collection import load
    from ..config import MineConfig
    from ..progress import SILENT
    from ..runs.cache import Cache
    from ..runs.fingerprint import env_cache_dir

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
