"""False-negative audit: hiding, the arithmetic on a hand-built run, similarity rules, calibration,
and the cascade on real Cranfield through the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hardneg import mine as hardneg_mine
from hardneg.audit import Hidden, hide_positives, measure, stage_prefixes
from hardneg.cli import app
from hardneg.collection import Collection, Qrels
from hardneg.decisions.calibration import (
    FALLBACK,
    calibrated_threshold,
    leave_one_out,
    leave_one_out_percpos,
)
from hardneg.decisions.filters import REASONS, FilterSpec
from hardneg.decisions.similarity import (
    knn_positive_share,
    max_to_positives,
    pair_cosine,
    pair_jaccard,
    shingle_matrix,
)
from hardneg.errors import ConfigError
from hardneg.runs.run import Run

runner = CliRunner()


def _collection(qrels: list[tuple[int, int]], num_queries: int, num_docs: int) -> Collection:
    q = np.array([a for a, _ in qrels], dtype=np.int64)
    d = np.array([b for _, b in qrels], dtype=np.int64)
    o = np.lexsort((d, q))
    return Collection(np.array([f"d{i}" for i in range(num_docs)]), [f"text {i}" for i in range(num_docs)],
                      np.array([f"q{i}" for i in range(num_queries)]), [f"query {i}" for i in range(num_queries)],
                      Qrels(q[o], d[o], np.ones(q.size, dtype=np.int64)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=12), st.floats(0.05, 0.95), st.integers(0, 5))
def test_hiding_never_takes_every_positive(npos, fraction, seed):
    pairs = [(qi, qi * 10 + j) for qi, n in enumerate(npos) for j in range(n)]
    col = _collection(pairs, len(npos), 10 * len(npos))
    visible, hidden = hide_positives(col, fraction, seed)
    vis = set(zip(visible.qrels.query_idx.tolist(), visible.qrels.doc_idx.tolist()))
    hid = set(zip(hidden.query_idx.tolist(), hidden.doc_idx.tolist()))
    assert not vis & hid and vis | hid == set(pairs)
    for qi, n in enumerate(npos):
        h = sum(1 for q, _ in hid if q == qi)
        assert h == (min(max(int(np.floor(fraction * n)), 1), n - 1) if n >= 2 else 0)
    again = hide_positives(col, fraction, seed)[1]
    assert np.array_equal(again.doc_idx, hidden.doc_idx)  # seeded


def test_audit_arithmetic_on_a_hand_built_run():
    # q0: positives d0 (visible) and d1 (hidden); q1: positives d6 (visible) and d4 (hidden).
    col = _collection([(0, 0), (0, 1), (1, 4), (1, 6)], 2, 7)
    visible = Collection(col.doc_ids, col.doc_texts, col.query_ids, col.query_texts,
                         Qrels(np.array([0, 1]), np.array([0, 6]), np.array([1, 1])))
    hidden = Hidden(np.array([0, 1]), np.array([1, 4]))
    rows = [  # query, doc, rank, score, reason, selected
        ("q0", "d0", 1, 0.95, "positive", False),
        ("q0", "d1", 2, 0.90, "percpos", False),   # hidden positive, caught
        ("q0", "d2", 3, 0.80, "", True),
        ("q0", "d3", 4, 0.60, "", True),
        ("q0", "d5", 5, 0.50, "", False),
        ("q1", "d4", 1, 0.70, "", True),           # hidden positive, returned as a negative
        ("q1", "d5", 2, 0.65, "", True),
        ("q1", "d6", 3, 0.60, "positive", False),
    ]
    cand = pa.table({
        "query_id": [r[0] for r in rows], "doc_id": [r[1] for r in rows], "rank": pa.array([r[2] for r in rows], pa.int32()),
        "score_dense": [r[3] for r in rows], "kept": [r[4] == "" for r in rows], "selected": [r[5] for r in rows],
        "reason": pa.DictionaryArray.from_arrays(pa.array([REASONS.index(r[4]) for r in rows], pa.int32()),
                                                 pa.array(list(REASONS))),
    })
    run = Run(pa.table({"query_id": ["q0", "q1"]}), cand,
              {"filter_on": "dense", "config": {"num_negatives": 2, "filter": "percpos:0.95"}})
    a = measure(run, visible, hidden)
    assert a.returned == 4 and a.returned_hidden == 1
    assert a.fn_rate == pytest.approx(1 / 4)
    assert a.fn_rate_naive == pytest.approx(2 / 4)  # naive top-2: d1, d2 | d4, d5
    assert a.fn_recall == pytest.approx(1 / 2)      # d1 caught, d4 not
    assert a.coverage == pytest.approx(1.0)
    assert a.hardness_kept == pytest.approx(np.mean([0.8, 0.6, 0.7, 0.65]) / np.mean([0.9, 0.8, 0.7, 0.65]))
    assert a.dropped == {"percpos": {"dropped": 1, "hidden": 1}}


def test_similarities_and_leave_one_out():
    m = shingle_matrix(["the cat sat on the mat", "the cat sat on the mat", "the cat sat on a hat", "dogs"])
    j = pair_jaccard(m, np.array([0, 0, 0]), np.array([1, 2, 3]))
    # shingles: {the cat sat, cat sat on, sat on the, on the mat} vs {.., sat on a, on a hat}: 2 shared of 6
    assert j.tolist() == pytest.approx([1.0, 2 / 6, 0.0])
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.1]])
    assert pair_cosine(v, np.array([0, 2]), np.array([1, 3])).tolist() == pytest.approx(
        [0.0, 1.1 / np.sqrt(2) / np.sqrt(1.01)], rel=1e-6)
    # Two rows of candidates; row 0 has positives 0 and 1, row 1 has positive 2.
    ids = np.array([[3, 2], [0, 1]])
    best, nearest = max_to_positives(ids, np.ones(ids.shape, bool), np.array([0, 0, 1]), np.array([0, 1, 2]),
                                     lambda a, b: pair_cosine(v, a, b))
    assert best[0].tolist() == pytest.approx([max(1 / np.sqrt(1.01), 0.1 / np.sqrt(1.01)), 1 / np.sqrt(2)], rel=1e-6)
    # ... and which positive that was: doc 3 is nearest doc 0, doc 2 ties with docs 0 and 1 (the first is named).
    assert best[1].tolist() == pytest.approx([1 / np.sqrt(2), 1 / np.sqrt(2)], rel=1e-6)
    assert nearest.tolist() == [[0, 0], [2, 2]]
    loo = leave_one_out(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 2, 0, 2, 3]), lambda a, b: pair_cosine(v, a, b))
    c02, c03, c23 = 1 / np.sqrt(2), 1 / np.sqrt(1.01), 1.1 / np.sqrt(2) / np.sqrt(1.01)
    assert loo.tolist() == pytest.approx([0.0, 0.0, max(c02, c03), max(c02, c23), max(c03, c23)], rel=1e-6)
    assert calibrated_threshold(loo, 0.2)[0] == FALLBACK["near_positive"]  # too few values
    assert "fixed" in calibrated_threshold(loo, 0.2)[1]
    assert calibrated_threshold(np.linspace(0, 1, 101), 0.2)[0] == pytest.approx(0.2)
    # percpos: positives scoring 0.5, 0.4 (query 0) and 0.9, 0.3, 0.6 (query 1); reference = lowest other.
    p = leave_one_out_percpos(np.array([0, 0, 1, 1, 1]), np.array([0.5, 0.4, 0.9, 0.3, 0.6]))
    assert p.tolist() == pytest.approx([0.5 / 0.4, 0.4 / 0.5, 0.9 / 0.3, 0.3 / 0.6, 0.6 / 0.3])


def test_cascade_parses_into_its_stages():
    assert [str(f) for f in FilterSpec.parse("cascade")] == ["near_duplicate:0.5", "near_positive:auto",
                                                             "knn_positive:0.5"]
    assert stage_prefixes("percpos:0.9+cascade")[:4] == [
        "none", "percpos:0.9", "percpos:0.9+near_duplicate:0.5", "percpos:0.9+near_duplicate:0.5+near_positive:auto"]


def test_knn_positive_share():
    # One query, positives 0 and 1 (so it looks at min(10, 2*2) = 4 neighbours); candidates 2, 3, 4, 5.
    v = np.array([[1, 0], [0.9, 0.1], [0.95, 0.05], [0, 1], [0.1, 1], [0.05, 1]], dtype=np.float32)
    share = knn_positive_share(np.array([[2, 3, 4, 5]]), np.ones((1, 4), bool), np.array([0, 0]), np.array([0, 1]), v)
    # Candidate 2 sits among the positives: its 4 nearest hold both. Candidates 3-5 cluster apart: their 4
    # nearest are the two others of the cluster, then positive 1 and candidate 2.
    assert share[0].tolist() == pytest.approx([2 / 4, 1 / 4, 1 / 4, 1 / 4])


@pytest.mark.slow
def test_cascade_cuts_naive_false_negatives_by_70_percent_on_cranfield(cranfield_dir, cache_dir):
    """The goal (docs/benchmarks.md, issue 4), through the CLI: the cascade without model judges, dense
    MiniLM teacher, half of each query's positives hidden, depth 100, 4 negatives, cuts the naive
    top-k's false-negative rate by at least 70% at >= 90% coverage and >= 0.8 hardness kept."""
    res = runner.invoke(app, ["audit", "--dataset", str(cranfield_dir), "--split", "test", "--hide-fraction", "0.5",
                              "--seed", "0", "--filter", "cascade", "--depth", "100", "--num-negatives", "4",
                              "--cache-dir", str(cache_dir), "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("{")))
    assert r["queries"] > 200
    assert r["fn_rate_naive"] > 0.15  # naive top-k returns many hidden positives here
    cut = 1 - r["fn_rate"] / r["fn_rate_naive"]
    assert cut >= 0.7, f"the cascade cut the naive FN rate by {cut:.0%} (goal >= 70%)"
    assert r["coverage"] >= 0.9
    assert r["hardness_kept"] >= 0.8
    assert r["stages"][0]["filters"] == "none" and len(r["stages"]) == 4
    assert r["calibration"]["near_positive"]["value"] > 0


def test_platt_scaling_recovers_a_known_calibration():
    from hardneg.decisions.cross_encoder import auc, platt

    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, 20000)
    y = (rng.random(x.size) < 1 / (1 + np.exp(-(1.5 * x - 0.7)))).astype(float)
    a, b = platt(x, y)
    assert a == pytest.approx(1.5, abs=0.08) and b == pytest.approx(-0.7, abs=0.08)
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)


@pytest.fixture(scope="module")
def trained_judge(slice_dir, cache_dir, tmp_path_factory):
    """A BM25 run on the SciFact slice and a cross-encoder judge trained on it through the CLI (4 steps)."""
    tmp = tmp_path_factory.mktemp("judge")
    run_dir, judge_dir = tmp / "run", tmp / "judge"
    res = runner.invoke(app, ["mine", "--dataset", str(slice_dir), "--split", "train", "--teacher", "bm25",
                              "--num-negatives", "3", "--out", str(run_dir), "--cache-dir", str(cache_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train-judge", "--negatives", str(run_dir), "--out", str(judge_dir), "--dev-queries", "10",
                              "--max-steps", "4", "--batch-size", "8", "--max-length", "64", "--quiet"])
    assert res.exit_code == 0, res.output
    return judge_dir


def test_cross_encoder_judge_through_the_cli(trained_judge, slice_dir, cache_dir, tmp_path):
    """train-judge on a slice run, then mining with --judge: the judge rescores only the top kept
    candidates, its calibrated probabilities are stored, and its drops are exactly those at or
    above the threshold."""
    judge_dir = trained_judge
    meta = json.loads((judge_dir / "hardneg_judge.json").read_text())
    assert meta["dev_pairs"] > 10 and meta["train_pairs"] > meta["dev_pairs"] and 0 <= meta["dev_auc"] <= 1
    judged = tmp_path / "judged"
    res = runner.invoke(app, ["mine", "--dataset", str(slice_dir), "--split", "train", "--teacher", "bm25",
                              "--num-negatives", "3", "--judge", f"cross-encoder:{judge_dir}", "--judge-depth", "5",
                              "--judge-threshold", "0.5", "--out", str(judged), "--cache-dir", str(cache_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    run = Run.load(judged)
    prob = run.candidates.column("score_judge").to_numpy(zero_copy_only=False)
    reason = np.asarray(run.candidates.column("reason").to_pylist(), dtype=object)
    scored = ~np.isnan(prob)
    assert scored.sum() > 0 and ((prob[scored] >= 0) & (prob[scored] <= 1)).all()
    assert scored.sum() <= 5 * run.manifest["counts"]["queries"] * 2  # top 5 per query (and per deepened pass)
    assert set(reason[scored & (prob >= 0.5)]) <= {"cross_encoder"}
    assert not (reason[scored & (prob < 0.5)] == "cross_encoder").any()
    assert run.manifest["judge"]["calibration"] == meta["calibration"]
    assert run.manifest["counts"]["judge_cache_hits"] == 0
    # Another sampler: the judge's probabilities come from the cache, pair for pair.
    again = hardneg_mine(slice_dir, split="train", teacher="bm25", num_negatives=3, judge=f"cross-encoder:{judge_dir}",
                         judge_depth=5, judge_threshold=0.5, sampler="random", cache_dir=str(cache_dir))
    assert again.manifest["counts"]["judge_cache_hits"] >= scored.sum()
    np.testing.assert_array_equal(again.candidates.column("score_judge").to_numpy(zero_copy_only=False), prob)


def test_a_broken_judge_folder_fails_before_mining(trained_judge, scifact_slice, tmp_path):
    """Corrupt weights or an unreadable manifest: a one-line error naming the judge, before any
    search (before, the model loaded lazily after the search and failed with a library traceback)."""
    broken = tmp_path / "broken"
    shutil.copytree(trained_judge, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    cache, out = tmp_path / "cache", tmp_path / "run"
    with pytest.raises(ConfigError, match=f"{broken}: the cross-encoder judge does not load"):
        hardneg_mine(scifact_slice, teacher="bm25", judge=f"cross-encoder:{broken}", cache_dir=str(cache), out=str(out))
    assert not (cache / "searches").exists() and not out.exists()
    (broken / "hardneg_judge.json").write_text("{not json")
    with pytest.raises(ConfigError, match="hardneg_judge.json: not a readable judge manifest"):
        hardneg_mine(scifact_slice, teacher="bm25", judge=f"cross-encoder:{broken}", cache_dir=str(cache), out=str(out))


def test_llm_sees_only_the_cross_encoder_band_and_relabel_needs_both(trained_judge, scifact_slice, tmp_path):
    """With both judges the LLM is asked exactly about the cross-encoder's band [llm_band,
    judge_threshold) (plus, with --relabel, what the cross-encoder dropped), and a candidate is
    relabelled exactly when both judges find it relevant. A recording loopback server answers
    yes/no by a hash of the prompt, so the two judges disagree on some pairs."""
    from fake_llm import PROBE_PROMPT, FakeLLM

    from hardneg.decisions.llm import LLMConfig, LLMJudge

    def says_yes(prompt: str) -> bool:
        return hashlib.sha256(prompt.encode()).digest()[0] % 2 == 0

    col = scifact_slice
    qtext, dtext = dict(zip(col.query_ids, col.query_texts)), dict(zip(col.doc_ids, col.doc_texts))
    common = {"teacher": "bm25", "num_negatives": 3, "judge": f"cross-encoder:{trained_judge}", "judge_depth": 8,
              "depth": 50, "max_depth": 50}  # no deepened pass: every judged pair stays in the candidates
    cache = str(tmp_path / "cache")  # shared: the judge scores once; each server's URL keys its own answers
    ce_only = hardneg_mine(col, **common, cache_dir=cache)
    scored = ce_only.candidates.column("score_judge").to_numpy(zero_copy_only=False)
    band, threshold = (float(x) for x in np.quantile(scored[~np.isnan(scored)], [1 / 3, 2 / 3]))

    def pairs(run, mask) -> set[tuple[str, str]]:
        c = run.candidates
        return {(q, d) for q, d, m in zip(c.column("query_id").to_pylist(), c.column("doc_id").to_pylist(), mask) if m}

    for relabel in (False, True):
        server = FakeLLM(answer=lambda p: 0.95 if says_yes(p) else 0.05)
        try:
            run = hardneg_mine(col, **common, judge_threshold=threshold, llm_band=band, relabel=relabel,
                               llm_judge=f"llm:{server.url}", cache_dir=cache)
            asked = [p for p in server.prompts if p != PROBE_PROMPT]
        finally:
            server.close()
        prompt = LLMJudge(LLMConfig(server.url), tmp_path)._prompt
        ce = run.candidates.column("score_judge").to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(ce, scored)  # the same pairs, the same probabilities
        in_band = pairs(run, (ce >= band) & (ce < threshold))
        dropped = pairs(run, ce >= threshold)
        below = pairs(run, ce < band)
        assert in_band and dropped and below
        expected = in_band | dropped if relabel else in_band
        assert len(asked) == len(set(asked)) == len(expected)
        assert set(asked) == {prompt(qtext[q], dtext[d]) for q, d in expected}
        llm = run.candidates.column("score_llm").to_numpy(zero_copy_only=False)
        assert pairs(run, ~np.isnan(llm)) == expected
        reason = np.asarray(run.candidates.column("reason").to_pylist(), dtype=object)
        yes = {(q, d) for q, d in expected if says_yes(prompt(qtext[q], dtext[d]))}
        assert pairs(run, reason == "llm") == in_band & yes
        if relabel:
            relabelled = pairs(run, reason == "relabelled")
            assert relabelled == dropped & yes and relabelled and dropped - yes
            assert pairs(run, reason == "cross_encoder") == dropped - yes
            listed = {(q, d) for q, ds in zip(run.negatives.column("query_id").to_pylist(),
                                              run.negatives.column("relabelled_ids").to_pylist()) for d in ds}
            assert listed == relabelled
        else:
            assert pairs(run, reason == "cross_encoder") == dropped
