"""report(): one self-contained HTML page for an experiment folder (no scripts, no external files)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..runs.files import write_text
from ..runs.run import Run
from ..runs.summary import summary
from .results import results_html

COLORS = {"positives": "#2b8a3e", "selected": "#1c7ed6", "kept_not_selected": "#99c2ff", "dropped": "#e8590c"}


def _delta_chart(rows: list[dict[str, Any]]) -> str:
    """Horizontal bars of nDCG@10 minus the base model's, with ±1 std error bars."""
    if not rows:
        return ""
    w, bar_h, left = 640, 26, 170
    vals = np.array([r["delta_base"] for r in rows])
    errs = np.array([r["ndcg@10_std"] for r in rows])
    span = float(max(np.max(np.abs(vals) + errs), 1e-3))
    scale = (w - left - 20) / (2 * span)
    zero = left + (w - left - 20) / 2
    parts = [f'<svg width="{w}" height="{bar_h * len(rows) + 30}" role="img" aria-label="delta nDCG@10">',
             f'<line x1="{zero}" y1="0" x2="{zero}" y2="{bar_h * len(rows)}" stroke="#333"/>']
    for i, (r, v, e) in enumerate(zip(rows, vals, errs)):
        y = i * bar_h + 4
        x0, x1 = sorted((zero, zero + v * scale))
        color = "#2b8a3e" if v >= 0 else "#c92a2a"
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="12">{html.escape(r["variant"])}</text>')
        parts.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar_h - 10}" fill="{color}"/>')
        cx = zero + v * scale
        parts.append(f'<line x1="{cx - e * scale:.1f}" y1="{y + 8}" x2="{cx + e * scale:.1f}" y2="{y + 8}" stroke="#000"/>')
        parts.append(f'<text x="{w - 4}" y="{y + 14}" text-anchor="end" font-size="11">{v:+.4f}</text>')
    parts.append(f'<text x="{zero}" y="{bar_h * len(rows) + 20}" text-anchor="middle" font-size="11">'
                 f'Δ nDCG@10 vs base (±{span:.3f} shown)</text></svg>')
    return "".join(parts)


def _histogram(s: dict[str, Any]) -> str:
    """Grouped bars: score distribution of positives, selected, kept and dropped negatives."""
    groups = {k: np.array(v, dtype=float) for k, v in s["histograms"].items()}
    norm = {k: v / v.sum() if v.sum() else v for k, v in groups.items()}
    nb = len(s["score_edges"]) - 1
    w, h, pad = 420, 150, 20
    bw = (w - 2 * pad) / nb / len(groups)
    top = max(max(v.max() for v in norm.values()), 1e-9)
    parts = [f'<svg width="{w}" height="{h + 40}" role="img" aria-label="score histogram">']
    for gi, (name, v) in enumerate(norm.items()):
        for b, frac in enumerate(v):
            x = pad + (b * len(groups) + gi) * bw
            bh = frac / top * h
            parts.append(f'<rect x="{x:.1f}" y="{h - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" fill="{COLORS[name]}"/>')
    edges = s["score_edges"]
    parts.append(f'<text x="{pad}" y="{h + 14}" font-size="10">{edges[0]:.2f}</text>')
    parts.append(f'<text x="{w - pad}" y="{h + 14}" font-size="10" text-anchor="end">{edges[-1]:.2f}</text>')
    for i, name in enumerate(norm):
        parts.append(f'<rect x="{pad + i * 100}" y="{h + 22}" width="10" height="10" fill="{COLORS[name]}"/>'
                     f'<text x="{pad + i * 100 + 14}" y="{h + 31}" font-size="10">{name}</text>')
    parts.append("</svg>")
    return "".join(parts)


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


def report(exp_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (or ``out``): the results table (the same table model as ``results.md``),
    Δ chart, histograms, sample negatives."""
    exp = Path(exp_dir)
    results_path = exp / "results.json"
    if not results_path.exists():
        from ..errors import RunError

        raise RunError(f"{exp}: no results.json (run `hardneg experiment` first)")
    res = json.loads(results_path.read_text())
    sections = []
    for r in res["variants"]:
        run_dir = exp / "variants" / r["variant"] / "run"
        if not (run_dir / "manifest.json").exists():
            sections.append(f"<h3>{html.escape(r['variant'])}</h3><p>Mined by sentence-transformers "
                            "(outside baseline): no hardneg run folder.</p>")
            continue
        run = Run.load(run_dir)
        s = summary(run)
        c = s["counts"]
        sections.append(
            f"<h3>{html.escape(r['variant'])}</h3><p>teacher {html.escape(s['teacher'])}, filters "
            f"{html.escape(', '.join(s['filters']) or 'none')}, sampler {html.escape(s['sampler'])}; coverage "
            f"{c['coverage']:.1%}, dropped {c['candidates'] - c['reasons']['kept']} of {c['candidates']} candidates</p>"
            f"{_histogram(s)}{_samples(run)}")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>hardneg report: {html.escape(res['name'])}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
.q{{border-left:3px solid #ccc;padding-left:8px;margin:8px 0;font-size:13px}}.pos b{{color:#2b8a3e}}.neg b{{color:#c92a2a}}</style>
</head><body><h1>{html.escape(res['name'])}</h1>
{results_html(res)}
<h2>Δ nDCG@10 against the base model</h2>{_delta_chart(res['variants'])}
<h2>Variants: score distributions and sample negatives</h2>{''.join(sections)}
</body></html>"""
    return write_text(Path(out) if out else exp / "report.html", page)
