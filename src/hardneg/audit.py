"""audit(): a measured false-negative rate for a mining configuration.

Hide a seeded share of each query's known positives, mine with the rest, and count how many
hidden positives come back as "negatives" (FN rate), how many the filters caught (FN recall), how
many negatives were returned (coverage) and how hard they still are (hardness kept, against naive
top-k on the same ranking). The three are always reported together: a filter that cuts false
negatives by dropping most candidates is no win. Every filter stage is measured by mining again
with the stages up to it (searches come from the cache, so this costs little)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .collection import Collection, Qrels, load
from .config import MineConfig
from .decisions.filters import FilterChain
from .errors import ConfigError
from .mine import mine
from .progress import SILENT, Reporter
from .runs.files import hashes64
from .runs.run import Run

QUANTILES = (0.1, 0.5, 0.9)


@dataclass
class Hidden:
    """The positives taken away: (query, doc) collection indices, and the queries they belong to."""

    query_idx: np.ndarray
    doc_idx: np.ndarray

    def keys(self, num_docs: int) -> np.ndarray:
        return self.query_idx.astype(np.int64) * num_docs + self.doc_idx


def hide_positives(col: Collection, fraction: float, seed: int = 0) -> tuple[Collection, Hidden]:
    """Hide ``floor(fraction * n)`` of each query's n positives (at least one, never all), chosen
    by a seeded hash of (query id, doc id). Queries with one positive keep it and are not audited."""
    if not 0 < fraction < 1:
        raise ConfigError(f"hide fraction must be in (0, 1), got {fraction}")
    pos = col.positives()
    n = np.bincount(pos.query_idx, minlength=col.query_ids.size)[pos.query_idx]
    h = np.where(n >= 2, np.clip(np.floor(fraction * n), 1, n - 1), 0).astype(np.int64)
    keys = hashes64((f"{seed}\t{q}\t{d}" for q, d in zip(col.query_ids[pos.query_idx], col.doc_ids[pos.doc_idx])),
                    pos.query_idx.size)
    order = np.lexsort((keys, pos.query_idx))
    qs = pos.query_idx[order]
    start = np.searchsorted(qs, qs)  # first position of each query in the sorted order
    hide = np.zeros(len(pos), dtype=bool)
    hide[order] = (np.arange(qs.size) - start) < h[order]
    hidden = Hidden(pos.query_idx[hide], pos.doc_idx[hide])
    drop = np.isin(col.qrels.query_idx.astype(np.int64) * col.num_docs + col.qrels.doc_idx,
                   hidden.keys(col.num_docs))
    qr = Qrels(col.qrels.query_idx[~drop], col.qrels.doc_idx[~drop], col.qrels.grade[~drop])
    source = dict(col.source)
    source["audit"] = {"hide_fraction": fraction, "seed": seed, "hidden": int(hide.sum())}
    return Collection(col.doc_ids, col.doc_texts, col.query_ids, col.query_texts, qr, source, list(col.notes)), hidden


@dataclass
class StageAudit:
    """What one filter chain did on the audited queries."""

    filters: str
    fn_rate: float
    fn_rate_naive: float
    fn_recall: float
    coverage: float
    hardness_kept: float
    returned: int
    returned_hidden: int
    quantiles_kept: list[float]
    quantiles_naive: list[float]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    judges: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _group_rank(groups: np.ndarray) -> np.ndarray:
    """Position of each row within its run of equal ``groups`` values (rows grouped already)."""
    idx = np.arange(groups.size)
    starts = np.r_[0, np.nonzero(groups[1:] != groups[:-1])[0] + 1]
    return idx - np.repeat(starts, np.diff(np.r_[starts, groups.size]))


def measure(run: Run, col: Collection, hidden: Hidden) -> StageAudit:
    """FN rate, FN recall, coverage and hardness of ``run`` on the queries that have hidden positives."""
    nd = col.num_docs
    hkeys = hidden.keys(nd)
    audited = np.unique(hidden.query_idx)
    filter_on = run.manifest["filter_on"]
    k = int(run.manifest["config"]["num_negatives"])
    c = run.candidates
    cq = col.query_index(c.column("query_id").to_pylist()).astype(np.int64)
    cd = col.doc_index(c.column("doc_id").to_pylist()).astype(np.int64)
    m = np.isin(cq, audited)
    cq, cd = cq[m], cd[m]
    rank = c.column("rank").to_numpy()[m]
    score = c.column(f"score_{filter_on}").to_numpy()[m]
    rc = c.column("reason").combine_chunks()
    reason = np.asarray(rc.dictionary.to_pylist(), dtype=object)[rc.indices.to_numpy()][m]
    selected = c.column("selected").to_numpy(zero_copy_only=False)[m]
    is_hidden = np.isin(cq * nd + cd, hkeys)
    # Naive top-k: the first k candidates that are not known (visible) positives.
    not_known = reason != "positive"
    naive = np.zeros(cq.size, dtype=bool)
    naive[not_known] = _group_rank(cq[not_known]) < k
    # The zone that mattered: ranks down to the query's deepest returned negative.
    deepest = np.zeros(col.query_ids.size, dtype=np.int64)
    np.maximum.at(deepest, cq[selected], rank[selected])
    has_sel = np.zeros(col.query_ids.size, dtype=bool)
    has_sel[cq[selected]] = True
    zone = ~has_sel[cq] | (rank <= deepest[cq])
    dropped = (reason != "") & not_known
    in_zone_hidden = is_hidden & zone
    returned = int(selected.sum())
    by_reason: dict[str, dict[str, int]] = {}
    for r in sorted(set(reason[dropped].tolist())):
        rm = reason == r
        by_reason[r] = {"dropped": int(rm.sum()), "hidden": int((rm & is_hidden).sum())}

    def q(x: np.ndarray) -> list[float]:
        return [round(float(v), 6) for v in np.quantile(x, QUANTILES)] if x.size else []

    naive_mean = float(score[naive].mean()) if naive.any() else float("nan")
    return StageAudit(
        filters=str(run.manifest["config"]["filter"]),
        fn_rate=float((selected & is_hidden).sum() / max(returned, 1)),
        fn_rate_naive=float((naive & is_hidden).sum() / max(int(naive.sum()), 1)),
        fn_recall=float((in_zone_hidden & dropped).sum() / max(int(in_zone_hidden.sum()), 1)),
        coverage=float(returned / (k * audited.size)),
        hardness_kept=float(score[selected].mean() / naive_mean) if returned else 0.0,
        returned=returned,
        returned_hidden=int((selected & is_hidden).sum()),
        quantiles_kept=q(score[selected]),
        quantiles_naive=q(score[naive]),
        dropped=by_reason,
        judges=[j for j in (run.manifest["config"].get("judge"), run.manifest["config"].get("llm_judge")) if j],
    )


def stage_prefixes(filters: str | FilterChain) -> list[str]:
    """``a+b+c`` -> ``none``, ``a``, ``a+b``, ``a+b+c``: each stage measured with those before it."""
    return [str(c) for c in FilterChain.parse(filters).prefixes()]  # ``cascade`` expands to its stages


def audit(dataset: Any, split: str = "test", hide_fraction: float = 0.5, seed: int = 0,
          reporter: Reporter = SILENT, stages: bool = True, save_run: str | Path | None = None,
          **mine_options: Any) -> dict[str, Any]:
    """Hide ``hide_fraction`` of each query's positives (seeded), mine with ``mine_options``
    (any :func:`hardneg.mine` option) and measure. Returns one JSON-ready dict: the final chain's
    ``fn_rate``, ``fn_recall``, ``coverage``, ``hardness_kept``, ``queries``, and one row per stage.
    With ``save_run`` the final stage's run is written there, its manifest naming the hidden positives
    (``audit.hidden``), so that ``hardneg inspect`` shows what became of each."""
    mine_options = {k: v for k, v in mine_options.items() if v is not None}
    mine_options.pop("out", None)
    mine_options.setdefault("seed", seed)
    # Every spec parsed and checked once, before the data is loaded; the stages reuse the parsed values.
    checked = MineConfig(dataset=str(dataset) if isinstance(dataset, str | Path) else "<collection>", split=split,
                         **mine_options)
    checked.check_files()
    mine_options = {k: getattr(checked, k) for k in mine_options}
    col = dataset if isinstance(dataset, Collection) else load(
        dataset, split, corpus=checked.corpus, query_column=checked.query_column,
        positive_column=checked.positive_column, strict=checked.strict)
    visible, hidden = hide_positives(col, hide_fraction, seed)
    if hidden.query_idx.size == 0:
        raise ConfigError(f"{dataset}: no query has two positives, so none can be hidden and audited")
    chain = checked.filter
    mine_options.pop("filter", None)
    judges: dict[str, Any] = {k: mine_options.pop(k) for k in ("judge", "llm_judge", "relabel") if k in mine_options}
    plan: list[tuple[FilterChain, dict[str, Any]]] = [(f, {}) for f in (chain.prefixes() if stages else [chain])]
    if any(judges.values()):  # the judges come last, after every rule (--no-relabel alone is no stage)
        plan = (plan if stages else []) + [(chain, judges)]
    rows = []
    for f, extra in plan:
        run = mine(visible, filter=f, reporter=reporter, **mine_options, **extra)
        rows.append((run, measure(run, visible, hidden)))
    final_run, final = rows[-1]
    if save_run is not None:
        final_run.manifest["audit"] = {"hide_fraction": hide_fraction, "seed": seed, "hidden": {
            "query_id": visible.query_ids[hidden.query_idx].tolist(), "doc_id": visible.doc_ids[hidden.doc_idx].tolist()}}
        final_run.save(save_run, overwrite=True, cache_dir=checked.cache_dir)
    return {
        "fn_rate": round(final.fn_rate, 6),
        "fn_recall": round(final.fn_recall, 6),
        "coverage": round(final.coverage, 6),
        "hardness_kept": round(final.hardness_kept, 6),
        "fn_rate_naive": round(final.fn_rate_naive, 6),
        "fn_reduction": round(1 - final.fn_rate / final.fn_rate_naive, 6) if final.fn_rate_naive else 0.0,
        "queries": int(np.unique(hidden.query_idx).size),
        "hidden_positives": int(hidden.query_idx.size),
        "hide_fraction": hide_fraction,
        "seed": seed,
        "filters": final.filters,
        "teacher": final_run.manifest["teacher"],
        "calibration": final_run.manifest.get("calibration"),
        "stages": [s.as_json() for _, s in rows],
    }


def audit_table(result: dict[str, Any]) -> list[list[str]]:
    """Rows for a table: one per stage, named by the rule it adds to those above it."""
    out, before = [], ""
    for s in result["stages"]:
        if s.get("judges"):
            name = "+ " + " + ".join(s["judges"])
        elif s["filters"] == "none":
            name = "naive top-k"
        else:
            name = "+ " + s["filters"][len(before):].lstrip("+")
        before = "" if s["filters"] == "none" else s["filters"]
        out.append([name, f"{s['fn_rate']:.1%}", f"{s['fn_recall']:.1%}", f"{s['coverage']:.1%}",
                    f"{s['hardness_kept']:.3f}", str(s["returned"])])
    return out


