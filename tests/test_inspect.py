"""The inspector's data, compare and server without a browser, on real SciFact slice runs: the page data
agrees with the run's parquet tables, a sentence-transformers ``mine_hard_negatives`` output is matched
to ids by text, a run too big to embed is refused with the way out, texts cannot close the data's
script element, and the server answers on 127.0.0.1 only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from inspect_helpers import mine
from typer.testing import CliRunner

from hardneg import plots
from hardneg.cli import app
from hardneg.decisions.filters import REASONS
from hardneg.errors import ConfigError
from hardneg.inspect import compare, load_page, static_page
from hardneg.inspect.serve import start


@pytest.fixture(scope="module")
def runs(slice_dir, cache_dir, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("inspect-data")
    return (mine(slice_dir, tmp / "percpos", cache_dir, "percpos:0.95"),
            mine(slice_dir, tmp / "none", cache_dir, "none"))


def test_the_page_data_agrees_with_the_run_tables(runs):
    page = load_page(runs[0])
    cand = pq.read_table(runs[0] / "candidates.parquet").to_pylist()
    neg = pq.read_table(runs[0] / "negatives.parquet").to_pylist()
    index = page.query_index()
    assert index["id"] == [r["query_id"] for r in neg] and page.num_candidates == len(cand)
    details = page.details()
    for i, (r, d) in enumerate(zip(neg, details)):
        mine_rows = sorted((c for c in cand if c["query_id"] == r["query_id"]), key=lambda c: c["rank"])
        assert d["cand"]["rank"] == [c["rank"] for c in mine_rows]
        assert [page.col.doc_ids[k] for k in d["cand"]["doc"]] == [c["doc_id"] for c in mine_rows]
        assert [REASONS[x] for x in d["cand"]["reason"]] == [c["reason"] for c in mine_rows]
        assert d["cand"]["status"] == [c["kept"] + c["selected"] for c in mine_rows]
        assert d["cand"]["scores"]["bm25"] == [round(c["score_bm25"], 4) for c in mine_rows]
        assert [page.col.doc_ids[k] for k in d["pos"]["doc"]] == r["positive_ids"]
        assert d["pos"]["scores"]["bm25"] == [round(s, 4) for s in r["positive_scores"]]
        reasons = {REASONS[b] for b in range(len(REASONS)) if index["reasons"][i] >> b & 1}
        assert reasons == {c["reason"] for c in mine_rows}
        assert index["selected"][i] == 4 - r["shortfall"]
    assert [c["id"] for c in page.charts()] == ["chart-scores", "chart-ranks", "chart-margin", "chart-reasons"]
    json.dumps(page.head("x"), allow_nan=False)  # the page's JSON is strict (no NaN)


def test_compare_with_a_sentence_transformers_output_matches_ids_by_text(runs, scifact_slice, static_model, tmp_path):
    """A real ``mine_hard_negatives`` output (n-tuple) of the same slice, as parquet, jsonl and a datasets
    folder: every query is found by its text, every negative by its document text."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    col = scifact_slice
    pos = col.positives()
    ds = Dataset.from_dict({"anchor": [col.query_texts[i] for i in pos.query_idx],
                            "positive": [col.doc_texts[i] for i in pos.doc_idx]})
    st = mine_hard_negatives(ds, SentenceTransformer(static_model), corpus=list(col.doc_texts), num_negatives=3,
                             output_format="n-tuple", batch_size=64, verbose=False)
    st.to_parquet(str(tmp_path / "st.parquet"))
    st.to_json(str(tmp_path / "st.jsonl"))
    st.save_to_disk(str(tmp_path / "st-ds"))
    # Expected moves, computed here from the texts.
    doc_of = {t: str(col.doc_ids[i]) for i, t in reversed(list(enumerate(col.doc_texts)))}
    query_of = {t: str(col.query_ids[i]) for i, t in enumerate(col.query_texts)}
    want_b: dict[str, set[str]] = {}
    for row in st.to_list():
        want_b.setdefault(query_of[row["anchor"]], set()).update(doc_of[row[f"negative_{k}"]] for k in (1, 2, 3))
    a = pq.read_table(runs[0] / "negatives.parquet")
    want_a = dict(zip(a.column("query_id").to_pylist(), map(set, a.column("negative_ids").to_pylist())))
    changed = {q for q in want_b if want_b[q] != want_a[q]}
    added = sum(len(want_b[q] - want_a[q]) for q in want_b)
    for other in ("st.parquet", "st.jsonl", "st-ds"):
        page = load_page(runs[0])
        c = compare(page, tmp_path / other)
        assert c["kind"] == "sentence-transformers output" and c["unmatched_other"] == 0 and c["extra"] == []
        assert c["matched"] == len(want_b) and c["changed"] == len(changed) and c["totals"]["added"] == added
        ids = page.query_index()["id"]
        assert {ids[r] for r in c["per_query"]} == changed


def test_a_run_too_big_to_embed_is_refused_with_the_way_out(runs, tmp_path):
    page = load_page(runs[0])
    with pytest.raises(ConfigError, match="use `hardneg inspect --serve`"):
        static_page(page, "big", max_embed=page.num_candidates - 1)
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "run folder not found" in res.output


def test_data_in_a_script_element_cannot_close_it():
    text = plots.script_json({"t": "</script><!-- <script> & \u2028 Ünï"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"t": "</script><!-- <script> & \u2028 Ünï"}


def test_the_server_answers_on_loopback(runs):
    page = load_page(runs[0], compare=runs[1])
    server = start(page, "served")
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        d = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/query/2", timeout=10).read())
        assert d["cand"] == page.details(np.array([2]))[0]["cand"]
        assert set(d["docs"]["text"]) >= {str(k) for k in d["cand"]["doc"]}
        html = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert 'id="hardneg-data"' in html and "vegaEmbed" in html
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/query/{page.num_queries}", timeout=10)
    finally:
        server.shutdown()


def test_an_audit_run_shows_what_became_of_each_hidden_positive(slice_dir, cache_dir, tmp_path):
    """``hardneg audit --save-run``: the page's outcomes agree with the audit's own counts."""
    out = tmp_path / "audited"
    res = CliRunner().invoke(app, ["audit", "--dataset", str(slice_dir), "--split", "train", "--teacher", "bm25",
                                   "--filter", "percpos:0.95", "--num-negatives", "4", "--cache-dir", str(cache_dir),
                                   "--save-run", str(out), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output.strip().splitlines()[-1])
    page = load_page(out)
    assert page.cand_hidden is not None
    final = result["stages"][-1]
    assert int((page.cand_hidden & (page.cand_status == 2)).sum()) == final["returned_hidden"] > 0
    assert int((page.cand_hidden & (page.cand_status == 0)).sum()) >= 1  # percpos caught one here
    outcome = page.audit_outcomes()
    assert int((outcome > 0).sum()) == result["queries"]
    qrow = np.repeat(np.arange(page.num_queries), np.diff(page.cand_off))
    assert set(np.nonzero(outcome == 3)[0]) == set(qrow[page.cand_hidden & (page.cand_status == 2)].tolist())
    assert page.query_index()["audit"] == outcome.tolist()


def test_inspect_serve_through_the_command(runs):
    """``hardneg inspect RUN --serve --port 0`` prints its loopback address and serves the page there."""
    import os
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "hardneg", "inspect", str(runs[0]), "--serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"serving {runs[0]} at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert 'id="hardneg-data"' in page
        d = json.loads(urllib.request.urlopen(url + "api/query/0", timeout=30).read())
        first = pq.read_table(runs[0] / "negatives.parquet").column("query_id")[0].as_py()
        assert len(d["cand"]["doc"]) == pq.read_table(runs[0] / "candidates.parquet").column(
            "query_id").to_pylist().count(first)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_similarity_drops_carry_their_evidence_from_the_miner_to_the_page(evidence_run, scifact_slice):
    """A candidate dropped by ``near_duplicate`` / ``near_positive`` keeps the similarity that dropped it
    and the positive it was near: recomputed from the texts (Jaccard) and the embeddings (cosine), it is
    the highest over the query's positives and reaches the threshold; kept candidates stay below both."""
    from sentence_transformers import SentenceTransformer

    from hardneg.decisions.similarity import pair_jaccard, shingle_matrix
    from hardneg.runs.fingerprint import default_model_path

    cand = pq.read_table(evidence_run / "candidates.parquet").to_pylist()
    neg = {r["query_id"]: r["positive_ids"] for r in pq.read_table(evidence_run / "negatives.parquet").to_pylist()}
    col = scifact_slice
    dropped = {k: [c for c in cand if c["reason"] == k] for k in ("near_duplicate", "near_positive")}
    assert dropped["near_duplicate"] and dropped["near_positive"]  # both rules fired on this slice
    docs = sorted({c["doc_id"] for c in cand} | {p for ps in neg.values() for p in ps})
    text = {d: col.doc_texts[i] for d, i in zip(docs, col.doc_index(docs).tolist())}
    m = shingle_matrix([text[d] for d in docs])
    row = {d: i for i, d in enumerate(docs)}
    vec = SentenceTransformer(default_model_path(), device="cpu").encode([text[d] for d in docs],
                                                                        normalize_embeddings=True)
    for c in cand:
        if c["reason"] == "positive":
            assert c["similarity_near_duplicate"] is None and c["nearest_positive_near_duplicate"] is None
            continue
        pos = neg[c["query_id"]]
        jac = pair_jaccard(m, np.full(len(pos), row[c["doc_id"]]), np.array([row[p] for p in pos]))
        cos = vec[[row[p] for p in pos]] @ vec[row[c["doc_id"]]]
        assert c["similarity_near_duplicate"] == pytest.approx(jac.max())
        assert c["nearest_positive_near_duplicate"] == pos[int(np.argmax(jac))]
        assert c["similarity_near_positive"] == pytest.approx(cos.max(), abs=1e-2)
        assert c["nearest_positive_near_positive"] in pos
        assert cos[pos.index(c["nearest_positive_near_positive"])] == pytest.approx(cos.max(), abs=1e-2)
        if c["reason"] == "near_duplicate":
            assert c["similarity_near_duplicate"] >= 0.005
        elif c["reason"] == "near_positive":
            assert c["similarity_near_duplicate"] < 0.005 and c["similarity_near_positive"] >= 0.5
        elif c["kept"]:
            assert c["similarity_near_duplicate"] < 0.005 and c["similarity_near_positive"] < 0.5
    # (the miner encodes with the fast encoder path, OpenVINO here, so cosines differ in the third decimal)
    # The page carries the same evidence, names the nearest positive among its documents, and the thresholds.
    page = load_page(evidence_run)
    head = page.head("x")
    assert head["evidence"] == {"near_duplicate": {"label": "word-shingle Jaccard", "threshold": 0.005},
                                "near_positive": {"label": "cosine", "threshold": 0.5}}
    details = page.details()
    docs_page = page.docs_of(details)
    by_query = {}
    for c in cand:
        by_query.setdefault(c["query_id"], []).append(c)
    for qid, d in zip(head["index"]["id"], details):
        rows = sorted(by_query[qid], key=lambda c: c["rank"])
        assert d["cand"]["similarity"]["near_positive"] == [
            None if c["similarity_near_positive"] is None else round(c["similarity_near_positive"], 4) for c in rows]
        assert [None if k < 0 else docs_page["id"][str(k)] for k in d["cand"]["nearest"]["near_duplicate"]] == [
            c["nearest_positive_near_duplicate"] for c in rows]
