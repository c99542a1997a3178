"""Exporters: every format carries the run's ids as the right texts, and nothing else."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hardneg
from hardneg.export import st_table


@pytest.fixture(scope="module")
def run(scifact_slice, cache_dir):
    return hardneg.mine(scifact_slice, teacher="bm25", filter="percpos:0.95", num_negatives=3,
                        cache_dir=str(cache_dir))


def text_of(col, doc_id):
    return col.doc_texts[int(col.doc_index([doc_id])[0])]


def test_triplet_and_ntuple(run, scifact_slice):
    rows = run.negatives.to_pylist()
    trip = st_table(run, "triplet", with_scores=True).to_pylist()
    assert len(trip) == sum(len(r["positive_ids"]) * len(r["negative_ids"]) for r in rows)
    first = rows[0]
    q_text = scifact_slice.query_texts[int(scifact_slice.query_index([first["query_id"]])[0])]
    mine_rows = [t for t in trip if t["anchor"] == q_text]
    assert {t["negative"] for t in mine_rows} == {text_of(scifact_slice, d) for d in first["negative_ids"]}
    assert {t["positive"] for t in mine_rows} == {text_of(scifact_slice, d) for d in first["positive_ids"]}
    assert all(len(t["score"]) == 2 for t in trip)

    nt = st_table(run, "n-tuple", with_scores=True)
    full = [r for r in rows if r["shortfall"] == 0]
    assert nt.num_rows == sum(len(r["positive_ids"]) for r in full)
    assert nt.column_names[-1] == "score" and len(nt.column("score")[0].as_py()) == 4
    r0 = nt.slice(0, 1).to_pylist()[0]
    assert r0["score"][1] == pytest.approx(full[0]["negative_scores"][0])


def test_labeled_formats_and_dataset(run):
    rows = run.negatives.to_pylist()
    lp = st_table(run, "labeled-pair").to_pylist()
    assert sum(r["label"] for r in lp) == sum(len(r["positive_ids"]) for r in rows)
    assert len(lp) - sum(r["label"] for r in lp) == sum(len(r["negative_ids"]) for r in rows)
    ll = st_table(run, "labeled-list", with_scores=True).to_pylist()
    assert len(ll) == len(rows)
    assert all(len(r["docs"]) == len(r["labels"]) == len(r["scores"]) for r in ll)
    ds = hardneg.to_dataset(run, "n-tuple")
    assert ds.column_names[:3] == ["anchor", "positive", "negative_1"]


def test_flagembedding_and_tevatron_files(run, tmp_path, scifact_slice):
    run.save(tmp_path / "run")
    loaded = hardneg.Run.load(tmp_path / "run")
    hardneg.export(loaded, "flagembedding", tmp_path / "fe.jsonl")
    fe = [json.loads(line) for line in (tmp_path / "fe.jsonl").read_text().splitlines()]
    assert len(fe) == run.negatives.num_rows
    assert set(fe[0]) == {"query", "pos", "neg", "pos_scores", "neg_scores"}
    assert len(fe[0]["neg"]) == len(fe[0]["neg_scores"])
    hardneg.export(loaded, "tevatron", tmp_path / "tev")
    train = [json.loads(x) for x in (tmp_path / "tev" / "train.jsonl").read_text().splitlines()]
    corpus = {json.loads(x)["docid"] for x in (tmp_path / "tev" / "corpus.jsonl").read_text().splitlines()}
    assert corpus == set(scifact_slice.doc_ids.tolist())
    assert all(set(t["negative_document_ids"]) <= corpus for t in train)
    hardneg.export(loaded, "triplet", tmp_path / "trip.jsonl")
    first = json.loads((tmp_path / "trip.jsonl").read_text().splitlines()[0])
    assert set(first) == {"anchor", "positive", "negative"}


def test_run_reload_checks_data(run, tmp_path, scifact_slice):
    """A saved run reloads its collection from the manifest (the slice has no path: it is given)."""
    run.save(tmp_path / "r")
    loaded = hardneg.Run.load(tmp_path / "r")
    assert loaded.negatives.equals(run.negatives)
    assert loaded.manifest["counts"] == run.manifest["counts"]
    assert np.isclose(loaded.coverage, run.coverage)
