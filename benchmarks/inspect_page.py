"""Weight and speed of the inspector page: the HTML size and the time to first render in headless
chromium, for a real SciFact train run and for a synthetic run of 100k queries (static page and --serve),
and the two chart libraries considered (Vega-Lite via altair and vl-convert, plotly) on the same charts.

Run: python benchmarks/inspect_page.py [--run RUN_DIR | --teacher bm25] [--queries 100000] [--cache-dir DIR]
Without --run it mines SciFact train (../shared/data/scifact, --teacher, depth 100, --filter [percpos:0.95], 4 negatives).
Needs chromium and chromedriver (apt-get install -y chromium chromium-driver) and selenium.
"First render": from navigation start to the query list and the first query's detail drawn ("ready"),
and to every chart drawn ("charts"), read from performance.now() in the page; best of --repeat loads.
A small check: python benchmarks/inspect_page.py --teacher bm25 --queries 2000 --repeat 1"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from inspect_helpers import browser

import hardneg
from hardneg import plots
from hardneg.collection import Collection, Qrels
from hardneg.decisions.filters import REASONS
from hardneg.inspect.data import PageData
from hardneg.inspect.page import static_page
from hardneg.inspect.serve import start
from hardneg.runs.run import Run

DATA = Path(os.environ.get("HARDNEG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_times(driver, url: str, repeat: int) -> dict[str, float]:
    """Best (ready, charts) milliseconds over ``repeat`` loads of ``url``."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        driver.get("about:blank")
        driver.get(url)
        end = time.monotonic() + 300
        times = None
        while time.monotonic() < end:
            times = driver.execute_script("return window.hardnegTimes && window.hardnegTimes.charts !== undefined"
                                          " && document.getElementById('detail-title') ? window.hardnegTimes : null")
            if times:
                break
            time.sleep(0.05)
        if not times:
            raise SystemExit(f"{url}: the page did not finish rendering in 300 s")
        for k, v in times.items():
            best[k] = min(best.get(k, float("inf")), float(v))
    return best


def synthetic_run(num_queries: int, per_query: int, seed: int = 0) -> Run:
    """A run of ``num_queries`` queries with ``per_query`` candidates each over a corpus of short texts,
    built as arrays (no mining): what the page would show for a run that size."""
    rng = np.random.default_rng(seed)
    num_docs = max(1000, num_queries * 2)
    words = np.array(["cell", "protein", "gene", "mouse", "tumour", "dose", "trial", "risk", "model", "blood", "brain", "liver", "virus"])
    doc_texts = [" ".join(w) for w in words[rng.integers(0, words.size, (num_docs, 40))].tolist()]
    doc_ids = np.array([f"d{i:08d}" for i in range(num_docs)])
    query_ids = np.array([f"q{i:08d}" for i in range(num_queries)])
    query_texts = [" ".join(w) for w in words[rng.integers(0, words.size, (num_queries, 8))].tolist()]
    qrels = Qrels(np.arange(num_queries), rng.integers(0, num_docs, num_queries), np.ones(num_queries, np.int64))
    col = Collection(doc_ids, doc_texts, query_ids, query_texts, qrels)
    n = num_queries * per_query
    q = np.repeat(np.arange(num_queries), per_query)
    rank = np.tile(np.arange(1, per_query + 1), num_queries)
    score = np.sort(rng.random((num_queries, per_query)), axis=1)[:, ::-1].ravel()
    reason = np.where(rng.random(n) < 0.1, 6, 0).astype(np.int32)
    kept = reason == 0
    selected = kept & (rank <= 8) & (np.cumsum(kept.reshape(num_queries, -1), axis=1).ravel() <= 4)
    docs = rng.integers(0, num_docs, n)
    candidates = pa.table({
        "query_id": pa.array(query_ids[q]), "doc_id": pa.array(doc_ids[docs]), "rank": pa.array(rank, pa.int32()),
        "score_dense": pa.array(score), "kept": pa.array(kept), "selected": pa.array(selected),
        "reason": pa.DictionaryArray.from_arrays(pa.array(reason), pa.array(list(REASONS)))})
    sel_n = selected.reshape(num_queries, -1).sum(axis=1)
    off = np.concatenate([[0], np.cumsum(sel_n)]).astype(np.int32)
    one = np.arange(num_queries + 1, dtype=np.int32)
    negatives = pa.table({
        "query_id": pa.array(query_ids), "positive_ids": pa.ListArray.from_arrays(pa.array(one), pa.array(doc_ids[qrels.doc_idx])),
        "positive_grades": pa.ListArray.from_arrays(pa.array(one), pa.array(np.ones(num_queries, np.int32))),
        "positive_scores": pa.ListArray.from_arrays(pa.array(one), pa.array(np.full(num_queries, 0.9))),
        "negative_ids": pa.ListArray.from_arrays(pa.array(off), pa.array(doc_ids[docs[selected]])),
        "shortfall": pa.array(4 - sel_n, pa.int32())})
    manifest = {"filter_on": "dense", "config": {"num_negatives": 4}, "synthetic": True}
    return Run(negatives, candidates, manifest, Path(f"synthetic-{num_queries}"), col)


def library_pages(page: PageData, out: Path) -> dict[str, Path]:
    """The same four charts in a page with Vega-Lite (the bundle hardneg uses) and one with plotly."""
    charts = page.charts()
    vega = out / "charts-vega.html"
    embeds = ",".join(f'vegaEmbed("#{c["id"]}",{plots.script_json(c["spec"])},{{actions:false,renderer:"svg"}})'
                      for c in charts)
    vega.write_text("<!doctype html><meta charset=utf-8><script>" + plots.vega_bundle() + "</script><body>"
                    + "".join(f'<div id="{c["id"]}"></div>' for c in charts)
                    + f"<script>window.hardnegTimes={{ready:performance.now()}};Promise.all([{embeds}]).then(()=>"
                    "{window.hardnegTimes.charts=performance.now()})</script><h2 id=detail-title>x</h2>", "utf-8")
    pages = {"vega-lite (altair + vl-convert)": vega}
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        return pages
    traces = []
    for c in charts:
        data = c["spec"].get("data", {}).get("values") or c["spec"]["layer"][0]["data"]["values"]
        groups: dict[str, dict[str, list]] = {}
        for r in data:
            g = groups.setdefault(r.get("group", r.get("label", "")), {"x": [], "y": []})
            g["x"].append(r.get("x", r.get("label")))
            g["y"].append(r.get("y", r.get("value")))
        traces.append([{"type": "bar", "name": k, "x": v["x"], "y": v["y"], "opacity": 0.5} for k, v in groups.items()])
    body = "".join(f'<div id="p{i}" style="width:600px;height:300px"></div>' for i in range(len(traces)))
    plot = ",".join(f"Plotly.newPlot('p{i}',{json.dumps(t)},{{barmode:'overlay'}})" for i, t in enumerate(traces))
    plotly = out / "charts-plotly.html"
    plotly.write_text("<!doctype html><meta charset=utf-8><script>" + get_plotlyjs() + "</script><body>" + body
                      + f"<script>window.hardnegTimes={{ready:performance.now()}};Promise.all([{plot}]).then(()=>"
                      "{window.hardnegTimes.charts=performance.now()})</script><h2 id=detail-title>x</h2>", "utf-8")
    pages["plotly"] = plotly
    return pages


def size(path: Path) -> str:
    raw = path.read_bytes()
    return f"{len(raw) / 1e6:.2f} MB ({len(gzip.compress(raw, 6)) / 1e6:.2f} MB gzipped)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None, help="a mined SciFact train run folder (default: mine one)")
    ap.add_argument("--teacher", default="dense")
    ap.add_argument("--filter", default="percpos:0.95", help="e.g. cascade: the similarity rules' evidence is on the page")
    ap.add_argument("--no-synthetic", action="store_true", help="the SciFact page only (no 100k run, no library pages)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--queries", type=int, default=100_000, help="queries of the synthetic run")
    ap.add_argument("--per-query", type=int, default=20, help="candidates per synthetic query")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    driver, why = browser()
    if driver is None:
        raise SystemExit(why)
    out = Path(tempfile.mkdtemp(prefix="inspect-bench-"))
    print(f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"date {date.today()}; best of {args.repeat} loads in headless chromium\n")
    print("| page | queries | candidates | build s | HTML | ready ms | charts ms |\n|---|---:|---:|---:|---|---:|---:|")
    try:
        if args.run:
            run = Run.load(args.run)
        else:
            run = hardneg.mine(DATA / "scifact", split="train", teacher=args.teacher, filter=args.filter,
                               num_negatives=4, cache_dir=args.cache_dir, out=str(out / "scifact-run"))
        rows = [(f"{args.run or 'SciFact train'} ({args.filter}), static", run)]
        if not args.no_synthetic:
            rows.append((f"synthetic {args.queries:,} queries, static", None))
        for label, r in rows:
            r = r or synthetic_run(args.queries, args.per_query)
            t0 = time.perf_counter()
            page = PageData.build(r)
            path = out / f"{len(label)}.html"
            path.write_text(static_page(page, label, args.cache_dir, max_embed=10**9), "utf-8")
            build = time.perf_counter() - t0
            t = load_times(driver, path.as_uri(), args.repeat)
            print(f"| {label} | {page.num_queries:,} | {page.num_candidates:,} | {build:.1f} | {size(path)} | "
                  f"{t['ready']:.0f} | {t['charts']:.0f} |", flush=True)
            if r is not run:
                server = start(page, label)
                try:
                    url = f"http://127.0.0.1:{server.server_port}/"
                    served = out / "served.html"
                    import urllib.request

                    served.write_bytes(urllib.request.urlopen(url, timeout=60).read())
                    t = load_times(driver, url, args.repeat)
                    print(f"| synthetic {args.queries:,} queries, --serve | {page.num_queries:,} | "
                          f"{page.num_candidates:,} | - | {size(served)} | {t['ready']:.0f} | {t['charts']:.0f} |")
                finally:
                    server.shutdown()
        if args.no_synthetic:
            return
        print("\n| chart library (the SciFact page's 4 charts) | HTML | ready ms | charts ms |\n|---|---|---:|---:|")
        for name, path in library_pages(PageData.build(run), out).items():
            t = load_times(driver, path.as_uri(), args.repeat)
            print(f"| {name} | {size(path)} | {t['ready']:.0f} | {t['charts']:.0f} |")
    finally:
        driver.quit()
    print(f"\npages in {out}")


if __name__ == "__main__":
    main()
