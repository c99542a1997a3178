"""The inspector page: one HTML file with its data, the chart bundle and the script inlined, so it
opens from ``file://`` with no network. With ``serve=True`` the page carries only the query list and
the charts, and fetches each query's detail from the local server (:mod:`.serve`)."""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path
from typing import Any

from .. import plots
from ..errors import ConfigError
from ..runs.files import write_text
from ..runs.run import Run
from .compare import compare as compare_fn
from .data import PageData

MAX_EMBED = 3_000_000
"""Candidates above which the static page is refused (it would weigh hundreds of MB): use ``--serve``."""

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 1.5em;color:#222;font-size:14px}
h1{font-size:20px}h2{font-size:17px;margin:.6em 0 .2em}table{border-collapse:collapse;margin:.4em 0}
td,th{border:1px solid #ddd;padding:2px 6px;vertical-align:top}th{background:#f1f3f5;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.text{max-width:640px}
.layout{display:flex;gap:1.5em;align-items:flex-start}.list{flex:0 0 38%}.detail{flex:1;min-width:0}
tr.qrow{cursor:pointer}tr.qrow:hover{background:#e7f5ff}tr.selected td{background:#e7f5ff}
tr.dropped td{color:#868e96}tr.hidden td{background:#fff3bf}tr.pos td{background:#ebfbee}.query{font-size:15px;font-weight:600}
.halves{display:flex;gap:1em}.half{flex:1}tr.added td{background:#ebfbee}tr.removed td{background:#fff5f5}
.charts{display:flex;flex-wrap:wrap;gap:1em}#manifest{background:#f8f9fa;padding:.6em;max-height:420px;overflow:auto}
.controls{margin:.4em 0;display:flex;flex-wrap:wrap;gap:.6em;align-items:center}summary{cursor:pointer}
"""

BODY = """<h1 id="title"></h1>
<div class="controls">
 <input id="search" type="search" placeholder="search query id or text" size="32">
 <label>shortfall <select id="f-shortfall"><option value="">any</option><option value="short">short</option>
 <option value="full">full</option></select></label>
 <label>has reason <select id="f-reason"><option value="">any</option></select></label>
 <label><input id="f-relabelled" type="checkbox"> has relabelled</label>
 <label id="f-audit-box">audit outcome <select id="f-audit"><option value="">any</option></select></label>
 <label id="f-changed-box"><input id="f-changed" type="checkbox"> changed in the comparison</label>
</div>
<div id="compare"></div>
<div class="layout">
 <div class="list"><p id="count"></p><button id="prev">◀ previous</button> <button id="next">next ▶</button>
 <table><thead><tr><th>id</th><th>query</th><th>cand.</th><th>sel.</th><th>short</th></tr></thead>
 <tbody id="qlist"></tbody></table></div>
 <div class="detail" id="detail"></div>
</div>
<h2>Charts</h2><div class="charts" id="charts"></div>
<h2>Manifest</h2><pre id="manifest"></pre>
"""


def page_html(data: dict[str, Any], title: str, cache_dir: str | None = None) -> str:
    """The page around ``data`` (see :meth:`PageData.head`; with ``details`` and ``docs`` for a static page)."""
    script = resources.files("hardneg.inspect").joinpath("page.js").read_text(encoding="utf-8")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style><script>{plots.vega_bundle(cache_dir)}</script></head><body>{BODY}"
            f'<script type="application/json" id="hardneg-data">{plots.script_json(data)}</script>'
            f"<script>{script}</script></body></html>")


def load_page(run: str | Path | Run, compare: str | Path | None = None) -> PageData:
    """The page data of a run (a folder or a loaded :class:`Run`), compared with ``compare`` if given."""
    page = PageData.build(run if isinstance(run, Run) else Run.load(run))
    if compare is not None:
        compare_fn(page, compare)
    return page


def static_page(page: PageData, label: str, cache_dir: str | None = None, max_embed: int = MAX_EMBED) -> str:
    """The self-contained page: every query's detail and the texts of every document it names."""
    if page.num_candidates > max_embed:
        raise ConfigError(f"{label}: {page.num_candidates:,} candidates are too many to embed in one page "
                          f"(limit {max_embed:,}): use `hardneg inspect --serve`")
    details = page.details()
    data = page.head(label) | {"details": details, "docs": page.docs_of(details)}
    return page_html(data, f"hardneg inspect: {label}", cache_dir)


def inspect(run: str | Path | Run, out: str | Path | None = None, compare: str | Path | None = None,
            cache_dir: str | None = None, max_embed: int = MAX_EMBED) -> Path:
    """Write the inspector page of ``run`` (default ``RUN/inspect.html``) and return its path.

    Args:
        run: a run folder (or a loaded :class:`~hardneg.runs.run.Run`).
        out: the HTML file to write.
        compare: another run folder, or a sentence-transformers ``mine_hard_negatives`` output, to diff against.
        cache_dir: where the chart bundle is cached.
        max_embed: refuse runs with more candidates than this (use :func:`hardneg.inspect.serve.serve`).

    Example::

        hardneg.inspect("runs/scifact", compare="runs/scifact-nofilter")  # runs/scifact/inspect.html
    """
    page = load_page(run, compare)
    label = str(page.run.path or "run")
    path = Path(out) if out else Path(page.run.path or ".") / "inspect.html"
    return write_text(path, static_page(page, label, cache_dir, max_embed))
