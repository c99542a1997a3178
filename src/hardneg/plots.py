"""Charts for the HTML pages (``hardneg inspect``, ``hardneg report``): Vega-Lite specs built with
altair from pre-aggregated arrays, rendered in the page by the vega-embed bundle that vl-convert
ships, inlined, so a page works from ``file://`` with no network.

Why Vega-Lite over plotly: the inlined bundle is 0.9 MB against plotly.min.js's 4.8 MB, and a chart
spec carries only the few binned numbers it draws (see docs/benchmarks.md for the page sizes and
times to first render measured with headless chromium).

Example::

    spec = histogram_chart({"positives": (edges, counts)}, "score", "share")
    html = f"<script>{vega_bundle()}</script>" + embed("chart-1", spec)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .runs.files import write_text
from .runs.fingerprint import env_cache_dir

GROUP_COLORS = {"positives": "#2b8a3e", "selected": "#1c7ed6", "kept_not_selected": "#74c0fc"}
WIDTH = 420


def _altair() -> Any:
    import altair as alt

    return alt


@functools.lru_cache(maxsize=1)
def vega_bundle(cache_dir: str | None = None) -> str:
    """The vega + vega-lite + vega-embed JavaScript (defines ``vegaEmbed``), for the Vega-Lite version
    altair writes. vl-convert bundles it on first use (a few seconds); it is kept in the cache."""
    from importlib.metadata import version as package_version

    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    version = vl_version_for_vl_convert()
    name = f"vega-embed-{package_version('vl-convert-python')}-{version}.js"
    path = Path(env_cache_dir(cache_dir)) / "vega" / name
    if path.exists():
        return path.read_text(encoding="utf-8")
    text = str(vlc.javascript_bundle(vl_version=version))  # type: ignore[call-arg]  # the snippet is optional
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
    return text


def script_json(obj: Any) -> str:
    """JSON safe to put inside a ``<script>`` element: ``<``, ``>`` and ``&`` are written as
    ``\\u003c``-style escapes, so no text in the data can close the element or open a comment."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def embed(div_id: str, spec: Mapping[str, Any]) -> str:
    """A ``<div>`` and the script that renders ``spec`` into it (the bundle must be loaded before)."""
    return (f'<div class="chart" id="{div_id}"></div><script>vegaEmbed("#{div_id}", {script_json(spec)}, '
            '{"actions": false, "renderer": "svg"}).catch(function (e) { console.error(e); });</script>')


def _spec(chart: Any) -> dict[str, Any]:
    return dict(chart.to_dict())


def histogram_chart(groups: Mapping[str, tuple[np.ndarray, np.ndarray]], x_title: str, y_title: str = "share",
                    title: str = "", normalise: bool = True) -> dict[str, Any]:
    """Step lines of binned counts, one line per group: ``{group: (edges, counts)}``; shares of each
    group's total when ``normalise``, so groups of very different sizes can be compared."""
    alt = _altair()
    rows = []
    for name, (edges, counts) in groups.items():
        c = np.asarray(counts, dtype=float)
        y = c / c.sum() if normalise and c.sum() else c
        for lo, hi, v, n in zip(edges[:-1], edges[1:], y, c):
            rows.append({"group": name, "x": round(float(lo), 6), "x2": round(float(hi), 6),
                         "y": round(float(v), 6), "n": int(n)})
    names = list(groups)
    colors = [GROUP_COLORS.get(n, _reason_color(i)) for i, n in enumerate(names)]
    chart = alt.Chart(alt.Data(values=rows), title=title).mark_bar(opacity=0.45, binSpacing=0).encode(
        x=alt.X("x:Q", bin="binned", title=x_title),
        x2="x2:Q",
        y=alt.Y("y:Q", title=y_title, stack=None),
        color=alt.Color("group:N", scale=alt.Scale(domain=names, range=colors), legend=alt.Legend(title=None)),
        tooltip=["group:N", alt.Tooltip("x:Q", format=".3f"), alt.Tooltip("y:Q", format=".3f"), "n:Q"],
    ).properties(width=WIDTH, height=170)
    return _spec(chart)


def _reason_color(i: int) -> str:
    palette = ("#e8590c", "#c92a2a", "#862e9c", "#5f3dc4", "#087f5b", "#e67700", "#495057", "#a61e4d")
    return palette[i % len(palette)]


def bar_chart(labels: Sequence[str], values: Sequence[float], x_title: str, y_title: str = "",
              title: str = "") -> dict[str, Any]:
    """Horizontal bars with the value at the end of each bar."""
    alt = _altair()
    rows = [{"label": str(k), "value": float(v)} for k, v in zip(labels, values)]
    base = alt.Chart(alt.Data(values=rows), title=title).encode(
        y=alt.Y("label:N", sort=None, title=y_title), x=alt.X("value:Q", title=x_title))
    chart = base.mark_bar(color="#e8590c") + base.mark_text(align="left", dx=3).encode(text="value:Q")
    return _spec(chart.properties(width=WIDTH, height=max(18 * len(rows), 40)))


def interval_chart(labels: Sequence[str], values: Sequence[float], low: Sequence[float | None],
                   high: Sequence[float | None], x_title: str, title: str = "") -> dict[str, Any]:
    """A point per label with its confidence interval as a rule, and a rule at zero."""
    alt = _altair()
    rows = [{"label": str(k), "value": float(v), "low": None if lo is None else float(lo),
             "high": None if hi is None else float(hi)} for k, v, lo, hi in zip(labels, values, low, high)]
    base = alt.Chart(alt.Data(values=rows)).encode(y=alt.Y("label:N", sort=None, title=None))
    ci = base.mark_rule(strokeWidth=2, color="#495057").encode(x=alt.X("low:Q", title=x_title), x2="high:Q")
    point = base.mark_point(filled=True, size=70).encode(
        x="value:Q", color=alt.condition("datum.value >= 0", alt.value("#2b8a3e"), alt.value("#c92a2a")),
        tooltip=["label:N", alt.Tooltip("value:Q", format="+.4f"), alt.Tooltip("low:Q", format="+.4f"),
                 alt.Tooltip("high:Q", format="+.4f")])
    zero = alt.Chart(alt.Data(values=[{"z": 0}])).mark_rule(strokeDash=[4, 3], color="#868e96").encode(x="z:Q")
    chart = alt.layer(zero, ci, point, title=title).properties(width=WIDTH, height=max(24 * len(rows), 40))
    return _spec(chart)


def scatter_chart(rows: Sequence[Mapping[str, Any]], x: str, y: str, x_title: str, y_title: str,
                  color: str | None = None, title: str = "") -> dict[str, Any]:
    """Points with the diagonal y = x drawn under them (above it: y wins)."""
    alt = _altair()
    point = alt.Chart(alt.Data(values=list(rows))).mark_circle(size=28, opacity=0.6).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(domain=[0, 1])),
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(domain=[0, 1])),
        tooltip=[f"{k}:{'N' if isinstance(v, str) else 'Q'}" for k, v in (rows[0].items() if rows else [])],
        **({"color": alt.Color(f"{color}:N", legend=alt.Legend(title=None))} if color else {}))
    diag = alt.Chart(alt.Data(values=[{"a": 0, "b": 0}, {"a": 1, "b": 1}])).mark_line(
        color="#868e96", strokeDash=[4, 3]).encode(x="a:Q", y="b:Q")
    return _spec(alt.layer(diag, point, title=title).properties(width=260, height=260))


def line_chart(rows: Sequence[Mapping[str, Any]], x: str, y: str, color: str, x_title: str, y_title: str,
               title: str = "") -> dict[str, Any]:
    """Lines of ``y`` against ``x``, one per ``color`` value (e.g. training loss per step)."""
    alt = _altair()
    chart = alt.Chart(alt.Data(values=list(rows)), title=title).mark_line(point=True).encode(
        x=alt.X(f"{x}:Q", title=x_title), y=alt.Y(f"{y}:Q", title=y_title),
        color=alt.Color(f"{color}:N", legend=alt.Legend(title=None)), tooltip=[f"{color}:N", f"{x}:Q", f"{y}:Q"])
    return _spec(chart.properties(width=WIDTH, height=200))
