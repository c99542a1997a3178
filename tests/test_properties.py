"""Property tests for the invariants sentence-transformers' miner broke (ANCHORS.md §1.4), run
through the real pipeline: BEIR files on disk -> loader -> real model (packaged static embeddings,
fast enough for hypothesis) or BM25 -> filters -> sampler -> run folder."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hardneg
from hardneg.filters import FilterSpec

WORDS = ["protein", "cell", "cancer", "gene", "virus", "brain", "heart", "drug", "mouse", "human",
         "risk", "blood", "bone", "lung", "liver", "diet", "sleep", "fever"]
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def collections(draw):
    """A small BEIR collection. Short texts from a small vocabulary make exact duplicates and
    tied scores common, which is where miners go wrong."""
    n_docs = draw(st.integers(2, 30))
    docs = [" ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=5))) for _ in range(n_docs)]
    n_q = draw(st.integers(1, 5))
    queries = [" ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))) for _ in range(n_q)]
    qrels = []
    for q in range(n_q):
        pos = draw(st.lists(st.integers(0, n_docs - 1), min_size=1, max_size=min(3, n_docs), unique=True))
        qrels += [(q, d, draw(st.integers(1, 3))) for d in pos]
    return docs, queries, qrels


def write(root: Path, coll, shuffle_seed: int | None = None) -> Path:
    """Write the collection as BEIR files, optionally with lines (and positives) shuffled."""
    docs, queries, qrels = coll
    corpus = [json.dumps({"_id": f"d{i:03d}", "text": t}) for i, t in enumerate(docs)]
    qlines = [json.dumps({"_id": f"q{i}", "text": t}) for i, t in enumerate(queries)]
    rels = [f"q{q}\td{d:03d}\t{g}" for q, d, g in qrels]
    if shuffle_seed is not None:
        rng = random.Random(shuffle_seed)
        for lines in (corpus, qlines, rels):
            rng.shuffle(lines)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(qlines) + "\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rels) + "\n")
    return root


def mine_files(root: Path, cache: Path, **kw):
    kw.setdefault("num_negatives", 3)
    kw.setdefault("depth", 10)
    return hardneg.mine(root, cache_dir=str(cache), **kw)


@SETTINGS
@given(coll=collections(), flt=st.sampled_from(["none", "percpos:0.95", "margin:0.05", "maxscore:0.9"]))
def test_exact_and_faiss_flat_agree(static_model, cache_dir, coll, flt):
    with tempfile.TemporaryDirectory() as tmp:
        root = write(Path(tmp) / "d", coll)
        a = mine_files(root, cache_dir, teacher=f"dense:{static_model}", filter=flt, search="exact")
        b = mine_files(root, cache_dir, teacher=f"dense:{static_model}", filter=flt, search="faiss-flat")
    assert a.negatives.equals(b.negatives)
    assert a.candidates.equals(b.candidates)


@SETTINGS
@given(coll=collections(), teacher=st.sampled_from(["dense", "bm25"]),
       flt=st.sampled_from(["none", "percpos:0.95", "margin:0.05", "percpos:0.8+margin:0.02"]),
       sampler=st.sampled_from(["top", "random", "simans", "top1+sampled", "window:2-8"]))
def test_no_positive_and_margins_hold(static_model, cache_dir, coll, teacher, flt, sampler):
    with tempfile.TemporaryDirectory() as tmp:
        root = write(Path(tmp) / "d", coll)
        spec = f"dense:{static_model}" if teacher == "dense" else "bm25"
        run = mine_files(root, cache_dir, teacher=spec, filter=flt, sampler=sampler)
    col = run.collection()
    norm = {d: " ".join(t.casefold().split()) for d, t in zip(col.doc_ids, col.doc_texts)}
    rules = FilterSpec.parse(flt)
    for row in run.negatives.to_pylist():
        pos, neg = set(row["positive_ids"]), row["negative_ids"]
        assert not pos & set(neg)
        assert not {norm[d] for d in pos} & {norm[d] for d in neg}
        assert len(neg) + row["shortfall"] == 3 and len(set(neg)) == len(neg)
        if teacher == "dense" and neg:
            ref = min(row["positive_scores"])
            s = np.array(row["negative_scores"])
            for r in rules:
                limit = ref - r.value if r.kind == "margin" else ref - (1 - r.value) * abs(ref)
                assert (s <= limit).all()


@SETTINGS
@given(coll=collections(), shuffle=st.integers(0, 10**6),
       sampler=st.sampled_from(["top", "random", "simans"]))
def test_independent_of_input_order(static_model, cache_dir, coll, shuffle, sampler):
    with tempfile.TemporaryDirectory() as tmp:
        a = mine_files(write(Path(tmp) / "a", coll), cache_dir, teacher=f"dense:{static_model}", sampler=sampler)
        b = mine_files(write(Path(tmp) / "b", coll, shuffle), cache_dir, teacher=f"dense:{static_model}",
                       sampler=sampler)
    assert a.negatives.equals(b.negatives)
    assert a.candidates.equals(b.candidates)


@SETTINGS
@given(coll=collections(), seed=st.integers(0, 1000))
def test_same_seed_same_bytes_and_k_beyond_corpus(static_model, cache_dir, coll, seed):
    with tempfile.TemporaryDirectory() as tmp:
        root = write(Path(tmp) / "d", coll)
        kw = {"teacher": f"dense:{static_model}", "sampler": "random", "seed": seed, "depth": 1000, "num_negatives": 50}
        mine_files(root, cache_dir, out=str(Path(tmp) / "r1"), **kw)
        run = mine_files(root, cache_dir, out=str(Path(tmp) / "r2"), **kw)
        for f in ("negatives.parquet", "candidates.parquet"):
            assert (Path(tmp) / "r1" / f).read_bytes() == (Path(tmp) / "r2" / f).read_bytes()
    n_docs = len(coll[0])
    assert run.manifest["counts"]["candidates"] <= n_docs * len(coll[1])
    assert all(len(r["negative_ids"]) < n_docs for r in run.negatives.to_pylist())
