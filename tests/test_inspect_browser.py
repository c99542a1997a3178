"""The inspector page in a real headless chromium (selenium + the system chromedriver), on real SciFact
slice runs mined through the CLI: it loads with no console error and draws its charts, the search finds
a query, a reason filter shows only that reason's candidates, the compare view lists the changed
queries, a screenshot is not blank, crafted texts render as text, and the --serve page works.
Skipped, with the reason, where no chromium/chromedriver is installed
(``apt-get install -y chromium chromium-driver``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from inspect_helpers import browser, console_errors, mine, png_pixels, screenshot
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.decisions.filters import REASONS


@pytest.fixture(scope="module")
def driver() -> Any:
    d, why = browser()
    if d is None:
        pytest.skip(why)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def runs(slice_dir, cache_dir, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("inspect-runs")
    return (mine(slice_dir, tmp / "percpos", cache_dir, "percpos:0.95"),
            mine(slice_dir, tmp / "none", cache_dir, "none"))


@pytest.fixture(scope="module")
def compare_page(runs) -> Path:
    a, b = runs
    out = a.parent / "compare.html"
    res = CliRunner().invoke(app, ["inspect", str(a), "--compare", str(b), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def wait(driver: Any, script: str, timeout: float = 20.0) -> Any:
    """Poll ``script`` (a JS expression) until it is truthy."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def open_page(driver: Any, url: str) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    wait(driver, "document.body.getAttribute('data-ready') && document.getElementById('detail-title')")


def list_ids(driver: Any) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#qlist tr')].map(r => r.cells[0].textContent)")


def set_value(driver: Any, element_id: str, value: str) -> None:
    driver.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                          "e.dispatchEvent(new Event(e.type === 'search' ? 'input' : 'change'))", element_id, value)


def test_a_real_run_loads_searches_filters_and_draws(driver, runs, compare_page):
    a, _ = runs
    open_page(driver, compare_page.as_uri())
    # The four charts are drawn by vega-embed (SVG inside each chart div), with no console error.
    wait(driver, "document.querySelectorAll('.chart svg').length >= 4")
    assert console_errors(driver) == []
    neg = pq.read_table(a / "negatives.parquet")
    assert driver.execute_script("return document.querySelectorAll('#qlist tr').length") == min(50, neg.num_rows)

    # Search by text: a few words from the middle of a known query find it.
    qid = neg.column("query_id")[7].as_py()
    text = driver.execute_script("const D = JSON.parse(document.getElementById('hardneg-data').textContent);"
                                 "return D.index.text[D.index.id.indexOf(arguments[0])]", qid)
    words = " ".join(text.split()[1:4])
    set_value(driver, "search", words)
    ids = list_ids(driver)
    assert qid in ids and all(words.lower() in t.lower() for t in driver.execute_script(
        "return [...document.querySelectorAll('#qlist tr')].map(r => r.cells[1].textContent)"))
    set_value(driver, "search", qid)
    assert list_ids(driver)[0] == qid

    # A reason filter: only queries with a percpos drop are listed, and their candidates shown are only those.
    set_value(driver, "search", "")
    set_value(driver, "f-reason", "6")  # REASONS[6] == "percpos"
    cand = pq.read_table(a / "candidates.parquet")
    reasons = np.asarray(cand.column("reason").to_pylist(), dtype=object)
    with_percpos = set(np.asarray(cand.column("query_id").to_pylist())[reasons == "percpos"].tolist())
    assert with_percpos and set(list_ids(driver)) == with_percpos
    driver.execute_script("document.querySelector('#qlist tr').click()")
    shown = wait(driver, "document.querySelectorAll('#candidates tr.cand').length && "
                         "[...document.querySelectorAll('#candidates tr.cand')].map(r => r.dataset.reason)")
    assert shown and set(shown) == {"percpos"}
    first = list_ids(driver)[0]
    assert len(shown) == int(((reasons == "percpos") & (np.asarray(cand.column("query_id").to_pylist()) == first)).sum())

    # The compare view: the changed queries are those whose negatives differ between the two runs.
    b_neg = pq.read_table(runs[1] / "negatives.parquet")
    a_sets = dict(zip(neg.column("query_id").to_pylist(), map(set, neg.column("negative_ids").to_pylist())))
    changed = {q for q, ids in zip(b_neg.column("query_id").to_pylist(), b_neg.column("negative_ids").to_pylist())
               if set(ids) != a_sets[q]}
    assert changed  # percpos dropped some top candidates, so the unfiltered run picked others
    set_value(driver, "f-reason", "")
    driver.execute_script("const c = document.getElementById('f-changed'); c.checked = true;"
                          "c.dispatchEvent(new Event('change'))")
    assert set(list_ids(driver)) == changed
    assert f"{len(changed)} of {neg.num_rows} matched queries changed" in driver.find_element("id", "compare-counts").text
    driver.execute_script("document.querySelector('#qlist tr').click()")
    wait(driver, "document.getElementById('side-by-side')")
    sides = driver.execute_script("return [...document.querySelectorAll('#side-by-side .half')].map("
                                  "h => h.querySelectorAll('tr').length - 1)")
    assert sides == [4, 4]

    # A screenshot: not blank (many distinct colours, not one background).
    pixels = png_pixels(screenshot(driver))
    assert pixels.shape[0] > 100 and len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 20
    assert pixels.std() > 10
    assert console_errors(driver) == []


def crafted(tmp: Path) -> Path:
    """A BEIR folder whose texts try to break out of the page."""
    evil = ["</script><script>window.__pwned = 1</script>", "<img src=x onerror=\"window.__pwned=2\">",
            "quotes \" ' ` and &amp; &lt;b&gt;", "Ünïcødé — 東京 🙂 \u2028 line separator"]
    docs = [{"_id": f"d{i}", "title": "", "text": f"{t} cells proteins {i}"} for i, t in enumerate(evil * 3)]
    queries = [{"_id": "q<1>", "text": "cells proteins </script><b>bold</b> Ünï"},
               {"_id": "q2", "text": "proteins \" ' 東京"}]
    (tmp / "qrels").mkdir(parents=True)
    (tmp / "corpus.jsonl").write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n", "utf-8")
    (tmp / "queries.jsonl").write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in queries) + "\n", "utf-8")
    (tmp / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq<1>\td0\t1\nq2\td3\t1\n")
    return tmp


def test_texts_with_script_tags_quotes_and_non_ascii_render_as_text(driver, tmp_path, cache_dir):
    run = mine(crafted(tmp_path / "evil"), tmp_path / "run", cache_dir, "none", n=3)
    out = tmp_path / "evil.html"
    assert CliRunner().invoke(app, ["inspect", str(run), "--out", str(out)]).exit_code == 0
    assert "</script><script>window.__pwned" not in out.read_text("utf-8")
    open_page(driver, out.as_uri())
    assert driver.execute_script("return window.__pwned") is None
    assert driver.execute_script("return document.querySelectorAll('#detail b, #detail img').length") == 0
    assert list_ids(driver) == ["q2", "q<1>"]  # ids sorted: '2' < '<'
    set_value(driver, "search", "q<1>")
    assert list_ids(driver) == ["q<1>"]
    driver.execute_script("document.querySelector('#qlist tr').click()")
    wait(driver, "document.getElementById('detail-title').textContent === 'q<1>'")
    assert driver.find_element("css selector", "#detail .query").text == "cells proteins </script><b>bold</b> Ünï"
    texts = driver.execute_script("return [...document.querySelectorAll('#candidates td.text')].map(t => t.textContent)")
    assert "</script><script>window.__pwned = 1</script> cells proteins 4" in texts
    assert any(t.startswith("Ünïcødé — 東京 🙂 \u2028 line separator") for t in texts)
    assert any(t.startswith("quotes \" ' ` and &amp; &lt;b&gt;") for t in texts)
    assert console_errors(driver) == []


def test_an_audit_run_filters_by_outcome(driver, slice_dir, cache_dir, tmp_path):
    run = tmp_path / "audited"
    res = CliRunner().invoke(app, ["audit", "--dataset", str(slice_dir), "--split", "train", "--teacher", "bm25",
                                   "--filter", "percpos:0.95", "--num-negatives", "4", "--cache-dir", str(cache_dir),
                                   "--save-run", str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "audit.html"
    assert CliRunner().invoke(app, ["inspect", str(run), "--out", str(out)]).exit_code == 0
    open_page(driver, out.as_uri())
    set_value(driver, "f-audit", "3")  # hidden positive returned as a negative
    ids = list_ids(driver)
    hidden = json.loads((run / "manifest.json").read_text())["audit"]["hidden"]
    assert ids and set(ids) <= set(hidden["query_id"])
    for i in range(len(ids)):
        driver.execute_script("document.querySelectorAll('#qlist tr')[arguments[0]].click()", i)
        wait(driver, f"document.getElementById('detail-title').textContent === {json.dumps(ids[i])}")
        rows = driver.execute_script("return [...document.querySelectorAll('#candidates tr.hidden')].map("
                                     "r => [r.cells[1].textContent, r.className])")
        assert any(c == "cand selected hidden" for _, c in rows)
        assert {d for d, _ in rows} <= {d for q, d in zip(hidden["query_id"], hidden["doc_id"]) if q == ids[i]}
    assert console_errors(driver) == []


def test_a_similarity_drop_shows_its_value_threshold_and_nearest_positive(driver, evidence_run, tmp_path):
    """The reason filter ``near_positive`` lists its drops; each row's evidence cell names the cosine that
    reached the threshold and the positive it was near, as the candidates table stores them."""
    out = tmp_path / "evidence.html"
    assert CliRunner().invoke(app, ["inspect", str(evidence_run), "--out", str(out)]).exit_code == 0
    open_page(driver, out.as_uri())
    set_value(driver, "f-reason", str(REASONS.index("near_positive")))
    driver.execute_script("document.querySelector('#qlist tr').click()")
    qid = list_ids(driver)[0]
    wait(driver, f"document.getElementById('detail-title').textContent === {json.dumps(qid)}")
    shown = wait(driver, "document.querySelectorAll('#candidates tr.cand').length && [...document.querySelectorAll("
                         "'#candidates tr.cand')].map(r => [r.cells[1].textContent, r.querySelector('td.evidence').textContent])")
    cand = [c for c in pq.read_table(evidence_run / "candidates.parquet").to_pylist()
            if c["query_id"] == qid and c["reason"] == "near_positive"]
    assert len(shown) == len(cand) > 0
    for (doc, text), c in zip(shown, sorted(cand, key=lambda c: c["rank"])):
        assert doc == c["doc_id"]
        assert (f"near_positive {c['similarity_near_positive']:.4f} ≥ 0.5 to {c['nearest_positive_near_positive']}"
                in text), text
        assert f"near_duplicate {c['similarity_near_duplicate']:.4f} < 0.005" in text
    assert console_errors(driver) == []


def test_the_served_page_fetches_each_query(driver, runs):
    from hardneg.inspect.page import load_page
    from hardneg.inspect.serve import start

    server = start(load_page(runs[0]), "served", port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
        open_page(driver, f"http://127.0.0.1:{server.server_port}/")
        assert driver.execute_script("return JSON.parse(document.getElementById('hardneg-data').textContent).details"
                                     ) is None  # nothing embedded: the details come from the server
        driver.execute_script("document.querySelectorAll('#qlist tr')[3].click()")
        qid = list_ids(driver)[3]
        wait(driver, f"document.getElementById('detail-title').textContent === {json.dumps(qid)}")
        rows = driver.execute_script("return document.querySelectorAll('#candidates tr.cand').length")
        cand = pq.read_table(runs[0] / "candidates.parquet")
        assert rows == cand.column("query_id").to_pylist().count(qid)
        assert console_errors(driver) == []
    finally:
        server.shutdown()


def test_the_report_draws_its_charts_and_links_the_run_inspector(driver, runs, tmp_path):
    """A report over an experiment folder holding a real mined run; the cells' scores are made up here (the
    real grid, trained, is tests/test_train_experiment.py's): every chart is drawn, the link opens the
    run's inspector page."""
    import shutil

    from hardneg.evaluation.retrieval import Evaluation
    from hardneg.experiment.config import ExperimentConfig
    from hardneg.experiment.report import report
    from hardneg.experiment.results import summarise

    qids = pq.read_table(runs[0] / "negatives.parquet").column("query_id").to_pylist()

    def cell(shift: float) -> Evaluation:
        pq_ = {q: float(np.clip(0.5 + shift + 0.3 * np.sin(i * (1 + shift)), 0, 1)) for i, q in enumerate(qids)}
        return Evaluation({"ndcg@10": float(np.mean(list(pq_.values()))), "recall@100": 0.9, "mrr@10": 0.5},
                          {"ndcg@10": pq_}, len(qids), {"train_steps": 3})
    cfg = ExperimentConfig(dataset="d", baseline="st", permutations=199,
                           variants=[{"name": "st", "kind": "st"}, {"name": "mined"}])
    cells = {"st": [cell(0.0)], "mined": [cell(0.05)]}
    res = summarise(cfg, cell(-0.1), cells)
    exp = tmp_path / "exp"
    for name, evals in cells.items():
        folder = exp / "variants" / name / "seed-0"
        evals[0].save_per_query(folder / "per_query.jsonl")
        (folder / "metrics.json").write_text(json.dumps(evals[0].as_json()))
        (folder / "model").mkdir()
        (folder / "model" / "hardneg_train.json").write_text(json.dumps(
            {"loss_log": [{"step": s, "loss": 2.0 / s} for s in (1, 2, 3)]}))
    shutil.copytree(runs[0], exp / "variants" / "mined" / "run")
    (exp / "results.json").write_text(json.dumps(res))
    page = report(exp)
    open_url = page.as_uri()
    driver.get_log("browser")
    driver.get(open_url)
    # Δ with CIs, the win/loss scatter, the training curves, the mined run's histogram: four charts.
    wait(driver, "document.querySelectorAll('.chart svg').length === 4")
    assert driver.find_element("css selector", "p.wl").text.startswith("mined: ")
    assert console_errors(driver) == []
    href = driver.find_element("css selector", "a.inspect").get_attribute("href")
    assert href.endswith("variants/mined/run/inspect.html")
    driver.find_element("css selector", "a.inspect").click()
    wait(driver, "document.body.getAttribute('data-ready') && document.getElementById('detail-title')")
    assert driver.find_element("id", "detail-title").text == qids[0]
    assert console_errors(driver) == []
