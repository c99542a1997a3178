"""The model judges as stages of a pass: the cross-encoder rescores what the rules kept near the
top, then the LLM judges what is still ambiguous. Both are built and checked once, before any
search, and both write their verdicts into a part's ``reason`` codes in place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..runs.cache import Cache
from ..runs.files import sha256_texts
from ..runs.fingerprint import folder_fingerprint, settings_key
from .filters import REASON_CODE

if TYPE_CHECKING:
    from ..candidates.passes import Part, PassContext
    from ..config import MineConfig


def build_judges(cfg: MineConfig, cache: Cache) -> tuple[Any, str, Any]:
    """The model judges, each checked once before any work: a broken judge folder, a dead or unreadable
    LLM endpoint or an unloadable GGUF file is an error now, not minutes into the run. Returns the
    cross-encoder judge (or None), its folder's fingerprint (the key of its cached probabilities) and
    the LLM judge (or None)."""
    judge, judge_fingerprint, llm = None, "", None
    if cfg.judge:
        from .cross_encoder import CrossEncoderJudge

        judge = CrossEncoderJudge(cfg.judge.path, batch_size=cfg.batch_size, device=cfg.device)
        judge.check()
        judge_fingerprint = folder_fingerprint(judge.path, cache.root)  # once, not per query shard
    if cfg.llm_judge:
        from .llm import LLMConfig, LLMJudge, parse_llm_target

        llm = LLMJudge(LLMConfig(parse_llm_target(str(cfg.llm_judge)), model=cfg.llm_model,
                                 concurrency=cfg.llm_concurrency, retries=cfg.llm_retries, timeout=cfg.llm_timeout,
                                 max_error_rate=cfg.llm_max_error_rate), cache.root)
        llm.check()
    return judge, judge_fingerprint, llm


def judge_part(ctx: PassContext, part: Part) -> None:
    """Model judges (cross-encoder, then LLM) on what the rules kept near the top, in place."""
    cfg, col = ctx.cfg, ctx.col
    q_idx, ids, reason = ctx.q_idx[part.rows], part.ids, part.reason
    near_top = part.valid & part.nonpos & (part.before < cfg.judge_depth)
    if ctx.judge is not None:
        # The judge rescores only what the rules kept near the top, where false negatives sit.
        zone = near_top & (reason == 0)
        zr, zc = np.nonzero(zone)
        prob = np.full(ids.shape, np.nan)
        prob[zr, zc] = judge_probabilities(ctx, [col.query_texts[i] for i in q_idx[zr]],
                                           [col.doc_texts[i] for i in ids[zr, zc]])
        reason[zone & (prob >= cfg.judge_threshold)] = REASON_CODE["cross_encoder"]
        part.scores["judge"] = prob
    if ctx.llm is not None:
        llm_stage(ctx, q_idx, ids, near_top, reason, part.scores)


def judge_probabilities(ctx: PassContext, queries: list[str], docs: list[str]) -> np.ndarray:
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


def llm_stage(ctx: PassContext, q_idx: np.ndarray, ids: np.ndarray, top: np.ndarray, reason: np.ndarray,
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
