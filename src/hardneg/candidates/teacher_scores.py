"""Teacher scores for soft labels: every candidate, positive and chosen negative of a run scored by
extra teachers (``--score-with e5+bm25:stem``) and by each of the mining teachers (a hybrid's members
are scored this way without ``--score-with``; a one-teacher run keeps its plain columns).

Distillation (listwise KL, MarginMSE) needs a teacher's score for the positive and for every mined
negative of a row. They are computed once, at mining time, from cached embeddings / indexes:

- ``candidates.parquet`` gets a ``score_<teacher>`` column per extra teacher (the mining teachers'
  columns are there already);
- ``negatives.parquet`` gets ``positive_scores_<teacher>`` and ``negative_scores_<teacher>`` list
  columns, aligned with ``positive_ids`` / ``negative_ids``, for every teacher, mining and extra.

The training side (:mod:`hardneg.training.soft_labels`) fuses them per query."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from ..collection import Collection
from ..errors import ConfigError
from ..progress import SILENT, Reporter
from ..runs.cache import Cache
from ..runs.columns import flat as _flat
from .teachers import Teacher


def teacher_name(kind: str, option: str | None) -> str:
    """The column name of an extra teacher: ``e5``, ``e5_enpt``, ``bm25``, ``bm25_stem``, ``dense``,
    ``dense_<model folder name>``."""
    if option is None:
        return kind
    tail = re.sub(r"[^0-9A-Za-z]+", "_", option.rstrip("/\\").replace("\\", "/").split("/")[-1]).strip("_")
    return f"{kind}_{tail.lower() or 'model'}"


def check_names(members: list[Teacher], extra: list[Teacher]) -> None:
    """Extra teachers must not reuse a mining teacher's name (their columns would collide)."""
    taken = {m.name for m in members}
    for t in extra:
        if t.name in taken:
            raise ConfigError(f"score_with: teacher '{t.name}' is already a mining teacher (its scores are stored)")
        taken.add(t.name)


def _score_ids(teacher: Teacher, col: Collection, query_ids: np.ndarray, doc_ids: np.ndarray) -> np.ndarray:
    if query_ids.size == 0:
        return np.zeros(0, dtype=np.float64)
    return np.asarray(teacher.pair_scores(col.query_index(query_ids), col.doc_index(doc_ids)), dtype=np.float64)


def add_teacher_scores(negatives: pa.Table, candidates: pa.Table, col: Collection, members: list[Teacher],
                       extra: list[Teacher], cache: Cache, reporter: Reporter = SILENT,
                       ) -> tuple[pa.Table, pa.Table]:
    """The run's tables with every teacher's scores added (see the module docstring).

    Args:
        negatives, candidates: the run's tables as :func:`hardneg.runs.tables.run_tables` made them.
        col: the mined collection.
        members: the mining teachers (prepared).
        extra: the extra teachers (prepared here, from the cache when they were prepared before).
        cache: the embedding / index cache.
        reporter: progress.

    Returns:
        (negatives, candidates) with the new columns.
    """
    check_names(members, extra)
    q_idx = col.judged_queries()
    for t in extra:
        t.prepare(col, q_idx, cache, reporter)
    qids = negatives.column("query_id").to_numpy(zero_copy_only=False)
    pos_ids, pos_par = _flat(negatives, "positive_ids")
    neg_ids, neg_par = _flat(negatives, "negative_ids")
    pos_off = negatives.column("positive_ids").combine_chunks().offsets
    neg_off = negatives.column("negative_ids").combine_chunks().offsets
    cand_q = candidates.column("query_id").to_numpy(zero_copy_only=False)
    cand_d = candidates.column("doc_id").to_numpy(zero_copy_only=False)
    with reporter.task("teacher scores", len(members) + len(extra)) as adv:
        for t in [*members, *extra]:
            if t in extra:
                candidates = candidates.append_column(f"score_{t.name}",
                                                      pa.array(_score_ids(t, col, cand_q, cand_d), pa.float64()))
            ps = _score_ids(t, col, qids[pos_par], pos_ids)
            ns = _score_ids(t, col, qids[neg_par], neg_ids)
            negatives = negatives.append_column(f"positive_scores_{t.name}",
                                                pa.ListArray.from_arrays(pos_off, pa.array(ps, pa.float64())))
            negatives = negatives.append_column(f"negative_scores_{t.name}",
                                                pa.ListArray.from_arrays(neg_off, pa.array(ns, pa.float64())))
            adv(1)
    return negatives, candidates
