"""An experiment's results: per-variant summaries (mean ± std over seeds, Δ against the base model
and the baseline with a paired bootstrap CI and a paired randomisation p) and the one table model
that both ``results.md`` (:func:`results_markdown`) and the HTML report (:func:`results_html`) render."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..evaluation.comparison import CONFIDENCE, compare
from ..evaluation.metrics import DEFAULT_MEASURES
from ..evaluation.retrieval import Evaluation
from .config import ExperimentConfig

PRIMARY = "ndcg@10"
"""The measure the deltas, the tests and the dev choice are about."""
UNEQUAL_BUDGET = ("the cells trained different numbers of steps (the steps column), so the deltas mix the mining "
                  "choice with the amount of training. Set budget.max_steps.")
_LABELS = {"ndcg": "nDCG", "recall": "R", "mrr": "MRR", "map": "MAP", "p": "P"}


def label(measure: str) -> str:
    """A measure's column label: ``ndcg@10`` -> ``nDCG@10``, ``recall@100`` -> ``R@100``."""
    name, _, cut = measure.partition("@")
    return _LABELS.get(name, name) + (f"@{cut}" if cut else "")


def steps_label(row: dict[str, Any]) -> str:
    """A result row's training steps: ``25``, or ``25/26`` when its seeds trained different numbers."""
    return "/".join(str(n) for n in row.get("train_steps", [])) or "-"


def _per_query_mean(evals: list[Evaluation], metric: str = PRIMARY) -> np.ndarray:
    """Per-query values averaged over seeds, in query-id order."""
    qids = sorted(evals[0].per_query[metric])
    return np.mean([[e.per_query[metric][q] for q in qids] for e in evals], axis=0)


def summarise(cfg: ExperimentConfig, base: Evaluation, cells: dict[str, list[Evaluation]],
              dev: dict[str, list[Evaluation]] | None = None, best: str | None = None) -> dict[str, Any]:
    """Mean ± std per variant; Δ vs the base model and vs the baseline, each with the paired bootstrap CI
    and randomisation p (:func:`hardneg.evaluation.comparison.compare`), on
    per-query nDCG@10 averaged over seeds; with a dev split, each variant's dev nDCG@10 and the variant
    chosen on it. The dict is what ``results.json`` holds."""
    base_pq = _per_query_mean([base])
    rows = []
    means = {name: float(np.mean([e.metrics[PRIMARY] for e in cells[name]])) for name in cfg.baselines}
    baseline = max(means, key=lambda name: means[name]) if means else None  # the better baseline on test
    baseline_pq = _per_query_mean(cells[baseline]) if baseline else None
    baseline_mean = means[baseline] if baseline else None
    for name, evals in cells.items():
        row: dict[str, Any] = {"variant": name, "seeds": len(evals)}
        for m in DEFAULT_MEASURES:
            vals = np.array([e.metrics[m] for e in evals])
            row[m] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        pq_mean = _per_query_mean(evals)
        vs_base = compare(pq_mean, base_pq, cfg.permutations)
        row["delta_base"] = row[PRIMARY] - base.metrics[PRIMARY]
        row["ci_base"] = [vs_base.ci_low, vs_base.ci_high]
        row["p_vs_base"] = vs_base.p
        if baseline_pq is not None and baseline_mean is not None:
            c = compare(pq_mean, baseline_pq, cfg.permutations)
            row["delta_baseline"] = row[PRIMARY] - baseline_mean
            row["ci_baseline"] = [c.ci_low, c.ci_high]
            row["p_vs_baseline"] = c.p
            row["mde_baseline"] = c.mde
        if dev is not None:
            row[f"dev_{PRIMARY}"] = float(np.mean([e.metrics[PRIMARY] for e in dev[name]]))
        for key in ("train_seconds", "mine_seconds"):
            secs = [e.details[key] for e in evals if key in e.details]
            if secs:
                row[key] = float(np.mean(secs))
        steps = sorted({int(e.details["train_steps"]) for e in evals if "train_steps" in e.details})
        if steps:
            row["train_steps"] = steps
        rows.append(row)
    out = {"name": cfg.name, "dataset": cfg.dataset, "test_split": cfg.test_split, "queries": base.queries,
           "budget": cfg.budget.model_dump(), "base": base.as_json(), "baseline": baseline, "baselines": cfg.baselines, "variants": rows,
           "equal_steps": len({s for r in rows for s in r.get("train_steps", [])}) <= 1,
           "comparison": {"measure": PRIMARY, "resamples": cfg.permutations, "confidence": CONFIDENCE}}
    if cfg.test_dataset:
        out["test_dataset"] = cfg.test_dataset
    if dev is not None:
        out["dev"] = {"queries": dev["__base__"][0].queries, "seed": cfg.dev_seed, "split": cfg.dev_split,
                      f"base_{PRIMARY}": dev["__base__"][0].metrics[PRIMARY], "selected": best}
    return out


@dataclass
class ResultsTable:
    """The results as text cells: a title, summary sentences, one row per variant, notes under the table
    (``(label, text)``, the label shown in bold). Markdown and HTML render this, and only this."""

    title: str
    summary: list[str]
    headers: list[str]
    left: int  # the first ``left`` columns are left-aligned, the rest right-aligned
    rows: list[list[str]]
    notes: list[tuple[str, str]] = field(default_factory=list)


def results_table(results: dict[str, Any]) -> ResultsTable:
    """The one table model of a ``results.json`` dict (see :func:`summarise`)."""
    dev, baseline = results.get("dev"), results.get("baseline")
    conf = results.get("comparison", {}).get("confidence", CONFIDENCE)
    base = results["base"]
    scores = ", ".join(f"{label(m)} {base[m]:.4f}" for m in DEFAULT_MEASURES)
    others = [b for b in results.get("baselines", []) if b != baseline]
    better = f" (the better on test of {', '.join([str(baseline), *others])})" if others else ""
    summary = [f"Base model: {scores}. Budget: {results['budget']}." +
               (f" Baseline: {baseline}{better}." if baseline else "")]
    if dev:
        where = (f"the '{dev['split']}' split" if dev.get("split") else
                 f"train queries held out (seed {dev['seed']}), never trained on")
        summary.append(f"Dev: {dev['queries']} queries, {where}; base dev "
                       f"{label(PRIMARY)} {dev[f'base_{PRIMARY}']:.4f}." +
                       (f" Chosen on dev: {dev['selected']}." if dev["selected"] else ""))
    ci = f"{conf:.0%} CI"
    headers = ["variant", "seeds", *([f"dev {label(PRIMARY)}"] if dev else []), *map(label, DEFAULT_MEASURES),
               "Δ base", ci, "p", "Δ baseline", ci, "p", "MDE", "steps", "train s", "mine s"]
    rows = []
    for r in results["variants"]:
        if "delta_baseline" in r:
            vs_baseline = [f"{r['delta_baseline']:+.4f}", _interval(r.get("ci_baseline")), f"{r['p_vs_baseline']:.3f}",
                           f"{r['mde_baseline']:.4f}" if r.get("mde_baseline") is not None else "-"]
        else:
            vs_baseline = ["-", "-", "-", "-"]
        rows.append([r["variant"], str(r["seeds"]), *([f"{r[f'dev_{PRIMARY}']:.4f}"] if dev else []),
                     *(f"{r[m]:.4f} ± {r[m + '_std']:.4f}" for m in DEFAULT_MEASURES),
                     f"{r['delta_base']:+.4f}", _interval(r.get("ci_base")), f"{r['p_vs_base']:.3f}", *vs_baseline,
                     steps_label(r),
                     *(f"{r[k]:.0f}" if k in r else "-" for k in ("train_seconds", "mine_seconds"))])
    notes = [] if results.get("equal_steps", True) else [("Unequal budget:", UNEQUAL_BUDGET)]
    explained = (f"mine s: wall seconds of mining, teacher scoring included (as measured when the run was mined). "
                 f"Δ: on {label(PRIMARY)}. p: paired randomisation test on per-query {label(PRIMARY)} "
                 f"(averaged over seeds), two-sided. {ci}: paired bootstrap (BCa) of the mean per-query "
                 "difference against the base model or the baseline. MDE: the smallest true Δ against the "
                 f"baseline that these queries would show at p < {1 - conf:.2f} four times in five (80% power; "
                 "normal approximation from the spread of the per-query differences): a Δ under it that is not "
                 "significant may be real but is beyond this test set.")
    notes.append(("", explained))
    trained = f" (trained on {results['dataset']})" if results.get("test_dataset") else ""
    return ResultsTable(f"{results['name']}: {results.get('test_dataset') or results['dataset']} "
                        f"[{results['test_split']}]{trained}, {results['queries']} queries", summary, headers, 2, rows,
                        notes)


def _interval(ci: list[float] | None) -> str:
    return "[{:+.4f}, {:+.4f}]".format(*ci) if ci else "-"


def results_markdown(results: dict[str, Any]) -> str:
    """``results.md``: the results table in markdown."""
    t = results_table(results)
    lines = [f"### {t.title}", ""]
    for s in t.summary:
        lines += [s, ""]
    lines += ["| " + " | ".join(t.headers) + " |",
              "|" + "---|" * t.left + "---:|" * (len(t.headers) - t.left)]
    lines += ["| " + " | ".join(row) + " |" for row in t.rows]
    lines.append("")
    lines += [f"**{lab}** {text}" if lab else text for lab, text in t.notes]
    return "\n".join(lines) + "\n"


def results_html(results: dict[str, Any]) -> str:
    """The same results table as an HTML fragment (summary paragraphs, the table, the notes)."""
    t = results_table(results)
    e = html.escape
    out = [f"<p>{e(t.title)}.</p>", *(f"<p>{e(s)}</p>" for s in t.summary),
           "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.headers) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in t.rows]
    out.append("</table>")
    out += [f"<p><b>{e(lab)}</b> {e(text)}</p>" if lab else f"<p>{e(text)}</p>" for lab, text in t.notes]
    return "\n".join(out)
