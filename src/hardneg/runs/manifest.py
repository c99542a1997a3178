"""The run's ``manifest.json``: settings (credentials removed), data identity, teacher, filters as
resolved, judges, counts, timings and package versions."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..decisions.filters import reason_counts

if TYPE_CHECKING:
    from ..candidates.passes import Part, PassContext
    from ..config import MineConfig

PACKAGES = ("hardneg", "numpy", "pyarrow", "torch", "sentence-transformers", "transformers", "bm25s",
            "faiss-cpu", "scipy")


def versions() -> dict[str, str]:
    """Python's and the installed versions of the packages that decide a run's numbers."""
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def shareable_config(cfg: MineConfig) -> dict[str, Any]:
    """The settings as the manifest records them: an LLM endpoint without its ``user:password@``."""
    out = cfg.model_dump()
    if cfg.llm_judge is not None:
        from ..decisions.llm import split_credentials

        out["llm_judge"] = "llm:" + split_credentials(cfg.llm_judge.target)[0]
    return out


def run_counts(ctx: PassContext, parts: list[Part], candidates: pa.Table, chosen_ids: np.ndarray,
               deepened: int) -> dict[str, Any]:
    """What the run holds: queries, candidates, reasons, selected, coverage, cache use."""
    n, col, nq = ctx.cfg.num_negatives, ctx.col, ctx.q_idx.size
    num = (chosen_ids >= 0).sum(axis=1)
    reasons = np.concatenate([p.reason[p.valid] for p in parts])
    return {
        "queries": int(nq),
        "queries_in_collection": int(col.query_ids.size),
        "docs": int(col.num_docs),
        "positives": int(ctx.pos_rows.size),
        "candidates": int(candidates.num_rows),
        "reasons": reason_counts(reasons, np.ones(reasons.shape, dtype=bool)),
        "selected": int(num.sum()),
        "queries_full": int((num == n).sum()),
        "queries_short": int((num < n).sum()),
        "queries_empty": int((num == 0).sum()),
        "queries_deepened": deepened,
        "shortfall_total": int((n - num).sum()),
        "coverage": float(num.sum() / (nq * n)),
        "full_rate": float((num == n).mean()),
        "encoded_texts": ctx.cache.encoded_texts,
        "search_cache_hit": all(p.search_cache_hit for p in parts),
        "exhaustive_rescans": int(sum(p.exhaustive for p in parts)),
        "judge_cache_hits": ctx.judge_cache_hits,
    }


def run_manifest(ctx: PassContext, parts: list[Part], counts: dict[str, Any], fingerprint: str,
                 timings: dict[str, float]) -> dict[str, Any]:
    """The manifest of a mined run (its ``warnings`` are added by the caller)."""
    cfg, col = ctx.cfg, ctx.col
    return {
        "hardneg_version": metadata.version("hardneg"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": shareable_config(cfg),
        "config_fingerprint": fingerprint,
        "data": {k: v for k, v in col.source.items() if not k.startswith("_")}
        | {"corpus_fingerprint": col.corpus_fingerprint(), "notes": col.notes[:20]},
        "teacher": ctx.teacher.describe(),
        "encoder": {"asked": cfg.encoder, "resolved": cfg.encoders()},
        "filter_on": ctx.filter_on,
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
        "versions": versions(),
    }
