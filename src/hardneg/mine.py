"""mine(): collection -> candidates (ids, scores) -> decisions (kept/dropped, why) -> negatives."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .candidates.teachers import BM25Teacher, DenseTeacher, HybridTeacher, Teacher
from .collection import Collection, load
from .collection.hashes import collection_hashes
from .config import MineConfig, load_config_file
from .decisions.calibration import calibrated_threshold, leave_one_out, leave_one_out_percpos
from .decisions.filters import (
    REASON_CODE,
    REASONS,
    SIMILARITY_KINDS,
    FilterSpec,
    apply_filters,
    positive_reference,
    reason_counts,
)
from .decisions.similarity import (
    knn_positive_share,
    max_to_positives,
    pair_cosine,
    pair_jaccard,
    shingle_matrix,
)
from .errors import ConfigError, RunError, kept_warnings
from .progress import SILENT, Reporter
from .runs.cache import Cache
from .runs.files import sha256_texts
from .runs.fingerprint import env_cache_dir, folder_fingerprint, settings_key
from .runs.run import Run, existing_run
from .sampling import SamplerSpec, sample

LEXICAL_FLOOR = 10
QUERY_SHARD = 2048  # queries per search (a cache entry, and a Ray task with --backend ray)
_PACKAGES = ("hardneg", "numpy", "pyarrow", "torch", "sentence-transformers", "transformers", "bm25s",
             "faiss-cpu", "scipy")


def build_teacher(cfg: MineConfig) -> Teacher:
    """Teacher objects from the parsed ``cfg.teacher`` (``bm25``, ``dense[:MODEL]``, ``hybrid[...]``),
    each dense one with the encoder ``cfg.encoder`` resolved to for its model."""
    members: list[Teacher] = []
    for name, (kind, option) in zip(cfg.teacher.names(), cfg.teacher.members):
        if kind == "bm25":
            members.append(BM25Teacher(stemmer="english" if option == "stem" else None, name=name))
        else:
            members.append(DenseTeacher(option, cfg.query_prompt, cfg.doc_prompt, cfg.max_length,
                                        batch_size=cfg.batch_size, search=cfg.search, device=cfg.device,
                                        name=name, seed=cfg.seed, encoder=cfg.encoder_for(option),
                                        embedding_dtype=cfg.embedding_dtype))
    if cfg.teacher.kind == "hybrid":
        return HybridTeacher(members, fusion=cfg.fusion)
    return members[0]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def _config_fingerprint(cfg: MineConfig, col: Collection) -> str:
    judge = Path(cfg.judge.path) / "hardneg_judge.json" if cfg.judge else None
    return settings_key(cfg.output_settings(), judge.read_text() if judge and judge.exists() else None,
                        col.source.get("checksums"), col.corpus_fingerprint(),
                        col.queries_fingerprint(), col.qrels_fingerprint(), metadata.version("hardneg"))


def mine(dataset: str | Path | Collection | Any = None, *, config: MineConfig | str | Path | None = None,
         reporter: Reporter | None = None, overwrite: bool = False, **options: Any) -> Run:
    """Mine hard negatives. Options are :class:`MineConfig` fields (``teacher``, ``filter``,
    ``sampler``, ``num_negatives``, ``depth``, ``seed``, ``out``, ``cache_dir``, ...).

    ``dataset`` may be a path or id, a ``datasets`` object or a loaded :class:`Collection`.
    With ``out`` the run is written atomically; a finished run with the same settings there is
    returned as it is (a rerun costs nothing), and embeddings and searches come from the cache."""
    reporter = reporter or SILENT
    base: dict[str, Any] = {}
    if isinstance(config, (str, Path)):
        base = load_config_file(config)
    elif isinstance(config, MineConfig):
        base = {k: getattr(config, k) for k in config.model_fields_set}  # parsed specs stay parsed
    collection = dataset if isinstance(dataset, Collection) else None
    if collection is not None:
        base["dataset"] = str(collection.source.get("path", "<collection>"))
        if collection.source.get("split"):
            base["split"] = collection.source["split"]
    elif dataset is not None:
        base["dataset"] = dataset if isinstance(dataset, str | Path) else repr(dataset)
    base.update({k: v for k, v in options.items() if v is not None})
    if "dataset" not in base:
        raise ConfigError("no dataset given")
    base["dataset"] = str(base["dataset"])
    cfg = MineConfig(**base)  # every spec parsed and checked here, before any data is read
    cfg.check_files()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if collection is None:
        collection = load(dataset if dataset is not None and not isinstance(dataset, str | Path) else cfg.dataset,
                          cfg.split, cfg.corpus, cfg.query_column, cfg.positive_column, strict=cfg.strict)
    timings["load"] = time.perf_counter() - t0
    fingerprint = _config_fingerprint(cfg, collection)
    out = Path(cfg.out) if cfg.out else None
    if out is not None and not overwrite:
        done = existing_run(out, fingerprint)
        if done is not None:
            done._collection = collection
            return done
        if (out / "manifest.json").exists():
            raise RunError(f"{out}: a run with other settings or data is already there (use --overwrite)")
    with kept_warnings() as raised:
        run = _mine(cfg, collection, fingerprint, reporter, timings)
    # what the loader and the mining warned about, once each (the loader's are kept on the collection)
    run.manifest["warnings"] = list(dict.fromkeys([*collection.warnings, *raised]))
    if out is not None:
        run.save(out, overwrite=overwrite)
    return run


@dataclass
class _Context:
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


@dataclass
class _Part:
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


def _decide(ctx: _Context, rows: np.ndarray, depth: int, sampler: SamplerSpec) -> _Part:
    """Search ``depth`` non-positive candidates for these rows, filter, judge and sample them.
    With ``--backend ray`` the search and rule filters run as Ray tasks over query shards."""
    if ctx.cfg.backend.kind == "ray":
        from .ray_backend import rule_parts

        part = _merge_parts(rule_parts(ctx, rows, depth))
    elif rows.size > QUERY_SHARD:
        # Query shards: each search is cached as it finishes, so a killed run resumes at the next one.
        part = _merge_parts([_rule_part(ctx, rows[s:s + QUERY_SHARD], depth) for s in range(0, rows.size, QUERY_SHARD)])
    else:
        part = _rule_part(ctx, rows, depth)
    _judge_part(ctx, part)
    part.chosen, part.derived = sample(sampler, ctx.cfg.num_negatives, part.valid & (part.reason == 0), part.rank,
                                       part.scores[ctx.filter_on], part.pos_ref, ctx.query_hash[part.rows],
                                       ctx.doc_hash[np.where(part.valid, part.ids, 0)], ctx.cfg.seed)
    return part


def _rule_part(ctx: _Context, rows: np.ndarray, depth: int) -> _Part:
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
    reason = apply_filters(ctx.filters, score, valid, is_pos, is_dup, pos_ref,
                           _similarities(ctx, ids, valid & ~is_pos, local, pos_docs))
    exhaustive = sum(getattr(m, "exhaustive_queries", 0) for m in ctx.members) if hit is None else 0
    return _Part(rows, ids, rank, scores, valid, reason, before, nonpos, pos_ref, hit is not None, exhaustive)


def _merge_parts(parts: list[_Part]) -> _Part:
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
    return _Part(rows, ids, rank, scores, cat(lambda p: p.valid, False), cat(lambda p: p.reason, 0),
                 cat(lambda p: p.before, np.iinfo(np.int64).max), cat(lambda p: p.nonpos, False),
                 np.concatenate([p.pos_ref for p in parts]), all(p.search_cache_hit for p in parts),
                 sum(p.exhaustive for p in parts))


def _judge_part(ctx: _Context, part: _Part) -> None:
    """Model judges (cross-encoder, then LLM) on what the rules kept near the top, in place."""
    cfg, col = ctx.cfg, ctx.col
    q_idx, ids, reason = ctx.q_idx[part.rows], part.ids, part.reason
    near_top = part.valid & part.nonpos & (part.before < cfg.judge_depth)
    if ctx.judge is not None:
        # The judge rescores only what the rules kept near the top, where false negatives sit.
        zone = near_top & (reason == 0)
        zr, zc = np.nonzero(zone)
        prob = np.full(ids.shape, np.nan)
        prob[zr, zc] = _judge_probabilities(ctx, [col.query_texts[i] for i in q_idx[zr]],
                                            [col.doc_texts[i] for i in ids[zr, zc]])
        reason[zone & (prob >= cfg.judge_threshold)] = REASON_CODE["cross_encoder"]
        part.scores["judge"] = prob
    if ctx.llm is not None:
        _llm_stage(ctx, q_idx, ids, near_top, reason, part.scores)


def _judge_probabilities(ctx: _Context, queries: list[str], docs: list[str]) -> np.ndarray:
    """The cross-encoder's probabilities for these pairs, cached by the judge folder's fingerprint
    and the pairs' texts: a rerun with another threshold or sampler never scores them again."""
    key = settings_key("cross-encoder", ctx.judge_fingerprint, sha256_texts(queries, docs))
    hit = ctx.cache.load_arrays("judged", key)
    if hit is not None:
        ctx.judge_cache_hits += len(queries)
        return hit["prob"]
    prob = ctx.judge.probabilities(queries, docs, ctx.reporter.enabled)
    ctx.cache.save_arrays("judged", key, prob=prob)
    return prob


def _llm_stage(ctx: _Context, q_idx: np.ndarray, ids: np.ndarray, top: np.ndarray, reason: np.ndarray,
               scores: dict[str, np.ndarray]) -> None:
    """The LLM judges what is still ambiguous: everything kept near the top, or with a cross-encoder
    only its band [llm_band, judge_threshold) (plus what it dropped, when relabelling). A failed
    answer drops the candidate as ``llm_error``: an unread reply never passes as a negative. Past
    ``llm_max_error_rate`` of the judged pairs the judge raises and the run stops before writing."""
    cfg, col = ctx.cfg, ctx.col
    ce = scores.get("judge")
    if ce is None:
        zone = top & (reason == 0)
    else:
        zone = top & (reason == 0) & (ce >= cfg.llm_band)
        if cfg.relabel:
            zone |= top & (reason == REASON_CODE["cross_encoder"])
    zr, zc = np.nonzero(zone)
    p = np.full(ids.shape, np.nan)
    p[zr, zc] = ctx.llm.probabilities([col.query_texts[i] for i in q_idx[zr]],
                                      [col.doc_texts[i] for i in ids[zr, zc]], ctx.reporter.enabled)
    undecided = zone & (reason == 0)
    reason[undecided & np.isnan(p)] = REASON_CODE["llm_error"]
    reason[undecided & (p >= cfg.llm_threshold)] = REASON_CODE["llm"]
    if cfg.relabel:
        agree = zone & (p >= cfg.llm_threshold) & (ce >= cfg.judge_threshold if ce is not None else p >= 0.9)
        reason[agree] = REASON_CODE["relabelled"]
    scores["llm"] = p


def _similarities(ctx: _Context, ids: np.ndarray, valid: np.ndarray, pos_local: np.ndarray,
                  pos_docs: np.ndarray) -> dict[str, np.ndarray]:
    """Each candidate's highest similarity to a known positive of its query, for the rules that need it."""
    kinds = {f.kind for f in ctx.filters} & set(SIMILARITY_KINDS)
    out = {}
    if "near_duplicate" in kinds:
        needed = np.unique(np.concatenate([ids[valid], pos_docs]))
        local_row = np.full(ctx.col.num_docs, -1, dtype=np.int64)
        local_row[needed] = np.arange(needed.size)
        shingles = shingle_matrix([ctx.col.doc_texts[i] for i in needed])
        out["near_duplicate"] = max_to_positives(
            ids, valid, pos_local, pos_docs, lambda a, b: pair_jaccard(shingles, local_row[a], local_row[b]))
    if "knn_positive" in kinds:
        out["knn_positive"] = knn_positive_share(ids, valid, pos_local, pos_docs, ctx.vectors)
    if "near_positive" in kinds:
        out["near_positive"] = max_to_positives(ids, valid, pos_local, pos_docs,
                                                lambda a, b: pair_cosine(ctx.vectors, a, b))
    return out


def _calibrate(ctx: _Context) -> None:
    """Document vectors for near_positive (the dense teacher's, else ``near_model``'s) and the value
    of every ``auto`` rule from the known positives (leave-one-out), recorded with its reason."""
    q = ctx.cfg.calibration_quantile
    if any(f.kind in ("near_positive", "knn_positive") for f in ctx.filters):
        dense = next((m for m in ctx.members if isinstance(m, DenseTeacher)), None)
        if dense is None:
            dense = DenseTeacher(ctx.cfg.near_model, batch_size=ctx.cfg.batch_size, device=ctx.cfg.device,
                                 encoder=ctx.cfg.encoder_for(ctx.cfg.near_model))
            dense.resolve(ctx.cache)
            ctx.vectors = dense.embed(ctx.col.doc_texts, dense.doc_prompt or "", ctx.cache, "documents", ctx.reporter)
        else:
            ctx.vectors = dense.doc_vectors()
        near_model = dense.describe().get("model")
    resolved, calibration = [], {}
    for f in ctx.filters:
        if f.auto and f.kind == "near_positive":
            loo = leave_one_out(ctx.pos_rows, ctx.pos.doc_idx, lambda a, b: pair_cosine(ctx.vectors, a, b))
            value, why = calibrated_threshold(loo, q, f.kind)
            calibration[f.kind] = {"value": round(value, 6), "why": why, "model": near_model}
            f = replace(f, value=round(value, 6))
        elif f.auto and f.kind == "percpos":
            loo = leave_one_out_percpos(ctx.pos_rows, ctx.pos_scores[ctx.filter_on])
            value, why = calibrated_threshold(loo, q, f.kind)
            calibration[f.kind] = {"value": round(value, 6), "why": why, "scores": ctx.filter_on}
            f = replace(f, value=round(value, 6))
        resolved.append(f)
    ctx.filters, ctx.calibration = resolved, calibration or None


def _candidate_table(ctx: _Context, part: _Part) -> pa.Table:
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
    return pa.table(cols)


def _lists(offsets: np.ndarray, values: Any, typ: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, typ))


def _negatives_table(ctx: _Context, chosen_ids: np.ndarray, chosen_scores: np.ndarray,
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
        "positive_ids": _lists(pos_off, col.doc_ids[ctx.pos.doc_idx].tolist(), pa.string()),
        "positive_grades": _lists(pos_off, ctx.pos.grade, pa.int32()),
        "positive_scores": _lists(pos_off, ctx.pos_scores[ctx.filter_on], pa.float64()),
        "negative_ids": _lists(neg_off, col.doc_ids[chosen_ids[ok]].tolist(), pa.string()),
        "negative_scores": _lists(neg_off, chosen_scores[ok], pa.float64()),
        "negative_ranks": _lists(neg_off, chosen_ranks[ok], pa.int32()),
        "shortfall": pa.array(n - num, pa.int32()),
    })


def _shareable_config(cfg: MineConfig) -> dict[str, Any]:
    """The settings as the manifest records them: an LLM endpoint without its ``user:password@``."""
    out = cfg.model_dump()
    if cfg.llm_judge and cfg.llm_judge.startswith("llm:"):
        from .decisions.llm import split_credentials

        out["llm_judge"] = "llm:" + split_credentials(cfg.llm_judge[len("llm:"):])[0]
    return out


def _build_judges(cfg: MineConfig, cache: Cache) -> tuple[Any, str, Any]:
    """The model judges, each checked once before any work: a broken judge folder, a dead or unreadable
    LLM endpoint or an unloadable GGUF file is an error now, not minutes into the run."""
    judge, judge_fingerprint, llm = None, "", None
    if cfg.judge:
        from .decisions.cross_encoder import CrossEncoderJudge

        judge = CrossEncoderJudge(cfg.judge.path, batch_size=cfg.batch_size, device=cfg.device)
        judge.check()
        judge_fingerprint = folder_fingerprint(judge.path, cache.root)  # once, not per query shard
    if cfg.llm_judge:
        from .decisions.llm import LLMConfig, LLMJudge, parse_llm_target

        llm = LLMJudge(LLMConfig(parse_llm_target(cfg.llm_judge), model=cfg.llm_model,
                                 concurrency=cfg.llm_concurrency, retries=cfg.llm_retries, timeout=cfg.llm_timeout,
                                 max_error_rate=cfg.llm_max_error_rate), cache.root)
        llm.check()
    return judge, judge_fingerprint, llm


def _mine(cfg: MineConfig, col: Collection, fingerprint: str, reporter: Reporter,
          timings: dict[str, float]) -> Run:
    cache = Cache(env_cache_dir(cfg.cache_dir))
    judge, judge_fingerprint, llm = _build_judges(cfg, cache)  # checked before any search or encoding
    teacher = build_teacher(cfg)
    members = teacher.teachers if isinstance(teacher, HybridTeacher) else [teacher]
    if cfg.backend.kind == "ray":
        from .ray_backend import attach_encoders

        attach_encoders(cfg.backend, members)
    names = [m.name for m in members]
    filter_on = cfg.filter_on or next((m.name for m in members if isinstance(m, DenseTeacher)), names[0])
    if filter_on not in names:
        raise ConfigError(f"filter_on '{filter_on}' is not one of the teachers ({', '.join(names)})")
    q_idx = col.judged_queries()
    if q_idx.size == 0:
        raise ConfigError(f"{cfg.dataset} (split '{cfg.split}'): no query has a positive to mine against")

    t = time.perf_counter()
    teacher.prepare(col, q_idx, cache, reporter)
    timings["prepare"] = time.perf_counter() - t
    t = time.perf_counter()
    pos = col.positives()
    row_of = np.full(col.query_ids.size, -1, dtype=np.int64)
    row_of[q_idx] = np.arange(q_idx.size)
    pos_rows = row_of[pos.query_idx]
    pos_scores = {m.name: m.pair_scores(pos.query_idx, pos.doc_idx) for m in members}
    floor = cfg.reference_floor
    if floor is None and isinstance(members[names.index(filter_on)], BM25Teacher):
        floor = LEXICAL_FLOOR
    hashes = collection_hashes(col, cache)  # computed once per corpus, then read from the cache
    ctx = _Context(cfg, col, cache, teacher, members, filter_on, list(cfg.filter), cfg.sampler, q_idx,
                   pos, pos_rows, pos_scores,
                   positive_reference(pos_rows, pos_scores[filter_on], q_idx.size), floor or None,
                   hashes.text_group, hashes.query_hash[q_idx], hashes.doc_hash, reporter)
    _calibrate(ctx)
    ctx.judge, ctx.judge_fingerprint, ctx.llm = judge, judge_fingerprint, llm
    parts = [_decide(ctx, np.arange(q_idx.size), cfg.depth, ctx.sampler)]
    short = np.nonzero((parts[0].chosen >= 0).sum(axis=1) < cfg.num_negatives)[0]
    deepened = 0
    if cfg.max_depth > cfg.depth and short.size:
        # Queries whose filters left too few: search again, deeper, for those queries only.
        sampler = ctx.sampler
        if sampler.kind == "simans" and "a" not in sampler.params:
            sampler = replace(sampler, params={**sampler.params, "a": parts[0].derived["simans_a"]})
        parts.append(_decide(ctx, short, cfg.max_depth, sampler))
        deepened = int(short.size)
    timings["search_filter_sample"] = time.perf_counter() - t

    t = time.perf_counter()
    n = cfg.num_negatives
    chosen_ids = np.full((q_idx.size, n), -1, dtype=np.int64)
    chosen_scores = np.full((q_idx.size, n), np.nan)
    chosen_ranks = np.zeros((q_idx.size, n), dtype=np.int32)
    cand_tables, row_keys = [], []
    for p in parts:
        ok = p.chosen >= 0
        c = np.maximum(p.chosen, 0)
        chosen_ids[p.rows] = np.where(ok, np.take_along_axis(p.ids, c, axis=1), -1)
        chosen_scores[p.rows] = np.where(ok, np.take_along_axis(p.scores[filter_on], c, axis=1), np.nan)
        chosen_ranks[p.rows] = np.where(ok, np.take_along_axis(p.rank, c, axis=1), 0)
    # Candidates: a deepened query's rows come from its deeper pass only.
    final_part = np.zeros(q_idx.size, dtype=np.int64)
    for i, p in enumerate(parts):
        final_part[p.rows] = i
    for i, p in enumerate(parts):
        keep = final_part[p.rows] == i
        p.valid &= keep[:, None]
        cand_tables.append(_candidate_table(ctx, p))
        row_keys.append(np.broadcast_to(p.rows[:, None], p.ids.shape)[p.valid])
    candidates = pa.concat_tables(cand_tables)
    if len(parts) > 1:
        keys = np.concatenate(row_keys)
        order = np.lexsort((candidates.column("rank").to_numpy(), keys))
        candidates = candidates.take(pa.array(order))
    negatives = _negatives_table(ctx, chosen_ids, chosen_scores, chosen_ranks)
    if cfg.relabel:
        # Candidates the judges agree are relevant: new positives, listed per query in the run.
        hits = [np.nonzero(p.valid & (p.reason == REASON_CODE["relabelled"])) for p in parts]
        rows = np.concatenate([p.rows[r] for p, (r, _) in zip(parts, hits)]).astype(np.int64)
        docs = np.concatenate([p.ids[r, c] for p, (r, c) in zip(parts, hits)]).astype(np.int64)
        o = np.argsort(rows, kind="stable")
        off = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=q_idx.size))]).astype(np.int32)
        negatives = negatives.append_column("relabelled_ids", _lists(off, col.doc_ids[docs[o]].tolist(), pa.string()))
    timings["tables"] = time.perf_counter() - t

    num = (chosen_ids >= 0).sum(axis=1)
    reasons = np.concatenate([p.reason[p.valid] for p in parts])
    counts = {
        "queries": int(q_idx.size),
        "queries_in_collection": int(col.query_ids.size),
        "docs": int(col.num_docs),
        "positives": int(pos_rows.size),
        "candidates": int(candidates.num_rows),
        "reasons": reason_counts(reasons, np.ones(reasons.shape, dtype=bool)),
        "selected": int(num.sum()),
        "queries_full": int((num == n).sum()),
        "queries_short": int((num < n).sum()),
        "queries_empty": int((num == 0).sum()),
        "queries_deepened": deepened,
        "shortfall_total": int((n - num).sum()),
        "coverage": float(num.sum() / (q_idx.size * n)),
        "full_rate": float((num == n).mean()),
        "encoded_texts": cache.encoded_texts,
        "search_cache_hit": all(p.search_cache_hit for p in parts),
        "exhaustive_rescans": int(sum(p.exhaustive for p in parts)),
        "judge_cache_hits": ctx.judge_cache_hits,
    }
    manifest = {
        "hardneg_version": metadata.version("hardneg"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": _shareable_config(cfg),
        "config_fingerprint": fingerprint,
        "data": {k: v for k, v in col.source.items() if not k.startswith("_")}
        | {"corpus_fingerprint": col.corpus_fingerprint(), "notes": col.notes[:20]},
        "teacher": teacher.describe(),
        "encoder": {"asked": cfg.encoder, "resolved": cfg.encoders()},
        "filter_on": filter_on,
        "filters": [str(f) for f in ctx.filters],
        "calibration": ctx.calibration,
        "judge": ctx.judge.describe() if ctx.judge is not None else None,
        "llm_judge": ctx.llm.describe() if ctx.llm is not None else None,
        "filter_reference": "lowest positive score of the query (filter_on teacher)"
        + (f", raised to the score of non-positive rank {ctx.floor} where lower" if ctx.floor else ""),
        "sampler": str(ctx.sampler),
        "derived": parts[0].derived,
        "seed": cfg.seed,
        "counts": counts,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": _versions(),
    }
    return Run(negatives, candidates, manifest, collection=col)
