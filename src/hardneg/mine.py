"""mine(): collection -> candidates (ids, scores) -> decisions (kept/dropped, why) -> negatives.

The driver only: it parses the settings, builds the teacher and the judges, runs the passes
(:mod:`hardneg.candidates.passes`, sharded locally or on Ray), deepens the queries left short,
calibrates ``auto`` rules, and publishes the run's tables (:mod:`hardneg.runs.tables`) and manifest
(:mod:`hardneg.runs.manifest`)."""

from __future__ import annotations

import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .candidates.build import build_scorers, build_teacher, members_of, near_vectors
from .candidates.passes import Part, PassContext, merge_parts, query_shards, rule_part
from .candidates.teacher_scores import add_teacher_scores, check_names
from .candidates.teachers import BM25Teacher, DenseTeacher
from .collection import Collection, load
from .collection.hashes import collection_hashes
from .collection.synthetic import synthetic_mask
from .config import MineConfig, load_config_file
from .decisions.calibration import calibrate_filters
from .decisions.filters import positive_reference
from .decisions.judging import build_judges, judge_part
from .errors import ConfigError, RunError, kept_warnings
from .progress import SILENT, Reporter
from .runs.cache import Cache
from .runs.fingerprint import env_cache_dir, settings_key
from .runs.manifest import run_counts, run_manifest
from .runs.run import Run, existing_run
from .runs.tables import run_tables
from .sampling import SamplerSpec, sample

LEXICAL_FLOOR = 10


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
    returned as it is (a rerun costs nothing), and embeddings and searches come from the cache.

    Args:
        dataset: a BEIR folder, a Hugging Face id, a ``datasets`` object or a :class:`Collection`.
        config: a :class:`MineConfig` or a YAML/JSON file of its fields; ``options`` override it.
        reporter: progress display (silent by default).
        overwrite: replace a run with other settings at ``out``.

    Returns:
        The :class:`Run`: ``negatives`` (one row per query), ``candidates`` (every candidate, kept or
        dropped and why) and ``manifest``.

    Example::

        import hardneg

        run = hardneg.mine("scifact", split="train", teacher="bm25", filter="percpos:0.95",
                           num_negatives=4, out="runs/scifact-bm25")
    """
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


def _decide(ctx: PassContext, rows: np.ndarray, depth: int, sampler: SamplerSpec) -> Part:
    """Search ``depth`` non-positive candidates for these rows, filter, judge and sample them.
    With ``--backend ray`` the search and rule filters run as Ray tasks over query shards."""
    if ctx.cfg.backend.kind == "ray":
        from .ray_backend import rule_parts

        part = merge_parts(rule_parts(ctx, rows, depth))
    else:
        # Query shards: each search is cached as it finishes, so a killed run resumes at the next one.
        shards = query_shards(rows)
        if len(shards) > 1:
            part = merge_parts([rule_part(ctx, s, depth) for s in shards])
        else:
            part = rule_part(ctx, rows, depth)
    judge_part(ctx, part)
    part.chosen, part.derived = sample(sampler, ctx.cfg.num_negatives, part.valid & (part.reason == 0), part.rank,
                                       part.scores[ctx.filter_on], part.pos_ref, ctx.query_hash[part.rows],
                                       ctx.doc_hash[np.where(part.valid, part.ids, 0)], ctx.cfg.seed)
    return part


def _calibrate(ctx: PassContext) -> None:
    """Document vectors for the embedding rules and the value of every ``auto`` rule from the known
    positives (leave-one-out), recorded with its reason."""
    near_model = None
    if any(f.kind in ("near_positive", "knn_positive") for f in ctx.filters):
        ctx.vectors, near_model = near_vectors(ctx.cfg, ctx.members, ctx.col, ctx.cache, ctx.reporter)
    ctx.filters, ctx.calibration = calibrate_filters(
        ctx.filters, ctx.cfg.calibration_quantile, ctx.pos_rows, ctx.pos.doc_idx, ctx.pos_scores[ctx.filter_on],
        ctx.filter_on, ctx.vectors, near_model)


def _mine(cfg: MineConfig, col: Collection, fingerprint: str, reporter: Reporter,
          timings: dict[str, float]) -> Run:
    cache = Cache(env_cache_dir(cfg.cache_dir))
    judge, judge_fingerprint, llm = build_judges(cfg, cache)  # checked before any search or encoding
    teacher = build_teacher(cfg)
    members = members_of(teacher)
    scorers = build_scorers(cfg)
    check_names(members, scorers)
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
    ctx = PassContext(cfg, col, cache, teacher, members, filter_on, list(cfg.filter), cfg.sampler, q_idx,
                      pos, pos_rows, pos_scores,
                      positive_reference(pos_rows, pos_scores[filter_on], q_idx.size), floor or None,
                      hashes.text_group, hashes.query_hash[q_idx], hashes.doc_hash, reporter)
    synthetic = synthetic_mask(col.doc_ids)
    ctx.synthetic = synthetic if synthetic.any() else None
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
    negatives, candidates, chosen_ids = run_tables(ctx, parts)
    timings["tables"] = time.perf_counter() - t
    counts = run_counts(ctx, parts, candidates, chosen_ids, deepened)
    if scorers or len(members) > 1:  # every teacher's scores of each positive and negative, for soft labels
        t = time.perf_counter()
        negatives, candidates = add_teacher_scores(negatives, candidates, col, members, scorers, cache, reporter)
        timings["teacher_scores"] = time.perf_counter() - t
    manifest = run_manifest(ctx, parts, counts, fingerprint, timings)
    if scorers:
        manifest["score_with"] = [s.describe() for s in scorers]
    return Run(negatives, candidates, manifest, collection=col)
