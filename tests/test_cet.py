"""CET (pooling-bias correction): the selection model's propensities are probabilities that fall with
rank and follow its inputs, the coupled fit recovers a planted selection model, the weighted loss
is MNRL at weight 1 and the hand-computed value otherwise, and ``hardneg train --loss cet`` trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from typer.testing import CliRunner

import hardneg
from hardneg.cli import app
from hardneg.errors import ConfigError
from hardneg.training.cet import (
    CETLoss,
    Features,
    SelectionModel,
    candidate_features,
    cet_table,
    negative_weights,
)

runner = CliRunner()


def candidates(ranks: list[list[int]], labelled: list[list[bool]], scores: dict[str, list[list[float]]]) -> pa.Table:
    """A run's candidates table: one list per query (ranks, labels, each teacher's scores)."""
    qid = [str(q) for q, r in enumerate(ranks) for _ in r]
    reason = ["positive" if lab else "" for row in labelled for lab in row]
    cols: dict[str, object] = {"query_id": qid, "doc_id": [f"d{i}" for i in range(len(qid))],
                               "rank": pa.array([x for r in ranks for x in r], pa.int32())}
    for name, rows in scores.items():
        cols[f"score_{name}"] = pa.array([x for r in rows for x in r], pa.float64())
    cols["reason"] = pa.array(reason).dictionary_encode()
    return pa.table(cols)


@st.composite
def candidate_tables(draw):
    nq = draw(st.integers(1, 6))
    teachers = draw(st.sampled_from([["bm25"], ["bm25", "dense"]]))
    ranks, labels, scores = [], [], {t: [] for t in teachers}
    for _ in range(nq):
        k = draw(st.integers(2, 15))
        ranks.append(list(range(1, k + 1)))
        labels.append(draw(st.lists(st.booleans(), min_size=k, max_size=k)))
        for t in teachers:
            scores[t].append(draw(st.lists(st.floats(-5, 5), min_size=k, max_size=k)))
    flat = [x for row in labels for x in row]
    if all(flat) or not any(flat):
        labels[0][0], labels[0][1] = True, False
    return candidates(ranks, labels, scores)


@settings(max_examples=40, deadline=None)
@given(table=candidate_tables())
def test_propensities_are_probabilities_that_never_rise_with_rank(table):
    """Any candidates: S in [0, 1], finite; one candidate moved deeper (every rank input larger)
    never gets a larger propensity."""
    f = candidate_features(table)
    model = SelectionModel().fit(f)
    s = model.propensity(f.selection)
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
    assert np.all(model.relevance(f.relevance) <= 1)
    deeper = model.propensity(np.log1p(np.expm1(f.selection) + 3))
    assert np.all(deeper <= s + 1e-12)


def test_features_per_teacher():
    """Two teachers: the search rank and each teacher's own rank (log) are selection features, each
    teacher's within-query z-score is a relevance feature."""
    t = candidates([[1, 2, 3], [1, 2]], [[True, False, False], [False, True]],
                   {"bm25": [[3.0, 2.0, 1.0], [5.0, 7.0]], "dense": [[0.1, 0.9, 0.5], [0.2, 0.1]]})
    f = candidate_features(t)
    np.testing.assert_allclose(np.expm1(f.selection), [[1, 1, 3], [2, 2, 1], [3, 3, 2], [1, 2, 1], [2, 1, 2]])
    np.testing.assert_allclose(f.relevance[:3, 0], (np.array([3, 2, 1]) - 2) / np.std([3, 2, 1]))
    np.testing.assert_allclose(f.relevance[3:, 1], [1, -1])
    assert f.labelled.tolist() == [True, False, False, False, True]


def planted(n: int = 20000, seed: int = 0) -> tuple[Features, np.ndarray]:
    """Candidates whose labels follow y = s * r with a known selection model S(rank) and an
    independent relevance R(score); returns the features and the true propensities."""
    rng = np.random.default_rng(seed)
    rank = rng.integers(1, 101, n)
    score = rng.normal(size=n)
    x = np.log1p(rank)
    s_true = 1 / (1 + np.exp(-(6.0 - 2.0 * x)))
    r_true = 1 / (1 + np.exp(-(-1.0 + 2.0 * score)))
    y = (rng.random(n) < s_true) & (rng.random(n) < r_true)
    return Features(x[:, None], score[:, None], y), s_true


def test_the_coupled_fit_recovers_a_planted_selection_model_that_a_plain_fit_underestimates():
    """With y = s * r, the coupled EM recovers S (close to the truth, strictly falling with rank);
    one logistic regression of y on rank alone (no relevance model) estimates S*R instead, far lower."""
    f, s_true = planted()
    model = SelectionModel().fit(f)
    s = model.propensity(f.selection)
    assert np.abs(s - s_true).mean() < 0.05 and np.corrcoef(s, s_true)[0, 1] > 0.99
    assert model.coef_s[1] < 0
    order = np.argsort(f.selection[:, 0])
    assert np.all(np.diff(s[order]) <= 0) and s[order][0] > s[order][-1] + 0.5
    plain = SelectionModel(iterations=1).fit(Features(f.selection, np.zeros((len(s), 0)), f.labelled))
    assert np.abs(plain.propensity(f.selection) - s_true).mean() > 0.2
    # the weights move with the selection model's inputs: two ranks deeper, every weight falls
    assert np.all(model.propensity(np.log1p(np.expm1(f.selection) + 2)) < s)


def embeddings(seed: int, b: int, n: int, d: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2 + n)]


def test_weight_one_everywhere_is_sentence_transformers_mnrl_exactly():
    emb = embeddings(0, 5, 3, 8)
    ours = CETLoss(None).compute_loss_from_embeddings(emb, torch.ones(5, 3))
    mnrl = MultipleNegativesRankingLoss(torch.nn.Identity()).compute_loss_from_embeddings(emb, None)
    assert torch.equal(ours, mnrl)
    for g, h in zip(torch.autograd.grad(ours, emb), torch.autograd.grad(mnrl, emb), strict=True):
        assert torch.equal(g, h)


def test_a_tiny_batch_by_hand():
    """Two queries, one mined negative each, weights 0.5 and 0 (2-d unit embeddings): each row's
    own negative counts w * exp(20 cos) in the denominator, the other row's documents count fully."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    pos = torch.tensor([[0.8, 0.6], [0.6, 0.8]], dtype=torch.float64)
    neg = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
    got = CETLoss(None).compute_loss_from_embeddings([q, pos, neg], torch.tensor([[0.5], [0.0]]))
    e = np.exp
    # row 0: own positive .8, other positive .6, own negative .6 (w = .5), other negative 1.0
    row0 = -np.log(e(16) / (e(16) + e(12) + 0.5 * e(12) + e(20)))
    # row 1: other positive .6, own positive .8, other negative .8, own negative 0 (w = 0)
    row1 = -np.log(e(16) / (e(12) + e(16) + e(16) + 0.0 * e(0)))
    assert float(got) == pytest.approx((row0 + row1) / 2, rel=1e-12)
    with pytest.raises(ConfigError, match="label"):
        CETLoss(None)([], None)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CETLoss(None).compute_loss_from_embeddings([q, pos, neg], torch.tensor([[1.5], [0.0]]))


def test_random_weights_against_a_loop_over_rows():
    """Several negatives per row, random weights: each row's own negatives (column b + k*b + i) and
    no other column are weighted, as a plain loop over rows and columns computes it."""
    b, n = 4, 3
    emb = embeddings(2, b, n, 6)
    w = torch.rand(b, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = CETLoss(None).compute_loss_from_embeddings(emb, w)
    q = torch.nn.functional.normalize(emb[0], dim=1).detach().numpy()
    docs = torch.nn.functional.normalize(torch.cat(emb[1:]), dim=1).detach().numpy()
    total = 0.0
    for i in range(b):
        denominator = 0.0
        for c in range(docs.shape[0]):
            column, row_of_column = divmod(c, b)  # column 0 = positives, 1.. = negative_1..n
            weight = float(w[i, column - 1]) if column > 0 and row_of_column == i else 1.0
            denominator += weight * np.exp(20 * q[i] @ docs[c])
        total += -np.log(np.exp(20 * q[i] @ docs[i]) / denominator)
    assert float(got) == pytest.approx(total / b, rel=1e-10)


@pytest.fixture(scope="module")
def run(scifact_slice, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cetrun") / "run"
    return hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, out=str(out), cache_dir=str(cache_dir))


def test_the_label_column_holds_each_mined_negatives_own_propensity(run):
    """cet_table's label j of a row is the propensity of that row's query and negative_j (looked up
    here through the texts), and every weight is in [0, 1]."""
    table = cet_table(run, 2)
    assert table.column_names == ["anchor", "positive", "negative_1", "negative_2", "label"]
    label = np.array(table.column("label").to_pylist())
    assert label.shape == (table.num_rows, 2) and np.all((label >= 0) & (label <= 1))
    f = candidate_features(run.candidates)
    s = SelectionModel().fit(f).propensity(f.selection)
    col = run.collection()
    qid = dict(zip(col.query_texts, col.query_ids.tolist(), strict=True))
    did = dict(zip(col.doc_texts, col.doc_ids.tolist(), strict=True))
    lookup = dict(zip(zip(run.candidates.column("query_id").to_pylist(), run.candidates.column("doc_id").to_pylist(),
                          strict=True), s, strict=True))
    for r, row in enumerate(table.to_pylist()):
        for j in range(2):
            assert label[r, j] == pytest.approx(lookup[(qid[row["anchor"]], did[row[f"negative_{j + 1}"]])], rel=1e-6)
    weighted, _ = negative_weights(run)  # a query's negatives are in rank order: their weights never rise
    for w, rk in zip(weighted.column("negative_scores").to_pylist(),
                     run.negatives.column("negative_ranks").to_pylist(), strict=True):
        assert np.all(np.diff(rk) > 0) and np.all(np.diff(w) <= 1e-12)


def manifest_of(out: Path) -> dict:
    return json.loads((Path(out) / "hardneg_train.json").read_text())


def test_three_real_steps_of_cet_train_the_model_and_weight_one_is_mnrl_hn(run, static_model, tmp_path, monkeypatch):
    """hardneg.train(loss='cet'): 3 steps on the static model move the weights; the propensities
    (< 1) lower the logged loss below mnrl-hn's, and propensities forced to 1 give mnrl-hn's loss."""
    from safetensors.numpy import load_file

    tiny = {"model": static_model, "batch_size": 4, "max_steps": 3, "warmup_ratio": 0.0, "progress": False}
    cet = manifest_of(out := hardneg.train(run, tmp_path / "cet", loss="cet", **tiny))
    assert cet["steps"] == 3 and cet["loss"]["class"] == "CETLoss" and cet["columns"][-1] == "label"
    before, after = load_file(str(Path(static_model) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert max(float(np.abs(before[k] - after[k]).max()) for k in before) > 1e-7
    mnrl = manifest_of(hardneg.train(run, tmp_path / "mnrl", loss="mnrl-hn", **tiny))
    assert cet["train_loss"] < mnrl["train_loss"]
    monkeypatch.setattr(SelectionModel, "propensity", lambda self, x: np.ones(len(x)))
    ones = manifest_of(hardneg.train(run, tmp_path / "ones", loss="cet", **tiny))
    assert ones["train_loss"] == pytest.approx(mnrl["train_loss"], rel=1e-6)


def test_the_command_line_switches_cet_on(run, static_model, tmp_path):
    res = runner.invoke(app, ["train", "--run", str(run.path), "--out", str(tmp_path / "m"), "--model", static_model,
                              "--loss", "cet", "--num-negatives", "2", "--batch-size", "4", "--max-steps", "1",
                              "--warmup-ratio", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    made = manifest_of(tmp_path / "m")
    assert made["loss"]["class"] == "CETLoss" and made["columns"] == ["anchor", "positive", "negative_1",
                                                                      "negative_2", "label"]


def test_separable_candidates_give_finite_propensities():
    """Found by the property test above: when the fit can separate labelled from unlabelled candidates,
    S * R reaches 1.0 in float64 and the E-step divided 0 by 0, so every propensity became NaN."""
    t = candidates([[1, 2, 3, 4, 5, 6]], [[True, False, True, True, False, False]],
                   {"bm25": [[0, 0, 0, 1, 0, 0]], "dense": [[0, 1, 0, 0, 0, 0]]})
    f = candidate_features(t)
    s = SelectionModel().fit(f).propensity(f.selection)
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
