"""report(): one self-contained HTML page for an experiment folder: the results table, Δ nDCG@10 per
variant with its confidence interval, per-query wins and losses against the baseline, training curves
where the trainer recorded them, each variant's score distributions and sample negatives, and a link
from each variant to its run's inspector page (written beside the run). The charts are Vega-Lite
(:mod:`hardneg.plots`), their script inlined: the page needs no network."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import plots
from ..errors import RunError
from ..runs.files import write_text
from ..runs.run import Run
from ..runs.summary import summary
from .results import PRIMARY, label, results_html


class Charts:
    """Numbered chart divs of one page."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, spec: dict[str, Any]) -> str:
        self.count += 1
        return plots.embed(f"chart-{self.count}", spec)


def _per_query(exp: Path, variant: str) -> dict[str, float]:
    """A variant's per-query nDCG@10 on test, averaged over its finished seeds (empty if none)."""
    values: dict[str, list[float]] = {}
    for f in sorted((exp / "variants" / variant).glob("seed-*/per_query.jsonl")):
        if not (f.parent / "metrics.json").exists():
            continue
        for line in f.read_text().splitlines():
            r = json.loads(line)
            values.setdefault(r["query_id"], []).append(float(r[PRIMARY]))
    return {q: float(np.mean(v)) for q, v in values.items()}


def _delta_chart(res: dict[str, Any]) -> dict[str, Any] | None:
    """Δ nDCG@10 against the baseline with its bootstrap CI; without a baseline, against the base model
    with ±1 std over seeds."""
    rows = res["variants"]
    if not rows:
        return None
    if res.get("baseline") and all("delta_baseline" in r for r in rows):
        conf = res.get("comparison", {}).get("confidence", 0.95)
        return plots.interval_chart(
            [r["variant"] for r in rows], [r["delta_baseline"] for r in rows],
            [r.get("ci_baseline", [None, None])[0] for r in rows], [r.get("ci_baseline", [None, None])[1] for r in rows],
            f"Δ {label(PRIMARY)} vs the baseline ({res['baseline']}), {conf:.0%} CI",
            f"Δ {label(PRIMARY)} against the baseline")
    return plots.interval_chart(
        [r["variant"] for r in rows], [r["delta_base"] for r in rows],
        [r["delta_base"] - r[f"{PRIMARY}_std"] for r in rows], [r["delta_base"] + r[f"{PRIMARY}_std"] for r in rows],
        f"Δ {label(PRIMARY)} vs the base model, ±1 std over seeds", f"Δ {label(PRIMARY)} against the base model")


def _win_loss(exp: Path, res: dict[str, Any], chart: Charts) -> str:
    """Per variant: a scatter of its per-query nDCG@10 against the baseline's, and the counts."""
    baseline = res.get("baseline")
    if not baseline:
        return "<p>No baseline: no per-query comparison.</p>"
    ref = _per_query(exp, baseline)
    if not ref:
        return "<p>The baseline's per-query scores are not in this folder.</p>"
    out = []
    for r in res["variants"]:
        if r["variant"] == baseline:
            continue
        mine = _per_query(exp, r["variant"])
        qids = sorted(set(mine) & set(ref))
        if not qids:
            continue
        a, b = np.array([mine[q] for q in qids]), np.array([ref[q] for q in qids])
        wins, losses = int((a > b).sum()), int((a < b).sum())
        rows = [{"query": q, "baseline": round(float(y), 4), "variant": round(float(x), 4)} for q, x, y in zip(qids, a, b)]
        title = f"{r['variant']}: {wins} wins, {losses} losses, {len(qids) - wins - losses} ties"
        out.append(f'<div><p class="wl">{html.escape(title)}</p>' + chart(plots.scatter_chart(
            rows, "baseline", "variant", f"{baseline} {label(PRIMARY)}", f"{r['variant']} {label(PRIMARY)}"))
            + "</div>")
    return '<div class="grid">' + "".join(out) + "</div>"


def _curves(exp: Path, res: dict[str, Any]) -> dict[str, Any] | None:
    """Training loss against step, one line per cell, from the trainer's ``loss_log`` (the cell's copy of the
    trainer's manifest, or the manifest in its model)."""
    from ..training.trainer import MANIFEST
    from .cells import TRAINING_LOG

    rows = []
    for r in res["variants"]:
        for seed in sorted((exp / "variants" / r["variant"]).glob("seed-*")):
            f = seed / TRAINING_LOG if (seed / TRAINING_LOG).exists() else seed / "model" / MANIFEST
            if not f.exists():
                continue
            for p in json.loads(f.read_text()).get("loss_log", []):
                rows.append({"cell": f"{r['variant']} {seed.name}", "step": p["step"], "loss": p["loss"]})
    return plots.line_chart(rows, "step", "loss", "cell", "step", "training loss", "Training curves") if rows else None


def _samples(run: Run, k: int = 3, chars: int = 240) -> str:
    col = run.collection()
    rows = run.negatives.to_pylist()
    pick = np.random.default_rng(0).choice(len(rows), size=min(k, len(rows)), replace=False)

    def text(doc_id: str) -> str:
        t = col.doc_texts[int(col.doc_index([doc_id])[0])]
        return html.escape(t[:chars] + ("…" if len(t) > chars else ""))

    out = []
    for i in sorted(pick.tolist()):
        r = rows[i]
        q = col.query_texts[int(col.query_index([r["query_id"]])[0])]
        items = [f'<li class="pos"><b>+ {s:.3f}</b> {text(d)}</li>' for d, s in zip(r["positive_ids"], r["positive_scores"])]
        items += [f'<li class="neg"><b>− {s:.3f}</b> {text(d)}</li>' for d, s in zip(r["negative_ids"], r["negative_scores"])]
        out.append(f'<div class="q"><p><b>{html.escape(r["query_id"])}</b>: {html.escape(q)}</p><ul>{"".join(items)}</ul></div>')
    return "".join(out)


def _variant(exp: Path, out: Path, r: dict[str, Any], chart: Charts, inspect_pages: bool) -> str:
    """A variant's section: its run's settings and counts, the link to its inspector page, score
    distributions and sample negatives."""
    name = html.escape(r["variant"])
    run_dir = exp / "variants" / r["variant"] / "run"
    if not (run_dir / "manifest.json").exists():
        return (f'<h3 id="v-{name}">{name}</h3><p>Mined by sentence-transformers (outside baseline), or not '
                "mined yet: no hardneg run folder.</p>")
    run = Run.load(run_dir)
    s = summary(run, bins=20)
    c = s["counts"]
    link = ""
    if inspect_pages:
        from ..inspect.page import inspect

        page = inspect(run, run_dir / "inspect.html")
        href = html.escape(Path(os.path.relpath(page, out.parent)).as_posix())
        link = f' <a class="inspect" href="{href}">inspect the run</a>'
    edges = np.array(s["score_edges"])
    hist = {k: (edges, np.array(v)) for k, v in s["histograms"].items() if sum(v)}
    return (f'<h3 id="v-{name}">{name}</h3><p>teacher {html.escape(s["teacher"])}, filters '
            f"{html.escape(', '.join(s['filters']) or 'none')}, sampler {html.escape(s['sampler'])}; coverage "
            f"{c['coverage']:.1%}, dropped {c['candidates'] - c['reasons']['kept']} of {c['candidates']} candidates."
            f"{link}</p>"
            + chart(plots.histogram_chart(hist, f"{s['teacher']} score", "share of the group",
                                          f"{r['variant']}: score distributions"))
            + _samples(run))


def report(exp_dir: str | Path, out: str | Path | None = None, inspect_pages: bool = True) -> Path:
    """Write ``report.html`` (or ``out``): the results table (the same table model as ``results.md``),
    Δ chart with CIs, per-query wins and losses against the baseline, training curves, each variant's
    histograms and sample negatives; with ``inspect_pages``, each variant's run gets its inspector page
    (``variants/<name>/run/inspect.html``), linked from the report."""
    exp = Path(exp_dir)
    results_path = exp / "results.json"
    if not results_path.exists():
        raise RunError(f"{exp}: no results.json (run `hardneg experiment` first)")
    res = json.loads(results_path.read_text())
    path = Path(out) if out else exp / "report.html"
    chart = Charts()
    delta = _delta_chart(res)
    curves = _curves(exp, res)
    body = [f"<h1>{html.escape(res['name'])}</h1>", results_html(res),
            f"<h2>Δ {label(PRIMARY)} per variant</h2>", chart(delta) if delta else "<p>No variants.</p>",
            f"<h2>Per query: each variant against the baseline ({html.escape(str(res.get('baseline')))})</h2>",
            "<p>One point per test query (mean over seeds); above the diagonal the variant wins.</p>",
            _win_loss(exp, res, chart), "<h2>Training curves</h2>",
            chart(curves) if curves else "<p>No training loss was recorded for these cells.</p>",
            "<h2>Variants: score distributions and sample negatives</h2>",
            *(_variant(exp, path, r, chart, inspect_pages) for r in res["variants"])]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>hardneg report: {html.escape(res['name'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
.grid{{display:flex;flex-wrap:wrap;gap:1.5em}}.q{{border-left:3px solid #ccc;padding-left:8px;margin:8px 0;font-size:13px}}.pos b{{color:#2b8a3e}}.neg b{{color:#c92a2a}}</style>
<script>{plots.vega_bundle()}</script></head><body>
{''.join(body)}
</body></html>"""
    return write_text(path, page)
