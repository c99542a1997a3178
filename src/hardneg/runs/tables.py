"""The run's two tables from the decided parts: ``candidates.parquet`` (every candidate searched,
kept or dropped and why) and ``negatives.parquet`` (one row per query: positives, chosen negatives,
shortfall). Their schema is defined here, once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..decisions.filters import REASON_CODE, REASONS

if TYPE_CHECKING:
    from ..candidates.passes import Part, PassContext


def lists(offsets: np.ndarray, values: Any, typ: pa.DataType) -> pa.Array:
    """A list column from row offsets and the flat values."""
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, typ))


def candidate_table(ctx: PassContext, part: Part) -> pa.Table:
    """The valid candidates of one part, row by row: ids, rank, every teacher's (and judge's) score,
    kept / selected, the reason code, and for each similarity rule that ran its evidence:
    ``similarity_<rule>`` (the candidate's highest similarity to a positive of its query) and, for
    ``near_duplicate`` / ``near_positive``, ``nearest_positive_<rule>`` (that positive's id)."""
    selected = np.zeros(part.ids.shape, dtype=bool)
    cr, cc = np.nonzero(part.chosen >= 0)
    selected[cr, part.chosen[cr, cc]] = True
    v = part.valid
    vrows = np.nonzero(v)[0]
    cols: dict[str, Any] = {
        "query_id": pa.array(ctx.col.query_ids[ctx.q_idx[part.rows[vrows]]].tolist(), pa.string()),
        "doc_id": pa.array(ctx.col.doc_ids[part.ids[v]].tolist(), pa.string()),
        "rank": pa.array(part.rank[v], pa.int32()),
    }
    for name, s in part.scores.items():
        cols[f"score_{name}"] = pa.array(s[v], pa.float64())
    cols["kept"] = pa.array(v[v] & (part.reason[v] == 0))
    cols["selected"] = pa.array(selected[v])
    cols["reason"] = pa.DictionaryArray.from_arrays(pa.array(part.reason[v].astype(np.int32)),
                                                    pa.array(list(REASONS)))
    for kind, sim in part.similarity.items():  # the similarity rules' evidence (null for a positive)
        s = sim[v]
        cols[f"similarity_{kind}"] = pa.array(s, pa.float64(), mask=~np.isfinite(s))
        if kind in part.nearest:
            near = part.nearest[kind][v]
            cols[f"nearest_positive_{kind}"] = pa.array(ctx.col.doc_ids[np.maximum(near, 0)].tolist(), pa.string(),
                                                        mask=near < 0)
    return pa.table(cols)


def negatives_table(ctx: PassContext, chosen_ids: np.ndarray, chosen_scores: np.ndarray,
                    chosen_ranks: np.ndarray) -> pa.Table:
    """One row per query; (rows x n) inputs with -1 / NaN where short."""
    col, n = ctx.col, ctx.cfg.num_negatives
    ok = chosen_ids >= 0
    num = ok.sum(axis=1)
    counts_pos = np.bincount(ctx.pos_rows, minlength=ctx.q_idx.size)
    pos_off = np.concatenate([[0], np.cumsum(counts_pos)]).astype(np.int32)
    neg_off = np.concatenate([[0], np.cumsum(num)]).astype(np.int32)
    return pa.table({
        "query_id": pa.array(col.query_ids[ctx.q_idx].tolist(), pa.string()),
        "positive_ids": lists(pos_off, col.doc_ids[ctx.pos.doc_idx].tolist(), pa.string()),
        "positive_grades": lists(pos_off, ctx.pos.grade, pa.int32()),
        "positive_scores": lists(pos_off, ctx.pos_scores[ctx.filter_on], pa.float64()),
        "negative_ids": lists(neg_off, col.doc_ids[chosen_ids[ok]].tolist(), pa.string()),
        "negative_scores": lists(neg_off, chosen_scores[ok], pa.float64()),
        "negative_ranks": lists(neg_off, chosen_ranks[ok], pa.int32()),
        "shortfall": pa.array(n - num, pa.int32()),
    })


def run_tables(ctx: PassContext, parts: list[Part]) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """(negatives, candidates, chosen ids) from the passes. A deepened query's candidates come from
    its deeper pass only (the earlier part's rows are marked invalid, in place); with ``relabel``
    the negatives get the judges' new positives as ``relabelled_ids``."""
    n, nq, filter_on = ctx.cfg.num_negatives, ctx.q_idx.size, ctx.filter_on
    chosen_ids = np.full((nq, n), -1, dtype=np.int64)
    chosen_scores = np.full((nq, n), np.nan)
    chosen_ranks = np.zeros((nq, n), dtype=np.int32)
    cand_tables, row_keys = [], []
    for p in parts:
        ok = p.chosen >= 0
        c = np.maximum(p.chosen, 0)
        chosen_ids[p.rows] = np.where(ok, np.take_along_axis(p.ids, c, axis=1), -1)
        chosen_scores[p.rows] = np.where(ok, np.take_along_axis(p.scores[filter_on], c, axis=1), np.nan)
        chosen_ranks[p.rows] = np.where(ok, np.take_along_axis(p.rank, c, axis=1), 0)
    final_part = np.zeros(nq, dtype=np.int64)
    for i, p in enumerate(parts):
        final_part[p.rows] = i
    for i, p in enumerate(parts):
        keep = final_part[p.rows] == i
        p.valid &= keep[:, None]
        cand_tables.append(candidate_table(ctx, p))
        row_keys.append(np.broadcast_to(p.rows[:, None], p.ids.shape)[p.valid])
    candidates = pa.concat_tables(cand_tables)
    if len(parts) > 1:
        keys = np.concatenate(row_keys)
        order = np.lexsort((candidates.column("rank").to_numpy(), keys))
        candidates = candidates.take(pa.array(order))
    negatives = negatives_table(ctx, chosen_ids, chosen_scores, chosen_ranks)
    if ctx.cfg.relabel:
        # Candidates the judges agree are relevant: new positives, listed per query in the run.
        hits = [np.nonzero(p.valid & (p.reason == REASON_CODE["relabelled"])) for p in parts]
        rows = np.concatenate([p.rows[r] for p, (r, _) in zip(parts, hits)]).astype(np.int64)
        docs = np.concatenate([p.ids[r, c] for p, (r, c) in zip(parts, hits)]).astype(np.int64)
        o = np.argsort(rows, kind="stable")
        off = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=nq))]).astype(np.int32)
        negatives = negatives.append_column("relabelled_ids", lists(off, ctx.col.doc_ids[docs[o]].tolist(),
                                                                    pa.string()))
    return negatives, candidates, chosen_ids
