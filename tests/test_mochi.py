"""MoCHi (hard negative mixing in the loss): the synthetic negatives are convex mixes of the hardest
ones, the loss is MNRL exactly without them and MNRL plus detached extra logits with them, and
``hardneg train --loss mochi`` trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from typer.testing import CliRunner

import hardneg
from hardneg.cli import app
from hardneg.training.mochi import MoCHiLoss, synthetic_negatives

runner = CliRunner()


def batch(seed: int, b: int, n: int, d: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """Random embeddings of one batch: anchors, positives, n negative columns (not normalised)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g, dtype=dtype) for _ in range(2 + n)]


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, p=2, dim=-1)


def cone_coefficients(point: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares (a, b) with point = a*u + b*v, and the residual norm."""
    basis = np.stack([u, v], axis=1)
    coef, *_ = np.linalg.lstsq(basis, point, rcond=None)
    return coef, float(np.linalg.norm(basis @ coef - point))


def sources(docs: np.ndarray, hardest: set[int], x: np.ndarray) -> set[int]:
    """The hard columns whose embedding is x."""
    return {j for j in hardest if np.allclose(docs[j], x)}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(2, 5), n=st.integers(0, 3), d=st.integers(4, 12),
       num_hard=st.integers(1, 12), num_mix=st.integers(0, 5), num_query_mix=st.integers(0, 5),
       beta_max=st.floats(0.01, 0.5))
def test_synthetic_negatives_are_convex_mixes_of_the_hardest_negatives(seed, b, n, d, num_hard, num_mix,
                                                                       num_query_mix, beta_max):
    """Every synthetic point has unit norm and lies in the cone of its two sources (non-negative
    coefficients, no residual) with the stated share; pair mixes join two distinct negatives among
    the row's N hardest (never its own positive), query mixes join the query (share < beta_max) and
    one of them, and are at least as close to the query as that negative."""
    emb = batch(seed, b, n, d)
    q, docs = unit(emb[0]), unit(torch.cat(emb[1:]))
    scores = q @ docs.T
    own = torch.arange(b)
    syn = synthetic_negatives(q, docs, scores, own, num_hard, num_mix, num_query_mix, beta_max,
                              torch.Generator().manual_seed(seed))
    m = docs.size(0)
    n_hard = min(num_hard, m - 1)
    assert syn.points.shape == (b, num_mix + num_query_mix, d) and not syn.points.requires_grad
    torch.testing.assert_close(syn.points.norm(dim=-1), torch.ones(b, num_mix + num_query_mix, dtype=q.dtype))
    docs_np, q_np = docs.numpy(), q.numpy()
    for i in range(b):
        masked = scores[i].numpy().copy()
        masked[i] = -np.inf
        hardest = set(np.argsort(-masked, kind="stable")[:n_hard].tolist())
        assert set(syn.hard[i].tolist()) == hardest and i not in hardest
        for k in range(num_mix + num_query_mix):
            p, u, v, w = (syn.points[i, k].numpy(), syn.first[i, k].numpy(), syn.second[i, k].numpy(),
                          float(syn.weight[i, k]))
            (a, c), residual = cone_coefficients(p, u, v)
            assert residual < 1e-9 and a >= -1e-9 and c >= -1e-9
            if not np.allclose(u, v):  # one negative mixed with itself (N = 1) has no share
                assert a / (a + c) == pytest.approx(w, abs=1e-6)
            if k < num_mix:
                assert 0.0 <= w <= 1.0
                first, second = sources(docs_np, hardest, u), sources(docs_np, hardest, v)
                assert first and second and (first != second or n_hard == 1)
            else:
                assert 0.0 <= w < beta_max and np.allclose(u, q_np[i]) and sources(docs_np, hardest, v)
                assert p @ q_np[i] >= v @ q_np[i] - 1e-12  # a query mix is a harder negative


def test_without_mixing_the_loss_is_sentence_transformers_mnrl_exactly(static_model, scifact_slice):
    """s = s' = 0: the same value and the same gradients as MNRL, on random embeddings (bit for bit)
    and through a real model on real texts."""
    from sentence_transformers import SentenceTransformer

    emb = [e.float().requires_grad_() for e in batch(0, 6, 3, 16)]
    ours = MoCHiLoss(None, num_mix=0, num_query_mix=0).compute_loss_from_embeddings(emb)
    (g_ours,) = torch.autograd.grad(ours, emb[0])
    mnrl = MultipleNegativesRankingLoss.compute_loss_from_embeddings(
        MultipleNegativesRankingLoss(torch.nn.Identity()), emb, None)
    (g_mnrl,) = torch.autograd.grad(mnrl, emb[0])
    assert torch.equal(ours, mnrl) and torch.equal(g_ours, g_mnrl)

    model = SentenceTransformer(static_model)
    texts = scifact_slice.query_texts[:4] + scifact_slice.doc_texts[:12]
    feats = [model.preprocess(texts[4 * j: 4 * j + 4]) for j in range(4)]  # anchor, positive, 2 negatives
    a = MoCHiLoss(model, num_mix=0, num_query_mix=0)([dict(f) for f in feats])
    b = MultipleNegativesRankingLoss(model)([dict(f) for f in feats], None)
    assert torch.equal(a, b)


def test_one_hardest_negative_mixed_with_itself_is_that_negative_once_more():
    """N = 1, s = 1: the only pair is the hardest negative with itself, so whatever alpha is drawn,
    the loss is MNRL with that negative's logit counted twice (computed here by hand)."""
    emb = batch(3, 4, 2, 8)
    q, docs = unit(emb[0]), unit(torch.cat(emb[1:]))
    s = 20.0 * (q @ docs.T).numpy()
    expected = []
    for i in range(4):
        row = s[i]
        hardest = max((v for j, v in enumerate(row) if j != i))
        expected.append(-(row[i] - np.log(np.exp(row).sum() + np.exp(hardest))))
    for seed in (0, 1):
        got = MoCHiLoss(None, num_hard=1, num_mix=1, num_query_mix=0, seed=seed).compute_loss_from_embeddings(emb)
        assert float(got) == pytest.approx(float(np.mean(expected)), rel=1e-12)


def test_mixing_adds_detached_logits_and_makes_the_loss_larger():
    """The loss is MNRL's softmax with one extra logit q.h per synthetic point h, h carrying no
    gradient (the documents get MNRL's gradient plus nothing from h); every extra term raises it,
    and query mixes (harder than their source negative) raise it more than pair mixes of the same count."""
    emb = [e.requires_grad_() for e in batch(5, 8, 3, 16)]
    loss = MoCHiLoss(None, num_hard=8, num_mix=6, num_query_mix=4, seed=7)
    state = loss.generator.get_state()
    value = loss.compute_loss_from_embeddings(emb)
    grads = torch.autograd.grad(value, emb)

    q, docs = unit(emb[0]), unit(torch.cat(emb[1:]))
    scores = 20.0 * q @ docs.T
    syn = synthetic_negatives(q, docs, scores, torch.arange(8), 8, 6, 4, 0.5, torch.Generator().set_state(state))
    extra = 20.0 * torch.einsum("bd,bkd->bk", q, syn.points.detach())
    by_hand = -(scores.diagonal() - torch.logsumexp(torch.cat([scores, extra], 1), 1)).mean()
    torch.testing.assert_close(value, by_hand, rtol=1e-12, atol=0)
    for g, h in zip(grads, torch.autograd.grad(by_hand, emb), strict=True):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-12)

    plain = MoCHiLoss(None, num_mix=0, num_query_mix=0).compute_loss_from_embeddings(emb)
    pairs = MoCHiLoss(None, num_hard=8, num_mix=8, num_query_mix=0).compute_loss_from_embeddings(emb)
    query = MoCHiLoss(None, num_hard=8, num_mix=0, num_query_mix=8).compute_loss_from_embeddings(emb)
    assert plain < value and plain < pairs < query


def test_the_draws_follow_the_seed():
    emb = batch(1, 6, 2, 8)
    a, b, c = (MoCHiLoss(None, num_hard=4, num_mix=4, num_query_mix=4, seed=s) for s in (0, 0, 1))
    va = [float(a.compute_loss_from_embeddings(emb)) for _ in range(3)]
    vb = [float(b.compute_loss_from_embeddings(emb)) for _ in range(3)]
    vc = [float(c.compute_loss_from_embeddings(emb)) for _ in range(3)]
    assert va == vb and va != vc and len(set(va)) == 3  # each call draws afresh


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="beta_max"):
        MoCHiLoss(None, beta_max=0.6)
    with pytest.raises(ValueError, match="num_hard"):
        MoCHiLoss(None, num_hard=0)


@pytest.fixture(scope="module")
def run(scifact_slice, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mochirun") / "run"
    return hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, out=str(out), cache_dir=str(cache_dir))


def manifest_of(out: Path) -> dict:
    return json.loads((Path(out) / "hardneg_train.json").read_text())


def test_three_real_steps_of_mochi_train_the_model_and_without_mixes_match_mnrl_hn(run, static_model, tmp_path):
    """hardneg.train(loss='mochi'): 3 steps on the static model move the weights, the knobs reach the
    loss and the manifest, mixing raises the logged loss, and with s = s' = 0 the run is mnrl-hn's."""
    from safetensors.numpy import load_file

    tiny = {"model": static_model, "batch_size": 4, "max_steps": 3, "warmup_ratio": 0.0, "progress": False}
    mochi = manifest_of(out := hardneg.train(run, tmp_path / "mochi", loss="mochi", mochi_hard=6, mochi_mix=4,
                                            mochi_query_mix=2, mochi_beta_max=0.3, **tiny))
    assert mochi["steps"] == 3 and np.isfinite(mochi["train_loss"])
    assert mochi["loss"] == {"class": "MoCHiLoss", "num_hard": 6, "num_mix": 4, "num_query_mix": 2,
                             "beta_max": 0.3, "scale": 20.0, "seed": 0}
    before, after = load_file(str(Path(static_model) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert max(float(np.abs(before[k] - after[k]).max()) for k in before) > 1e-7
    plain = manifest_of(hardneg.train(run, tmp_path / "plain", loss="mochi", mochi_mix=0, mochi_query_mix=0, **tiny))
    mnrl = manifest_of(hardneg.train(run, tmp_path / "mnrl", loss="mnrl-hn", **tiny))
    assert plain["train_loss"] == pytest.approx(mnrl["train_loss"], rel=1e-6)
    assert mochi["train_loss"] > mnrl["train_loss"]


def test_the_command_line_and_an_experiment_yaml_switch_mochi_on(run, static_model, tmp_path):
    from hardneg.experiment.config import ExperimentConfig
    from hardneg.training import TrainConfig

    res = runner.invoke(app, ["train", "--run", str(run.path), "--out", str(tmp_path / "m"), "--model", static_model,
                              "--loss", "mochi", "--mochi-hard", "5", "--mochi-mix", "3", "--mochi-query-mix", "1",
                              "--batch-size", "4", "--max-steps", "1", "--warmup-ratio", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    loss = manifest_of(tmp_path / "m")["loss"]
    assert (loss["class"], loss["num_hard"], loss["num_mix"], loss["num_query_mix"]) == ("MoCHiLoss", 5, 3, 1)
    cfg = ExperimentConfig(dataset="d", variants=[{"name": "mochi", "loss": "mochi",
                                                   "train": {"mochi_hard": 8, "mochi_beta_max": 0.25}}])
    v = cfg.variants[0]  # as the experiment's cells build a variant's training options
    tc = TrainConfig(run="r", out="o", loss=v.loss, **(cfg.budget.model_dump() | v.budget | v.train))
    assert (tc.loss, tc.mochi_hard, tc.mochi_beta_max, tc.mochi_mix) == ("mochi", 8, 0.25, 16)
