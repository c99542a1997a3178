"""Search, filter and sampler building blocks on hand-built arrays."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hardneg.candidates.search import exact_rerank, faiss_pool, running_topk
from hardneg.decisions.filters import FilterSpec, apply_filters, positive_reference, threshold_drops
from hardneg.errors import ConfigError
from hardneg.sampling import SamplerSpec, id_hashes, pair_uniform, sample


def brute(q: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    s = (q.astype(np.float64) @ d.astype(np.float64).T)
    return np.lexsort((np.broadcast_to(np.arange(d.shape[0]), s.shape), -s), axis=1)[:, :k]


def pair_fn(q: np.ndarray, d: np.ndarray):
    return lambda rows, docs: (q[rows].astype(np.float64) * d[docs].astype(np.float64)).sum(axis=1)


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_running_topk_then_rerank_equals_brute_force(chunk):
    rng = np.random.default_rng(0)
    d = rng.normal(size=(300, 16)).astype(np.float32)
    d[100] = d[5]  # exact ties: the lower index must win
    d[200] = d[5]
    q = rng.normal(size=(40, 16)).astype(np.float32)
    q[3] = d[5]
    pool_i, pool_s = running_topk(lambda rows, a, b: q[rows] @ d[a:b].T, 40, 300, 26, doc_chunk=chunk, query_chunk=9)
    ids, _, _ = exact_rerank(pool_i, pool_s, 10, pair_fn(q, d), 300)
    np.testing.assert_array_equal(ids, brute(q, d, 10))
    assert ids[3, :3].tolist() == [5, 100, 200]


def test_rerank_rescans_when_ties_straddle_the_pool():
    d = np.ones((50, 4), dtype=np.float32)  # every document ties
    q = np.ones((2, 4), dtype=np.float32)
    pool_i, pool_s = faiss_pool(d, q, 6, "flat")
    ids, _, rescans = exact_rerank(pool_i, pool_s, 5, pair_fn(q, d), 50)
    assert rescans == 2
    assert ids.tolist() == [[0, 1, 2, 3, 4]] * 2


def test_k_larger_than_corpus():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(5, 8)).astype(np.float32)
    q = rng.normal(size=(3, 8)).astype(np.float32)
    pool_i, pool_s = running_topk(lambda rows, a, b: q[rows] @ d[a:b].T, 3, 5, 50)
    ids, _, _ = exact_rerank(pool_i, pool_s, 50, pair_fn(q, d), 5)
    assert ids.shape == (3, 5)
    np.testing.assert_array_equal(ids, brute(q, d, 5))


def test_percpos_is_sign_safe_and_margin_uses_lowest_positive():
    ref = positive_reference(np.array([0, 0, 1]), np.array([0.9, 0.5, -0.4]), 2)
    assert ref.tolist() == [0.5, -0.4]
    s = np.array([[0.48, 0.47, 0.4], [-0.41, -0.43, -0.5]])
    pp = threshold_drops(FilterSpec("percpos", 0.95), s, ref)
    # limit = 0.475 for s+=0.5; for s+=-0.4: -0.4 - 0.05*0.4 = -0.42
    assert pp.tolist() == [[True, False, False], [True, False, False]]
    mg = threshold_drops(FilterSpec("margin", 0.05), s, ref)
    assert mg.tolist() == [[True, True, False], [True, True, False]]
    nan_ref = threshold_drops(FilterSpec("percpos", 0.95), s, np.array([np.nan, np.nan]))
    assert not nan_ref.any()


def test_apply_filters_records_first_reason():
    score = np.array([[0.9, 0.8, 0.7, 0.2]])
    valid = np.array([[True, True, True, True]])
    is_pos = np.array([[True, False, False, False]])
    is_dup = np.array([[False, True, False, False]])
    reason = apply_filters(FilterSpec.parse("maxscore:0.65+minscore:0.3"), score, valid, is_pos, is_dup,
                           np.array([0.5]))
    assert reason.tolist() == [[1, 2, 4, 3]]  # positive, duplicate_text, maxscore, minscore


def test_filter_and_sampler_parsing():
    assert FilterSpec.parse("none") == []
    assert [str(f) for f in FilterSpec.parse("percpos+margin:0.1")] == ["percpos:0.95", "margin:0.1"]
    for bad in ("percpos:2", "bogus:1", "margin:x"):
        with pytest.raises(ConfigError):
            FilterSpec.parse(bad)
    assert SamplerSpec.parse("window:10-100") == SamplerSpec("window", 10, 100)
    assert SamplerSpec.parse("simans:a=5,b=0.1").params == {"a": 5.0, "b": 0.1}
    for bad in ("window", "window:9-3", "simans:c=1", "nope"):
        with pytest.raises(ConfigError):
            SamplerSpec.parse(bad)


def _grid(nq: int = 3, k: int = 12):
    rank = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), (nq, k))
    score = 1.0 - rank / 20.0
    return rank, score


@pytest.mark.parametrize("spec", ["top", "window:3-8", "random", "random:2-9", "simans", "top1+sampled"])
def test_samplers_stay_in_window_and_report_shortfall(spec):
    rank, score = _grid()
    eligible = np.ones(rank.shape, bool)
    eligible[2, 4:] = False  # query 2 has only 4 eligible candidates
    s = SamplerSpec.parse(spec)
    qh, dh = id_hashes(np.array(["a", "b", "c"])), id_hashes(np.array([str(i) for i in range(12)]))
    chosen, _ = sample(s, 5, eligible, rank, score, np.array([0.99, 0.99, 0.99]), qh, dh[None, :], seed=3)
    for row in range(3):
        picked = chosen[row][chosen[row] >= 0]
        assert len(set(picked.tolist())) == picked.size
        assert eligible[row, picked].all()
        r = rank[row, picked]
        assert (r >= s.rank_min).all() and (s.rank_max is None or (r <= s.rank_max).all())
        assert (np.diff(r) > 0).all()  # reported in rank order
    assert (chosen[2] >= 0).sum() <= 4
    if spec == "top":
        assert chosen[0].tolist() == [0, 1, 2, 3, 4]
    if spec == "top1+sampled":
        assert (chosen[:, 0] == 0).all()


def test_random_keys_depend_only_on_seed_query_doc():
    qh = id_hashes(np.array(["q1", "q2"]))
    dh = id_hashes(np.array(["d1", "d2", "d3"]))
    u = pair_uniform(7, qh[:, None], dh[None, :])
    u_rev = pair_uniform(7, qh[::-1, None], dh[None, ::-1])
    np.testing.assert_array_equal(u, u_rev[::-1, ::-1])
    assert ((u > 0) & (u < 1)).all()
    assert not np.array_equal(u, pair_uniform(8, qh[:, None], dh[None, :]))


def test_ann_indexes_report_measured_recall(scifact_slice, cache_dir):
    """HNSW / IVF are approximate: the manifest carries their recall@depth against exact search."""
    import hardneg

    exact = hardneg.mine(scifact_slice, teacher="dense", depth=20, max_depth=20, cache_dir=str(cache_dir))
    for kind in ("faiss-hnsw", "faiss-ivf", "faiss-ivfsq", "faiss-ivfpq"):
        run = hardneg.mine(scifact_slice, teacher="dense", depth=20, max_depth=20, search=kind,
                           cache_dir=str(cache_dir))
        recall = run.manifest["teacher"]["ann_recall"]
        assert recall is not None and 0.5 <= recall <= 1.0
        same = sum(a == b for a, b in zip(run.negatives.column("negative_ids").to_pylist(),
                                          exact.negatives.column("negative_ids").to_pylist()))
        assert same >= 0.5 * run.negatives.num_rows
    assert exact.manifest["teacher"]["ann_recall"] is None


def test_hybrid_scores_every_candidate_with_every_teacher(scifact_slice, cache_dir):
    import hardneg

    for fusion in ("rrf", "minmax", "zscore"):
        run = hardneg.mine(scifact_slice, teacher="hybrid", fusion=fusion, cache_dir=str(cache_dir))
        cols = run.candidates.column_names
        assert {"score_bm25", "score_dense", "score_hybrid"} <= set(cols)
        assert run.manifest["filter_on"] == "dense"
        for c in ("score_bm25", "score_dense", "score_hybrid"):
            assert not np.isnan(run.candidates.column(c).to_numpy()).any()
        ranks = run.candidates.column("rank").to_numpy()
        fused = run.candidates.column("score_hybrid").to_numpy()
        q = run.candidates.column("query_id").to_numpy(zero_copy_only=False)
        for qid in np.unique(q)[:5]:
            m = q == qid
            assert (np.diff(fused[m][np.argsort(ranks[m])]) <= 1e-12).all()  # rank follows the fused score


def test_bm25s_import_leaves_the_gpu_to_the_trainer():
    """bm25s runs a JAX op at import where JAX is installed; JAX must then allocate on demand instead of
    taking 75% of the GPU (which made every BM25 cell of the A/B grid run out of memory on an H200).
    A value the user set is kept."""
    import subprocess
    import sys

    code = ("import os; from hardneg.candidates.teachers.bm25 import import_bm25s; import_bm25s(); "
            "print(os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])")
    env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "false"
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "true"


def test_bm25_stem_matches_morphological_variants_that_plain_bm25_misses(tmp_path):
    """``bm25:stem``: the query "run" finds the document that only says "running" (Snowball stems both
    to "run") and takes it as the hardest negative; plain BM25 scores it 0. The two teachers describe and fingerprint themselves apart."""
    import hardneg
    from hardneg.collection import Collection, Qrels

    docs = ["a cat sat on the mat", "the hills are green", "weather reports predict rain",
            "runners were running across the hills"]
    col = Collection(np.array([f"d{i}" for i in range(4)]), docs, np.array(["q0"]), ["run"],
                     Qrels(np.array([0]), np.array([2]), np.array([1])))
    runs = {t: hardneg.mine(col, teacher=t, filter="none", num_negatives=1, depth=3, max_depth=3,
                            cache_dir=str(tmp_path)) for t in ("bm25", "bm25:stem")}
    score = {t: dict(zip(r.candidates.column("doc_id").to_pylist(), r.candidates.column("score_bm25").to_pylist()))
             for t, r in runs.items()}
    assert score["bm25:stem"]["d3"] > 0 and score["bm25"]["d3"] == 0
    assert runs["bm25:stem"].negatives.column("negative_ids").to_pylist() == [["d3"]]
    assert runs["bm25"].negatives.column("negative_ids").to_pylist() == [["d0"]]  # all tie at 0: id order
    plain, stem = (runs[t].manifest["teacher"] for t in ("bm25", "bm25:stem"))
    assert plain["settings"]["stemmer"] is None and stem["settings"]["stemmer"] == "english"
    assert plain["fingerprint"] != stem["fingerprint"]
