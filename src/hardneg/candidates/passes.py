"""One pass over a shard of queries: search ``depth`` non-positive candidates (cached per shard),
mark positives and their duplicates, and apply the rule filters. The local driver (``mine``) and
the Ray backend run the same :func:`rule_part` on the same :class:`PassContext`, so their outputs
are the same bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..decisions.filters import SIMILARITY_KINDS, FilterSpec, apply_filters
from ..decisions.similarity import candidate_similarities
from ..progress import Reporter
from ..runs.cache import Cache
from ..runs.files import sha256_texts
from ..runs.fingerprint import settings_key
from ..sampling import SamplerSpec
from .teachers import HybridTeacher, Teacher

if TYPE_CHECKING:
    from ..collection import Collection
    from ..config import MineConfig

QUERY_SHARD = 2048  # queries per search (a cache entry, and a Ray task with --backend ray)


@dataclass
class PassContext:
    """What every pass over a set of queries shares."""

    cfg: MineConfig
    col: Collection
    cache: Cache
    teacher: Teacher
    members: list[Teacher]
    filter_on: str
    filters: list[FilterSpec]
    sampler: SamplerSpec
    q_idx: np.ndarray          # collection query index of each row
    pos: Any                   # positives (Qrels)
    pos_rows: np.ndarray       # row of each positive
    pos_scores: dict[str, np.ndarray]
    pos_ref: np.ndarray        # lowest positive score per row (filter teacher)
    floor: int | None
    text_group: np.ndarray     # id of each document's normalised text
    query_hash: np.ndarray
    doc_hash: np.ndarray
    reporter: Reporter
    vectors: Any = None        # document embeddings for near_positive
    judge: Any = None          # CrossEncoderJudge
    judge_fingerprint: str = ""  # of the judge folder, the key of its cached probabilities
    llm: Any = None            # LLMJudge
    calibration: dict[str, Any] | None = None
    judge_cache_hits: int = 0
    synthetic: np.ndarray | None = None  # per document: written by a generator for one query (never a candidate)


@dataclass
class Part:
    """Decisions for some query rows, as (rows x candidates) arrays."""

    rows: np.ndarray
    ids: np.ndarray
    rank: np.ndarray
    scores: dict[str, np.ndarray]
    valid: np.ndarray
    reason: np.ndarray
    before: np.ndarray         # non-positives ranked above each candidate
    nonpos: np.ndarray
    pos_ref: np.ndarray
    search_cache_hit: bool
    exhaustive: int
    chosen: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.int64))  # set by the sampler
    derived: dict[str, float] = field(default_factory=dict)
    # Evidence of the similarity rules: each candidate's highest similarity to a positive of its query
    # (per rule, -inf where not computed) and, for the pairwise rules, that positive (-1 where none).
    similarity: dict[str, np.ndarray] = field(default_factory=dict)
    nearest: dict[str, np.ndarray] = field(default_factory=dict)


def query_shards(rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` in shards of :data:`QUERY_SHARD`: one search (and cache entry, and Ray task) each."""
    return [rows[s:s + QUERY_SHARD] for s in range(0, rows.size, QUERY_SHARD)]


def rule_part(ctx: PassContext, rows: np.ndarray, depth: int) -> Part:
    """Search ``depth`` non-positive candidates for these rows and apply the rule filters."""
    cfg, col, nd = ctx.cfg, ctx.col, ctx.col.num_docs
    q_idx = ctx.q_idx[rows]
    in_part = np.isin(ctx.pos_rows, rows)
    local = np.searchsorted(rows, ctx.pos_rows[in_part])  # row within this part
    pos_docs = ctx.pos.doc_idx[in_part]
    k = min(depth + int(np.bincount(local, minlength=rows.size).max()), nd)
    key = settings_key(ctx.teacher.fingerprint(), cfg.search, k,
                       sha256_texts([col.query_ids[i] for i in q_idx], [col.query_texts[i] for i in q_idx]))
    hit = ctx.cache.load_arrays("searches", key)
    if hit is None:
        ids, top = ctx.teacher.search(q_idx, k, ctx.reporter)
        ctx.cache.save_arrays("searches", key, ids=ids, scores=top)
    else:
        ids, top = hit["ids"], hit["scores"]
    valid = ids >= 0
    safe = np.where(valid, ids, 0)
    vr, vc = np.nonzero(valid)
    scores: dict[str, np.ndarray] = {}
    for m in ctx.members:
        if m is ctx.teacher:
            scores[m.name] = np.where(valid, top, np.nan)
        else:
            s = np.full(ids.shape, np.nan)
            s[vr, vc] = m.pair_scores(q_idx[vr], ids[vr, vc])
            scores[m.name] = s
    if isinstance(ctx.teacher, HybridTeacher):
        scores[ctx.teacher.name] = np.where(valid, top, np.nan)
    score = scores[ctx.filter_on]

    local2d = np.broadcast_to(np.arange(rows.size)[:, None], ids.shape)
    is_pos = valid & np.isin(local2d * nd + safe, local * nd + pos_docs)
    ng = int(ctx.text_group.max()) + 1
    is_dup = valid & ~is_pos & np.isin(local2d * ng + ctx.text_group[safe], local * ng + ctx.text_group[pos_docs])
    nonpos = valid & ~is_pos
    before: np.ndarray = np.cumsum(nonpos, axis=1) - nonpos
    valid &= before < depth  # depth non-positives, and the positives ranked among them
    rank = np.broadcast_to(np.arange(1, ids.shape[1] + 1, dtype=np.int32), ids.shape)
    pos_ref = ctx.pos_ref[rows]
    if ctx.floor:
        # Lexical scores of a weak positive say little: never let the reference sink below the
        # score of the floor-th non-positive candidate (the top ranks are where false negatives sit).
        at_floor = valid & nonpos & (before == ctx.floor - 1)
        floor_score = np.where(at_floor, score, -np.inf).max(axis=1)
        pos_ref = np.where(np.isfinite(floor_score), np.fmax(pos_ref, floor_score), pos_ref)
    kinds = {f.kind for f in ctx.filters} & set(SIMILARITY_KINDS)
    similarity, nearest = candidate_similarities(kinds, ids, valid & ~is_pos, local, pos_docs, col.doc_texts,
                                                 ctx.vectors)
    reason = apply_filters(ctx.filters, score, valid, is_pos, is_dup, pos_ref, similarity,
                           None if ctx.synthetic is None else ctx.synthetic[safe])
    exhaustive = sum(getattr(m, "exhaustive_queries", 0) for m in ctx.members) if hit is None else 0
    return Part(rows, ids, rank, scores, valid, reason, before, nonpos, pos_ref, hit is not None, exhaustive,
                similarity=similarity, nearest=nearest)


def merge_parts(parts: list[Part]) -> Part:
    """One part from shards of rows, padded to the widest (padding is never valid). The arrays are
    new, writable copies (Ray hands back read-only ones)."""
    width = max(p.ids.shape[1] for p in parts)

    def cat(get: Any, fill: Any) -> np.ndarray:
        arrays = [get(p) for p in parts]
        return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)
                               for a in arrays])

    rows = np.concatenate([p.rows for p in parts])
    ids = cat(lambda p: p.ids, -1)
    rank = np.broadcast_to(np.arange(1, width + 1, dtype=np.int32), ids.shape)
    scores = {name: cat(lambda p, n=name: p.scores[n], np.nan) for name in parts[0].scores}
    return Part(rows, ids, rank, scores, cat(lambda p: p.valid, False), cat(lambda p: p.reason, 0),
                cat(lambda p: p.before, np.iinfo(np.int64).max), cat(lambda p: p.nonpos, False),
                np.concatenate([p.pos_ref for p in parts]), all(p.search_cache_hit for p in parts),
                sum(p.exhaustive for p in parts),
                similarity={k: cat(lambda p, k=k: p.similarity[k], -np.inf) for k in parts[0].similarity},
                nearest={k: cat(lambda p, k=k: p.nearest[k], -1) for k in parts[0].nearest})
