"""Metrics: pytrec_eval semantics on hand-built runs (ties, missing queries, identical ids), the
columnar path that evaluate uses equal to pytrec_eval (generated runs and real SciFact BM25 rankings),
and the published MiniLM / BM25 figures on SciFact test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hardneg
from hardneg.collection import Collection, Qrels
from hardneg.evaluation.metrics import Ranking, columnar_metrics, parse_measure, pytrec_eval_metrics
from hardneg.evaluation.retrieval import evaluate_ranking


def tiny(qrels: list[tuple[int, int, int]], n_docs: int = 6, n_queries: int = 3) -> Collection:
    qi, di, g = (np.array(x, dtype=np.int64) for x in zip(*qrels))
    return Collection(np.array([f"d{i:02d}" for i in range(n_docs)], dtype=object), [f"doc {i}" for i in range(n_docs)],
                      np.array([f"q{i}" for i in range(n_queries)], dtype=object),
                      [f"query {i}" for i in range(n_queries)], Qrels(qi, di, g.astype(np.int32)))


def test_ties_missing_queries_and_grades():
    col = tiny([(0, 1, 1), (1, 2, 2), (1, 3, 1), (2, 4, 1)])
    # q0: d0 .9, d1 .5, d3 .5 -> trec_eval breaks the tie by doc id descending: d3 before d1 -> rank 3.
    # q1: d3 .8, d2 .7 (both relevant, grades 1 and 2). q2 is not in the run: it counts as 0.
    ranking = Ranking(np.array([0, 1]), np.array([[0, 1, 3], [3, 2, -1]]),
                      np.array([[0.9, 0.5, 0.5], [0.8, 0.7, -np.inf]]))
    ev = evaluate_ranking(col, ranking)
    assert ev.queries == 3
    ndcg_q0 = 1 / math.log2(4)
    dcg_q1 = 1 / math.log2(2) + 2 / math.log2(3)
    idcg_q1 = 2 / math.log2(2) + 1 / math.log2(3)
    assert ev.per_query["ndcg@10"]["q0"] == pytest.approx(ndcg_q0, abs=1e-4)
    assert ev.per_query["ndcg@10"]["q1"] == pytest.approx(dcg_q1 / idcg_q1, abs=1e-4)
    assert ev.per_query["ndcg@10"]["q2"] == 0.0
    assert ev.metrics["mrr@10"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert ev.metrics["recall@100"] == pytest.approx((1 + 1 + 0) / 3)
    _assert_same_as_pytrec_eval(col, ranking, ("ndcg@10", "recall@100", "mrr@10"))


def test_mrr_cutoff_and_identical_ids(tmp_path):
    col = tiny([(0, 5, 1)], n_docs=12, n_queries=1)
    col.doc_ids[0] = "q0"  # a document with the query's id: removed from the ranking (BEIR default)
    col.doc_ids = np.array(sorted(col.doc_ids), dtype=object)
    pos_doc = int(np.nonzero(col.doc_ids == "d05")[0][0])
    col.qrels = Qrels(np.array([0]), np.array([pos_doc]), np.array([1], dtype=np.int32))
    same = int(np.nonzero(col.doc_ids == "q0")[0][0])
    others = [i for i in range(12) if i not in (same, pos_doc)]
    order = [same] + others[:9] + [pos_doc]  # positive at rank 11, rank 10 once q0 is removed
    ranking = Ranking(np.array([0]), np.array([order]), np.array([np.linspace(1, 0, 11)]))
    ev = evaluate_ranking(col, ranking)
    assert ev.metrics["mrr@10"] == pytest.approx(0.1)
    kept = evaluate_ranking(col, ranking, ignore_identical_ids=False)
    assert kept.metrics["mrr@10"] == 0.0
    _assert_same_as_pytrec_eval(col, ranking, ("mrr@10", "ndcg@10", "recall@100"))
    ev.save_per_query(tmp_path / "pq.jsonl")
    row = json.loads((tmp_path / "pq.jsonl").read_text().splitlines()[0])
    assert row["query_id"] == "q0" and set(row) == {"query_id", "ndcg@10", "recall@100", "mrr@10"}


MEASURES = ("ndcg@1", "ndcg@3", "ndcg@10", "ndcg@100", "recall@1", "recall@5", "recall@100", "mrr@1", "mrr@10")


def _assert_same_as_pytrec_eval(col: Collection, ranking: Ranking, measures: tuple[str, ...],
                                ignore_identical_ids: bool = True) -> None:
    """evaluate_ranking's per-query values (columnar) are exactly pytrec_eval's, and so are the means."""
    parsed = [parse_measure(m) for m in measures]
    ref = pytrec_eval_metrics(col, ranking, parsed, ignore_identical_ids)
    got = columnar_metrics(col, ranking, parsed, ignore_identical_ids)
    ev = evaluate_ranking(col, ranking, measures, ignore_identical_ids)
    for key in measures:
        diff = np.nonzero(got[key] != ref[key])[0]
        assert diff.size == 0, f"{key}: {diff.size} queries differ, e.g. {got[key][diff[0]]!r} vs {ref[key][diff[0]]!r}"
        assert list(ev.per_query[key].values()) == ref[key].tolist()
        assert ev.metrics[key] == (float(np.mean(ref[key])) if ref[key].size else 0.0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data())
def test_columnar_path_equals_pytrec_eval(data):
    """Graded qrels with judged non-relevant (grade 0) documents, tied scores, cutoffs below and
    above the ranking's depth, queries missing from the run, ids equal to the query's."""
    n_docs = data.draw(st.integers(5, 40))
    n_q = data.draw(st.integers(1, 6))
    qrels = []
    for q in range(n_q):
        docs = data.draw(st.lists(st.integers(0, n_docs - 1), min_size=1, max_size=8, unique=True))
        qrels += [(q, d, data.draw(st.integers(0, 3))) for d in docs]
    col = tiny(qrels, n_docs, n_q)
    if data.draw(st.booleans()):
        col.doc_ids[0] = "q0"  # a document named like query q0 (still sorted: "q0" > "d..")
        order = np.argsort(col.doc_ids)
        col.doc_ids = col.doc_ids[order]
        inv = np.argsort(order)
        col.qrels = Qrels(col.qrels.query_idx, inv[col.qrels.doc_idx], col.qrels.grade)
    k = data.draw(st.integers(1, n_docs))
    rows = data.draw(st.lists(st.integers(0, n_q - 1), min_size=1, max_size=n_q, unique=True))
    ids = np.array([data.draw(st.permutations(range(n_docs)))[:k] for _ in rows])
    scores = np.array([[data.draw(st.sampled_from([0.1, 0.2, 0.5, 0.9, 1 / 3])) for _ in range(k)] for _ in rows])
    if data.draw(st.booleans()):  # an empty slot at the end of each row
        ids[:, -1], scores[:, -1] = -1, -np.inf
    ranking = Ranking(np.array(sorted(rows)), ids, scores)
    ignore = data.draw(st.booleans())
    _assert_same_as_pytrec_eval(col, ranking, MEASURES, ignore)


@pytest.fixture(scope="module")
def scifact_bm25_ranking(scifact_dir, tmp_path_factory):
    """BM25's top 1,000 for every judged SciFact test query (the real evaluation's ranking)."""
    from hardneg.candidates.teachers import BM25Teacher
    from hardneg.runs.cache import Cache

    col = hardneg.load(scifact_dir, "test")
    teacher = BM25Teacher()
    q_idx = col.judged_queries()
    teacher.prepare(col, q_idx, Cache(tmp_path_factory.mktemp("bm25-cache")))
    ids, scores = teacher.search(q_idx, 1000)
    return col, Ranking(q_idx, ids, scores)


@pytest.mark.parametrize("ignore_identical_ids", [True, False])
def test_columnar_path_equals_pytrec_eval_on_scifact(scifact_bm25_ranking, ignore_identical_ids):
    col, ranking = scifact_bm25_ranking
    _assert_same_as_pytrec_eval(col, ranking, MEASURES + ("ndcg@1000", "recall@1000"), ignore_identical_ids)
    ev = evaluate_ranking(col, ranking, ignore_identical_ids=ignore_identical_ids)
    assert ev.queries == 300 and ev.metrics["ndcg@10"] == pytest.approx(0.66, abs=0.01)  # BEIR: 0.665


@pytest.mark.slow
def test_scifact_test_matches_published_figures(scifact_dir, cache_dir):
    dense = hardneg.evaluate(scifact_dir, "test", cache_dir=str(cache_dir))
    assert dense.queries == 300
    assert dense.metrics["ndcg@10"] == pytest.approx(0.645, abs=0.002)  # MTEB: 64.51
    bm25 = hardneg.evaluate(scifact_dir, "test", teacher="bm25", cache_dir=str(cache_dir))
    assert bm25.metrics["ndcg@10"] == pytest.approx(0.66, abs=0.01)
