"""LLM-written hard negatives: for each judged query of a collection (optionally shown its positive) an
LLM writes a passage that looks relevant but does not answer it ("Don't Retrieve, Generate:
Prompting LLMs for Synthetic Training Data in Dense Retrieval", arXiv:2504.21015, 2025). Its latest
version finds such negatives below BM25 / cross-encoder mining on BEIR: measure before you rely on them
(``hardneg train --negatives mined|generated|both|generated-else-mined`` makes the comparison at equal steps).

Each passage is a synthetic document with its own id, ``gen-neg:<query id>:<k>`` (``k`` = 0 ..
``per_query - 1``, the slot it was asked for: the same id whatever else is kept), flagged
``synthetic`` and attached to its query only: it never enters the corpus, so no other query sees it
as a candidate. Bad output (empty, a copy of the query or a positive, cut off, not a passage) is asked
again with a new seed and then dropped (:mod:`hardneg.generation.batch`); the same passage twice for a
query is dropped as ``duplicate``; then ``filter``, one of mining's score rules (``percpos:0.95``) judged by a
dense teacher against the query's own positives (:mod:`hardneg.generation.negative_filter`), drops a
passage the teacher finds as relevant as a positive, with the rule's name; then the configured judges
read every passage left, so an accidental positive is caught: a cross-encoder's calibrated P(relevant) at or above
``judge_threshold`` drops it as ``cross_encoder``, an LLM judge's P(yes) at or above ``llm_threshold``
as ``llm`` (an unread answer as ``llm_error``: an unjudged passage is never kept).

The folder holds ``documents.jsonl`` (the kept passages: ``_id``, ``title``, ``text``, ``synthetic``,
``query_id``), ``generation.parquet`` (one row per passage asked: its id and query, the text, kept or
the reason it was dropped, attempts, seed, the generator and its fingerprint, prompt id, sampling
settings, the judges' probabilities, tokens) and ``manifest.json`` (settings, the collection's
fingerprint, the token estimate, counts). Every completion is cached under the generator's identity
and the judges' answers under theirs, so a killed run asked again asks only for what it had not
finished; the folder is written in one rename, never half.

Example::

    from hardneg.generation.negatives import generate_negatives

    res = generate_negatives(dataset="data/scifact", llm="http://localhost:8000/v1", per_query=2,
                             with_positive=True, judge="cross-encoder:judges/ce", out="data/scifact-negs")
    # then: hardneg train --run runs/scifact --negatives both --generated data/scifact-negs ...
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..collection import Collection, load
from ..errors import ConfigError, HardnegWarning
from ..progress import SILENT, Reporter
from ..runs.cache import Cache
from ..runs.files import sha256_texts, staged_dir, write_json, write_text
from ..runs.fingerprint import folder_fingerprint, settings_key
from ..runs.manifest import versions
from .batch import generate
from .cache import CompletionCache
from .completion import Completion, Sampling
from .merge import same_doc_duplicates
from .negative_config import NegativeGenConfig
from .negative_filter import filter_teacher, parse_score_rule, score_rule
from .negative_prompt import NegativePrompt, bad_passage, clean_passage
from .output import GeneratedFolder, finished, open_generator

KIND = "generated-negatives"
ID_PREFIX = "gen-neg"


def negative_id(query_id: str, k: int) -> str:
    """The id of the ``k``-th negative asked for a query: ``gen-neg:<query id>:<k>``."""
    return f"{ID_PREFIX}:{query_id}:{k}"


class GeneratedNegatives(GeneratedFolder):
    """A folder written by :func:`generate_negatives`: its path, manifest and provenance table."""

    @classmethod
    def load(cls, path: str | Path) -> GeneratedNegatives:
        """Read a folder written by ``hardneg generate negatives``."""
        p = Path(path)
        meta = p / "manifest.json"
        if not meta.is_file() or not (p / "generation.parquet").is_file():
            raise ConfigError(f"generated: {p} is not a generated-negatives folder (no manifest.json and "
                              "generation.parquet; write one with `hardneg generate negatives`)")
        manifest = json.loads(meta.read_text(encoding="utf-8"))
        if manifest.get("kind") != KIND:
            raise ConfigError(f"generated: {p} holds {manifest.get('kind')!r}, not generated negatives")
        return cls(p, manifest, pq.read_table(p / "generation.parquet"))

    def kept(self) -> pa.Table:
        """The kept passages, one row each (query id order, then slot)."""
        return self.provenance.filter(self.provenance.column("kept"))


def _first_positives(col: Collection, q_idx: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """Per query: the document shown with ``with_positive`` (its first positive of the highest grade)
    and all its positives (the texts a passage must not copy)."""
    pos = col.positives()
    order = np.lexsort((pos.doc_idx, -pos.grade.astype(np.int64), pos.query_idx))
    qs, ds = pos.query_idx[order], pos.doc_idx[order]
    start = np.searchsorted(qs, q_idx, side="left")
    end = np.searchsorted(qs, q_idx, side="right")
    return ds[start], [ds[a:b].tolist() for a, b in zip(start.tolist(), end.tolist())]


def _build_judges(cfg: NegativeGenConfig, cache_root: Path) -> tuple[Any, str, Any]:
    """The judges, each checked once before any generation (a broken folder or a dead endpoint stops
    here): the cross-encoder (or None) with its folder's fingerprint, and the LLM judge (or None)."""
    ce, ce_fp, llm = None, "", None
    if cfg.judge is not None:
        from ..decisions.cross_encoder import CrossEncoderJudge

        ce = CrossEncoderJudge(cfg.judge.path)
        ce.check()
        ce_fp = folder_fingerprint(ce.path, cache_root)
    if cfg.llm_judge is not None:
        from ..decisions.llm import LLMConfig, LLMJudge, parse_llm_target

        llm = LLMJudge(LLMConfig(parse_llm_target(str(cfg.llm_judge)), model=cfg.llm_model,
                                 concurrency=cfg.concurrency, retries=cfg.llm_retries, timeout=cfg.llm_timeout,
                                 max_error_rate=cfg.llm_max_error_rate), cache_root)
        llm.check()
    return ce, ce_fp, llm


def _ce_probabilities(ce: Any, fingerprint: str, cache: Cache, queries: list[str], docs: list[str],
                      progress: bool) -> np.ndarray:
    """The cross-encoder's probabilities, cached by its folder's fingerprint and the pairs' texts."""
    key = settings_key("cross-encoder", fingerprint, sha256_texts(queries, docs))
    hit = cache.load_arrays("judged", key)
    if hit is not None:
        return hit["prob"]
    prob = ce.probabilities(queries, docs, progress)
    cache.save_arrays("judged", key, prob=prob)
    return np.asarray(prob, dtype=np.float64)


def generate_negatives(config: NegativeGenConfig | None = None, *, reporter: Reporter = SILENT,
                       overwrite: bool = False, **options: Any) -> GeneratedNegatives:
    """Write LLM hard negatives for a collection's queries (see the module's docstring).

    Args:
        config: the settings, or give them as keyword arguments (:class:`NegativeGenConfig` fields).
        reporter: progress bars and the token estimate printed before the start.
        overwrite: replace a folder at ``out`` written with other settings (one with the same
            settings is returned as it is).

    Returns:
        The folder, its manifest and provenance table.
    """
    cfg = config if config is not None else NegativeGenConfig(**options)
    t0 = time.perf_counter()
    col = load(cfg.dataset, cfg.split)
    taken = [d for d in col.doc_ids.tolist() if str(d).startswith(f"{ID_PREFIX}:")]
    if taken:
        raise ConfigError(f"dataset: document id '{taken[0]}' has the prefix '{ID_PREFIX}:' of generated negatives")
    q_idx = col.judged_queries()
    if q_idx.size == 0:
        raise ConfigError(f"{cfg.dataset} (split '{cfg.split}'): no query has a positive to write negatives for")
    if cfg.sample_queries is not None and cfg.sample_queries < q_idx.size:
        q_idx = np.sort(np.random.default_rng(cfg.seed).choice(q_idx, cfg.sample_queries, replace=False))
    shown, positives = _first_positives(col, q_idx)
    gen, identity, cache_root = open_generator(cfg)  # a dead endpoint stops here, before anything is written
    ce, ce_fp, llm = _build_judges(cfg, cache_root)
    prompt = NegativePrompt(with_positive=cfg.with_positive, max_doc_chars=cfg.max_doc_chars)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_tokens)
    data_fp = col.qrels_fingerprint()  # covers the queries, the corpus and the qrels
    rule = parse_score_rule(cfg.filter) if cfg.filter is not None else None
    teacher = filter_teacher(cfg.filter_model, Cache(cache_root)) if rule is not None else None
    fingerprint = settings_key(KIND, cfg.output_settings(), data_fp, identity, prompt.prompt_id, ce_fp,
                               *([teacher.fingerprint()] if teacher is not None else []),
                               llm.describe()["model"] if llm is not None else "")
    out = Path(cfg.out)
    done = finished(out, fingerprint, overwrite, "negatives", KIND)
    if done is not None:
        return GeneratedNegatives(out, *done)

    per, nq = cfg.per_query, int(q_idx.size)
    qtexts = [col.query_texts[i] for i in q_idx.tolist()]
    prompts = [prompt.render(q, col.doc_texts[d]) for q, d in zip(qtexts, shown.tolist())]
    slot_row = np.repeat(np.arange(nq), per)
    sample = np.tile(np.arange(per, dtype=np.int32), nq)
    qids = col.query_ids[q_idx[slot_row]]
    names = [f"{q}\x00{k}" for q, k in zip(qids.tolist(), sample.tolist())]
    pos_texts = [[col.doc_texts[d] for d in ds] for ds in positives]
    cache = CompletionCache(cache_root / "generate" / f"{identity}.sqlite")

    def check(slot: int, c: Completion) -> str:
        row = int(slot_row[slot])
        return bad_passage(c, qtexts[row], pos_texts[row])

    t1 = time.perf_counter()
    g = generate(gen, cache, prompts, slot_row, names, check, sampling, seed=cfg.seed, attempts=cfg.attempts,
                 concurrency=cfg.concurrency, max_error_rate=cfg.llm_max_error_rate, reporter=reporter)
    texts = [clean_passage(t) for t in g.text]
    t2 = time.perf_counter()
    reason = g.reason.copy()
    kept = reason == ""
    dup = same_doc_duplicates(slot_row, texts, kept)
    reason[dup], kept = "duplicate", kept & ~dup
    ce_p = np.full(len(names), np.nan)
    llm_p = np.full(len(names), np.nan)
    t_score, t_ref = np.full(len(names), np.nan), np.full(len(names), np.nan)
    if rule is not None and teacher is not None:  # the cheapest judge first: mining's own score rule
        idx = np.nonzero(kept)[0]
        qrows, of = np.unique(slot_row[idx], return_inverse=True)
        hit, t_score[idx], t_ref[idx] = score_rule(
            rule, teacher, [qtexts[r] for r in qrows.tolist()], [pos_texts[r] for r in qrows.tolist()],
            [texts[i] for i in idx.tolist()], of, Cache(cache_root), reporter)
        reason[idx[hit]], kept[idx[hit]] = rule.kind, False
    if ce is not None:
        idx = np.nonzero(kept)[0]
        ce_p[idx] = _ce_probabilities(ce, ce_fp, Cache(cache_root), [qtexts[slot_row[i]] for i in idx],
                                      [texts[i] for i in idx], reporter.enabled)
        hit = kept & (ce_p >= cfg.judge_threshold)
        reason[hit], kept = "cross_encoder", kept & ~hit
    if llm is not None:
        idx = np.nonzero(kept)[0]
        llm_p[idx] = llm.probabilities([qtexts[slot_row[i]] for i in idx], [texts[i] for i in idx], reporter.enabled)
        failed = kept & np.isnan(llm_p)
        hit = kept & ~failed & (llm_p >= cfg.llm_threshold)
        reason[failed], reason[hit] = "llm_error", "llm"
        kept &= ~(failed | hit)
    t3 = time.perf_counter()

    ids = [negative_id(q, k) for q, k in zip(qids.tolist(), sample.tolist())]
    n = len(names)
    settings = json.dumps(sampling.as_dict(), sort_keys=True)
    table = pa.table({
        "doc_id": pa.array(ids, pa.string()),
        "query_id": pa.array(qids.tolist(), pa.string()),
        "query": pa.array([qtexts[r] for r in slot_row.tolist()], pa.string()),
        "sample": pa.array(sample, pa.int32()),
        "synthetic": pa.array(np.ones(n, dtype=bool)),
        "text": pa.array(texts, pa.string()),  # "" where every attempt was bad output
        "kept": pa.array(kept),
        "reason": pa.array(reason.tolist(), pa.string()),
        "shown_positive": pa.array([str(col.doc_ids[shown[r]]) if cfg.with_positive else "" for r in
                                    slot_row.tolist()], pa.string()),
        "attempts": pa.array(g.attempts, pa.int32()),
        "seed": pa.array(g.seed, pa.int64()),
        "generator": pa.array([gen.label] * n, pa.string()),
        "generator_fingerprint": pa.array([identity] * n, pa.string()),
        "prompt_id": pa.array([prompt.prompt_id] * n, pa.string()),
        "settings": pa.array([settings] * n, pa.string()),
        **({"teacher_score": pa.array(t_score, pa.float64()), "positive_score": pa.array(t_ref, pa.float64())}
           if cfg.filter is not None else {}),
        "judge_probability": pa.array(ce_p, pa.float64()),
        "llm_probability": pa.array(llm_p, pa.float64()),
        "prompt_tokens": pa.array(g.prompt_tokens, pa.int64()),
        "completion_tokens": pa.array(g.completion_tokens, pa.int64()),
    })
    dropped = {r: int((reason == r).sum()) for r in sorted(set(reason.tolist())) if r}
    judges = {**({"filter": {"rule": cfg.filter, "teacher": teacher.describe()}} if teacher is not None else {}),
              "cross_encoder": {**ce.describe(), "fingerprint": ce_fp, "threshold": cfg.judge_threshold}
              if ce is not None else None,
              "llm": {**llm.describe(), "threshold": cfg.llm_threshold} if llm is not None else None}
    manifest = {
        "kind": KIND, "fingerprint": fingerprint, "config": cfg.model_dump(mode="json", exclude={"cache_dir"} | cfg.unset_filter()),
        "dataset": {"path": cfg.dataset, "split": cfg.split, "fingerprint": data_fp, "warnings": col.warnings,
                    "queries": int(col.judged_queries().size), "written_for": nq},
        "ids": f"{ID_PREFIX}:<query id>:<k>, k = 0..per_query-1 (the slot asked), attached to that query only",
        "generator": gen.describe(), "prompt": prompt.describe(), "sampling": sampling.as_dict(), "seed": cfg.seed,
        "judges": judges, "estimate": g.plan, "generation": g.counts,
        "counts": {"asked": n, "kept": int(kept.sum()), "queries_with_negatives": int(np.unique(slot_row[kept]).size),
                   "dropped": dropped},
        "timings": {"check": round(t1 - t0, 3), "generate": round(t2 - t1, 3), "judge": round(t3 - t2, 3)},
        "versions": versions(),
    }
    if ce is None and llm is None and cfg.filter is None:
        warnings.warn("generate negatives: no judge (--judge cross-encoder:PATH or llm:URL, or --filter "
                      "percpos:0.95): an accidental positive is not caught", HardnegWarning, stacklevel=2)
    if not kept.any():
        warnings.warn(f"{out}: no generated negative was kept ({', '.join(f'{k} {v}' for k, v in dropped.items())})",
                      HardnegWarning, stacklevel=2)
    docs = "".join(json.dumps({"_id": ids[i], "title": "", "text": texts[i], "synthetic": True,
                               "query_id": str(qids[i])}, ensure_ascii=False) + "\n" for i in np.nonzero(kept)[0])
    with staged_dir(out, overwrite=True) as tmp:
        write_text(tmp / "documents.jsonl", docs)
        pq.write_table(table, tmp / "generation.parquet")
        write_json(tmp / "manifest.json", manifest)
    return GeneratedNegatives(out, manifest, table)
