"""Property tests for the invariants sentence-transformers' miner broke (ANCHORS.md §1.4), run
through the real pipeline: BEIR files on disk -> loader -> real model (packaged static embeddings,
fast enough for hypothesis) or BM25 -> filters -> sampler -> run folder."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hardneg
from hardneg.decisions.filters import FilterSpec

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


@st.composite
def large_collections(draw):
    """A BEIR collection of hundreds to thousands of documents, far more than a depth-10 search pool
    (depth + positives + POOL_PAD), made of a few distinct texts: groups of tens to hundreds of
    identical documents, so exact score ties straddle the pool boundary for most queries."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_distinct = draw(st.integers(3, 40))
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 6))) for _ in range(n_distinct)]
    n_docs = draw(st.integers(200, 1500))
    docs = [texts[i] for i in rng.integers(0, n_distinct, n_docs)]
    n_q = draw(st.integers(1, 5))
    queries = [" ".join(rng.choice(WORDS, size=rng.integers(1, 4))) for _ in range(n_q)]
    qrels = [(q, int(d), int(rng.integers(1, 4)))
             for q in range(n_q) for d in rng.choice(n_docs, size=rng.integers(1, 4), replace=False)]
    return docs, queries, qrels


@settings(SETTINGS, max_examples=8)
@given(coll=large_collections(), flt=st.sampled_from(["none", "percpos:0.95", "margin:0.05", "maxscore:0.9"]))
def test_exact_and_faiss_flat_agree(static_model, cache_dir, coll, flt):
    with tempfile.TemporaryDirectory() as tmp:
        root = write(Path(tmp) / "d", coll)
        a = mine_files(root, cache_dir, teacher=f"dense:{static_model}", filter=flt, search="exact")
        b = mine_files(root, cache_dir, teacher=f"dense:{static_model}", filter=flt, search="faiss-flat")
    assert a.negatives.equals(b.negatives)
    assert a.candidates.equals(b.candidates)


@pytest.mark.parametrize("teacher,n_docs", [("dense", 1500), ("bm25", 33_000)])
def test_pool_search_with_boundary_ties_is_the_prefix_of_a_full_scan(static_model, cache_dir, tmp_path, teacher,
                                                                     n_docs):
    """End to end: a corpus of 12 distinct texts repeated. At depth 10 the pool holds ~30 documents
    and tied groups straddle its boundary, so the boundary rescoring must run; every search then gives
    exactly the first ranks of a search whose pool is the whole corpus (no boundary at all). BM25's
    33,000 documents span two corpus chunks of 32,768, so its running top-k merges chunks (and
    argpartition picks tied documents in no particular order)."""
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(WORDS, size=3)) for _ in range(12)]
    docs = [texts[i] for i in rng.integers(0, 12, n_docs)]
    queries = [" ".join(rng.choice(WORDS, size=2)) for _ in range(8)]
    qrels = [(q, int(d), 1) for q in range(8) for d in rng.choice(n_docs, size=2, replace=False)]
    root = write(tmp_path / "d", (docs, queries, qrels))
    kw = {"teacher": f"dense:{static_model}" if teacher == "dense" else "bm25", "filter": "none",
          "num_negatives": 3, "reference_floor": 0}
    full = mine_files(root, cache_dir, depth=n_docs, max_depth=n_docs, **kw).candidates
    for search in ("exact", "faiss-flat") if teacher == "dense" else ("exact",):
        run = mine_files(root, cache_dir, depth=10, max_depth=10, search=search, **kw)
        assert run.manifest["counts"]["exhaustive_rescans"] > 0, search
        got = run.candidates.drop_columns(["selected"]).to_pylist()
        deepest: dict[str, int] = {}
        for r in got:
            deepest[r["query_id"]] = max(deepest.get(r["query_id"], 0), r["rank"])
        ranks, qids = full.column("rank").to_numpy(), full.column("query_id").to_numpy(zero_copy_only=False)
        want = full.filter(ranks <= np.array([deepest[q] for q in qids])).drop_columns(["selected"]).to_pylist()
        assert got == want, search


@st.composite
def tied_vectors(draw):
    """Query and document vectors of a corpus much larger than the search pool, made of a few
    distinct vectors repeated (exact ties) plus optional noise below float32 resolution (ties the
    coarse float32 scores cannot break but the exact float64 ones can)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_docs, dim, n_distinct = draw(st.integers(200, 3000)), draw(st.sampled_from([4, 8, 32])), draw(st.integers(2, 60))
    noise = draw(st.sampled_from([0.0, 1e-9, 1e-7, 1e-3]))
    base = rng.standard_normal((n_distinct, dim))
    docs = (base[rng.integers(0, n_distinct, n_docs)] + noise * rng.standard_normal((n_docs, dim))).astype(np.float32)
    n_q = draw(st.integers(1, 30))
    queries = np.where(rng.random((n_q, 1)) < 0.5, base[rng.integers(0, n_distinct, n_q)],
                       rng.standard_normal((n_q, dim))).astype(np.float32)
    return docs, queries, draw(st.integers(1, 60)), draw(st.sampled_from([61, 500, 100_000]))


def _dense_on(docs: np.ndarray, queries: np.ndarray, search: str, doc_chunk: int):
    """The dense teacher's real search paths on given vectors: encoding thousands of texts per
    example would be slow, and generated vectors put ties exactly where they are wanted."""
    from hardneg.candidates.teachers.dense import DenseTeacher

    t = DenseTeacher(search=search, encoder="torch")
    t._docs, t._queries, t._qrow = docs, queries, np.arange(len(queries))
    t.doc_chunk, t.query_chunk = doc_chunk, 7
    return t


@settings(SETTINGS, max_examples=40)
@given(data=tied_vectors())
def test_chunked_running_topk_and_boundary_rescoring_equal_a_full_sort(data):
    """exact (chunked faiss knn + running top-k), faiss-flat and the generic score-block path
    (BM25's) all return exactly the full float64 sort by (score desc, doc index asc); every query
    whose k-th score ties with a document beyond the pool was rescored over the whole corpus."""
    from hardneg.candidates.search import POOL_PAD, exact_rerank, pair_dot, running_topk

    docs, queries, k, chunk = data
    n, nq = len(docs), len(queries)
    rows, cols = np.repeat(np.arange(nq), n), np.tile(np.arange(n), nq)
    full = pair_dot(queries, docs, rows, cols).reshape(nq, n)
    order = np.lexsort((np.broadcast_to(np.arange(n), full.shape), -full), axis=1)
    want_i, want_s = order[:, :k], np.take_along_axis(full, order[:, :k], axis=1)
    pool = min(n, k + POOL_PAD)
    sorted_s = np.take_along_axis(full, order, axis=1)
    straddle = int((sorted_s[:, k - 1] == sorted_s[:, pool]).sum()) if pool < n else 0
    q_idx = np.arange(nq)
    for search in ("exact", "faiss-flat"):
        t = _dense_on(docs, queries, search, chunk)
        ids, scores = t.search(q_idx, k)
        np.testing.assert_array_equal(ids, want_i, err_msg=search)
        np.testing.assert_array_equal(scores, want_s, err_msg=search)
        assert t.exhaustive_queries >= straddle, search
    pool_i, pool_s = running_topk(lambda r, d0, d1: queries[r] @ docs[d0:d1].T, nq, n, pool, doc_chunk=chunk,
                                  query_chunk=7)
    ids, scores, rescans = exact_rerank(pool_i, pool_s, k, lambda r, d: pair_dot(queries, docs, r, d), n)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_array_equal(scores, want_s)
    assert rescans >= straddle


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
