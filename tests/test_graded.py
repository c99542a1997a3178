"""Graded list-wise losses (SyCL's Wasserstein, a ListNet softmax): hand-computed values on a tiny
batch, the Wasserstein distance's behaviour as mass moves between grades, the table of graded lists
built from a run mined on real graded qrels (Cranfield, grades 1-4), and real training steps."""

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
from hardneg.training import TrainConfig
from hardneg.training.graded_softmax import GradedSoftmaxLoss
from hardneg.training.graded_table import graded_table
from hardneg.training.graded_wasserstein import GradedWassersteinLoss, gaussian_w2, wasserstein_1d

runner = CliRunner()
T = torch.float64


def tiny_batch() -> tuple[list[torch.Tensor], torch.Tensor]:
    """Two queries, three documents each (2-d unit vectors); row 1's third slot is padding."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=T)
    d1 = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=T)
    d2 = torch.tensor([[0.8, 0.6], [1.0, 0.0]], dtype=T)
    d3 = torch.tensor([[0.0, 1.0], [0.8, 0.6]], dtype=T)
    return [q, d1, d2, d3], torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.0, -1.0]])


def softmax(x: list[float]) -> np.ndarray:
    e = np.exp(np.array(x))
    return e / e.sum()


def test_the_wasserstein_loss_on_a_tiny_batch_by_hand():
    """scale 5. Own lists only: row 0 logits [5, 4, 0], grades [2, 1, 0], target [2/3, 1/3, 0]:
    W = |p1 - 2/3| + |p1 + p2 - 1|; row 1 logits [4, 0] (padding out), grades [1, 0]: W = 1 - p1.
    With in-batch documents row 0 also sees row 1's [.6, 1] x 5 (grade 0), row 1 row 0's [0, .6, 1] x 5."""
    emb, labels = tiny_batch()
    own = GradedWassersteinLoss(None, scale=5.0, in_batch=False).compute_loss_from_embeddings(emb, labels)
    p0, p1 = softmax([5, 4, 0]), softmax([4, 0])
    want = (abs(p0[0] - 2 / 3) + abs(p0[0] + p0[1] - 1)) + (1 - p1[0])
    assert float(own) == pytest.approx(want / 2, rel=1e-12)

    batch = GradedWassersteinLoss(None, scale=5.0).compute_loss_from_embeddings(emb, labels)
    p0, p1 = softmax([5, 4, 0, 3, 5]), softmax([4, 0, 0, 3, 5])
    want = (abs(p0[0] - 2 / 3) + abs(p0[0] + p0[1] - 1)) + (1 - p1[0])
    assert float(batch) == pytest.approx(want / 2, rel=1e-12)

    soft = GradedWassersteinLoss(None, scale=5.0, in_batch=False, grade_temperature=1.0)
    t0, t1, p0, p1 = softmax([2, 1, 0]), softmax([1, 0]), softmax([5, 4, 0]), softmax([4, 0])
    want = (abs(p0[0] - t0[0]) + abs(p0[0] + p0[1] - t0[0] - t0[1])) + abs(p1[0] - t1[0])
    assert float(soft.compute_loss_from_embeddings(emb, labels)) == pytest.approx(want / 2, rel=1e-12)


def test_the_graded_softmax_loss_on_a_tiny_batch_by_hand():
    """Cross-entropy to the normalised grades: row 0 -(2/3 log p1 + 1/3 log p2), row 1 -log p1; and
    with grade_temperature 1, the target softmax([2, 1, 0]) / softmax([1, 0]) (ListNet)."""
    emb, labels = tiny_batch()
    p0, p1 = softmax([5, 4, 0, 3, 5]), softmax([4, 0, 0, 3, 5])
    want = -(2 / 3 * np.log(p0[0]) + 1 / 3 * np.log(p0[1])) - np.log(p1[0])
    got = GradedSoftmaxLoss(None, scale=5.0).compute_loss_from_embeddings(emb, labels)
    assert float(got) == pytest.approx(want / 2, rel=1e-12)
    t0, t1, p0, p1 = softmax([2, 1, 0]), softmax([1, 0]), softmax([5, 4, 0]), softmax([4, 0])
    want = -(t0 * np.log(p0)).sum() - (t1 * np.log(p1)).sum()
    listnet = GradedSoftmaxLoss(None, scale=5.0, in_batch=False, grade_temperature=1.0)
    assert float(listnet.compute_loss_from_embeddings(emb, labels)) == pytest.approx(want / 2, rel=1e-12)
    with pytest.raises(ConfigError, match="grade label"):
        GradedSoftmaxLoss(None)([], None)


def test_one_positive_of_grade_one_is_mnrl_with_hard_negatives():
    """Binary labels, in-batch documents: graded-softmax is sentence-transformers' MNRL (InfoNCE), and
    graded-wasserstein is the mean of 1 - p(positive) under the same softmax."""
    g = torch.Generator().manual_seed(0)
    emb = [torch.randn(5, 8, generator=g, dtype=T) for _ in range(4)]
    labels = torch.tensor([[1.0, 0.0, 0.0]] * 5)
    mnrl = MultipleNegativesRankingLoss(torch.nn.Identity()).compute_loss_from_embeddings(emb, None)
    ours = GradedSoftmaxLoss(None).compute_loss_from_embeddings(emb, labels)
    assert float(ours) == pytest.approx(float(mnrl), rel=1e-12)
    unit = [torch.nn.functional.normalize(e, dim=1) for e in emb]
    logits = 20 * unit[0] @ torch.cat(unit[1:]).T  # column j * 5 + i: row i's document j
    p_pos = torch.softmax(logits, dim=1)[torch.arange(5), torch.arange(5)]
    got = GradedWassersteinLoss(None).compute_loss_from_embeddings(emb, labels)
    assert float(got) == pytest.approx(float((1 - p_pos).mean()), rel=1e-12)


@st.composite
def graded_lists(draw):
    """A list of 3-12 items with grades 0-4 (at least two levels), a label distribution over it, and
    a sequence of moves, each of a share of one item's mass to an item of strictly lower grade."""
    m = draw(st.integers(3, 12))
    grades = draw(st.lists(st.integers(0, 4), min_size=m, max_size=m).filter(lambda g: len(set(g)) > 1))
    weights = draw(st.lists(st.floats(0.05, 1.0), min_size=m, max_size=m))
    moves = draw(st.lists(st.tuples(st.integers(0, m - 1), st.integers(0, m - 1), st.floats(0.1, 0.9)),
                          min_size=1, max_size=6))
    return np.array(grades, float), np.array(weights) / sum(weights), moves


@settings(max_examples=200, deadline=None)
@given(case=graded_lists())
def test_wasserstein_is_zero_at_the_labels_and_grows_as_mass_moves_to_lower_grades(case):
    """p = t gives 0; every move of mass d from grade a to grade b < a raises W by exactly d * (a - b)
    (all moves go down, so W = E_t[grade] - E_p[grade]); shuffling the items changes nothing."""
    grades, target, moves = case
    g, t = torch.tensor(grades)[None], torch.tensor(target)[None]
    assert float(wasserstein_1d(t.clone(), t, g)) == pytest.approx(0.0, abs=1e-12)
    p, last = target.copy(), 0.0
    for i, j, share in moves:
        if grades[j] >= grades[i]:
            i, j = int(np.argmax(grades)), int(np.argmin(grades))  # the top grade down to the bottom one
        d = share * p[i]
        p[i] -= d
        p[j] += d
        w = float(wasserstein_1d(torch.tensor(p)[None], t, g))
        assert w == pytest.approx(last + d * (grades[i] - grades[j]), rel=1e-9, abs=1e-12)
        assert w > last
        assert w == pytest.approx(float(target @ grades - p @ grades), rel=1e-9, abs=1e-12)
        last = w
    perm = torch.randperm(grades.size, generator=torch.Generator().manual_seed(len(moves)))
    shuffled = wasserstein_1d(torch.tensor(p)[None][:, perm], t[:, perm], g[:, perm])
    assert float(shuffled) == pytest.approx(last, rel=1e-9)


def test_the_loss_is_zero_when_the_model_gives_the_label_distribution():
    """Through the loss: logits = grades / T (the model's softmax is the softmax(grade / T) target)."""
    grades = torch.tensor([[4.0, 2.0, 2.0, 1.0, 0.0, 0.0], [3.0, 0.0, 1.0, 0.0, 0.0, 0.0]], dtype=T)
    mask = torch.ones_like(grades, dtype=torch.bool)
    loss = GradedWassersteinLoss(None, grade_temperature=0.5)
    assert float(loss.row_loss(grades / 0.5, grades, mask).abs().max()) < 1e-12
    assert float(loss.row_loss(grades.flip(1) / 0.5, grades, mask).min()) > 0.5


def frechet(p: np.ndarray, t: np.ndarray) -> float:
    """The 2-Wasserstein distance between Gaussians fitted to the rows, from its textbook formula
    (the trace of the root of S_p S_t as the sum of the roots of its eigenvalues, real and >= 0)."""
    sp, st_ = np.cov(p, rowvar=False), np.cov(t, rowvar=False)
    root_trace = np.sqrt(np.linalg.eigvals(sp @ st_).real.clip(0)).sum()
    return float(((p.mean(0) - t.mean(0)) ** 2).sum() + np.trace(sp) + np.trace(st_) - 2 * root_trace)


def test_the_gaussian_form_is_the_sycl_codes_frechet_distance_and_blind_to_whose_list_is_whose():
    """form='gaussian' on the tiny batch (in-batch lists, coordinates [row 0's d1..d3, row 1's d1, d2];
    row 1's padding is 0 in both) is the Frechet distance of the textbook formula; on random rows too.
    Swapping two queries' predictions costs the Gaussian form nothing and the per-query form a lot."""
    emb, labels = tiny_batch()
    p = np.stack([softmax([5, 4, 0, 3, 5]), softmax([0, 3, 5, 4, 0])])
    t = np.array([[2 / 3, 1 / 3, 0, 0, 0], [0, 0, 0, 1, 0]])
    got = GradedWassersteinLoss(None, scale=5.0, form="gaussian").compute_loss_from_embeddings(emb, labels)
    assert float(got) == pytest.approx(frechet(p, t), rel=1e-7)
    g = torch.Generator().manual_seed(3)
    p, t = torch.softmax(torch.randn(6, 9, generator=g, dtype=T), 1), torch.softmax(torch.randn(6, 9, generator=g, dtype=T), 1)
    assert float(gaussian_w2(p, t)) == pytest.approx(frechet(p.numpy(), t.numpy()), rel=1e-7)
    grades = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 2.0]], dtype=T)
    t = grades / grades.sum(1, keepdim=True)
    swapped = t.flip(0)
    assert abs(float(gaussian_w2(swapped, t))) < 1e-12
    assert float(wasserstein_1d(swapped, t, grades).mean()) > 1.0
    with pytest.raises(ConfigError, match="form"):
        GradedWassersteinLoss(None, form="sinkhorn")


@pytest.fixture(scope="module")
def cranfield_run(cranfield_dir, cache_dir, tmp_path_factory):
    """16 Cranfield queries (grades 1-4), their judged documents and 100 others, mined with BM25."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Cranfield's two empty documents
        col = hardneg.load(cranfield_dir, "test").slice(16, extra_docs=100, seed=0)
    out = tmp_path_factory.mktemp("graded") / "run"
    return hardneg.mine(col, teacher="bm25", num_negatives=3, out=str(out), cache_dir=str(cache_dir))


def expected_lists(run, positives: int, negatives: int, judged_zeros: bool = True) -> list[tuple[list[str], list[float]]]:
    """Each query's documents and grades, by a plain loop over the collection's qrels: the first
    positive of every grade (highest grade first, ids ascending within a grade), then the second of
    every grade, ...; kept highest grade first; then its grade-0 qrels documents (ids ascending, with
    ``judged_zeros``) and the mined negatives not among them; padding (-1) to the width."""
    col = run.collection()
    out = []
    for qid, neg_ids in zip(run.negatives.column("query_id").to_pylist(),
                            run.negatives.column("negative_ids").to_pylist(), strict=True):
        q = int(col.query_index([qid])[0])
        judged = [(int(gr), str(col.doc_ids[d])) for qi, d, gr in
                  zip(col.qrels.query_idx, col.qrels.doc_idx, col.qrels.grade, strict=True) if qi == q and gr > 0]
        levels = sorted({gr for gr, _ in judged}, reverse=True)
        buckets = {lv: sorted(d for gr, d in judged if gr == lv) for lv in levels}
        picked: list[tuple[int, str]] = []
        for turn in range(max(len(b) for b in buckets.values())):
            picked += [(lv, buckets[lv][turn]) for lv in levels if turn < len(buckets[lv])]
        picked = sorted(picked[:positives], key=lambda x: -x[0])
        pos = [d for _, d in picked] + [picked[0][1]] * (positives - len(picked))
        grades = [float(gr) for gr, _ in picked] + [-1.0] * (positives - len(picked))
        zeros = sorted(str(col.doc_ids[d]) for qi, d, gr in
                       zip(col.qrels.query_idx, col.qrels.doc_idx, col.qrels.grade, strict=True)
                       if qi == q and gr == 0) if judged_zeros else []
        negs = (zeros + [d for d in neg_ids if d not in zeros])[:negatives]
        texts = [col.doc_texts[i] for i in col.doc_index(pos + negs + [picked[0][1]] * (negatives - len(negs)))]
        out.append((texts, grades + [0.0] * len(negs) + [-1.0] * (negatives - len(negs))))
    return out


def test_the_table_gives_each_query_its_grades_in_order(cranfield_run):
    """One row per query: its positives spread over its grade levels, highest grade first, with their
    qrels grades; then its judged grade-0 documents and mined negatives (grade 0), or mined ones only;
    padding (-1) where a query has fewer."""
    neg = cranfield_run.negatives
    lists = neg.column("negative_ids").to_pylist()
    lists[0], lists[5] = lists[0][:1], []  # two queries left short of negatives (shortfall)
    short = hardneg.Run(neg.set_column(neg.schema.get_field_index("negative_ids"), "negative_ids",
                                       pa.array(lists, pa.list_(pa.string()))),
                        cranfield_run.candidates, cranfield_run.manifest, collection=cranfield_run.collection())
    cases = [(cranfield_run, 3, 2, True), (short, 9, 3, True), (cranfield_run, 3, 2, False), (short, 9, 3, False)]
    for run, positives, negatives, zeros in cases:
        table = graded_table(run, negatives, positives, judged_zeros=zeros)
        assert table.column_names == ["anchor", *[f"doc_{j + 1}" for j in range(positives + negatives)], "label"]
        labels = np.array(table.column("label").to_pylist())
        want = expected_lists(run, positives, negatives, zeros)
        assert table.num_rows == len(want) == 16
        for r, (texts, grades) in enumerate(want):
            assert [table.column(f"doc_{j + 1}")[r].as_py() for j in range(positives + negatives)] == texts
            assert labels[r].tolist() == grades
        real = labels[:, :positives]
        assert np.all(np.diff(real, axis=1) <= 0)  # grades in order, padding (-1) last
    assert (labels[:, :9] == -1).any() and (labels[:, 9:] == -1).sum() == 2 + 3  # padded positives and negatives
    assert len({tuple(row[:3]) for row in labels}) > 3  # lists of mixed grade levels
    col = cranfield_run.collection()
    assert (col.qrels.grade == 0).sum() > 0  # the slice has judged grade-0 rows: they change the lists
    assert not graded_table(cranfield_run, 2, 3).equals(graded_table(cranfield_run, 2, 3, judged_zeros=False))
    with pytest.raises(ConfigError, match="graded_positives"):
        hardneg.training.training_table(cranfield_run, "mnrl-hn", graded_positives=2)


def manifest_of(out: Path) -> dict:
    return json.loads((Path(out) / "hardneg_train.json").read_text())


def test_three_real_steps_on_graded_qrels_change_the_model(cranfield_run, static_model, tmp_path):
    """hardneg.train with each graded loss on the Cranfield run: 3 steps move the static model's weights."""
    from safetensors.numpy import load_file

    before = load_file(str(Path(static_model) / "model.safetensors"))
    tiny = {"model": static_model, "batch_size": 4, "max_steps": 3, "warmup_ratio": 0.0, "progress": False}
    for loss, cls in (("graded-wasserstein", "GradedWassersteinLoss"), ("graded-softmax", "GradedSoftmaxLoss")):
        out = hardneg.train(cranfield_run, tmp_path / loss, loss=loss, graded_positives=3, **tiny)
        made = manifest_of(out)
        assert made["steps"] == 3 and made["loss"]["class"] == cls and made["loss"]["scale"] == 20.0
        assert 0 < made["train_loss"] < float("inf")
        assert made["columns"] == ["anchor", "doc_1", "doc_2", "doc_3", "doc_4", "doc_5", "doc_6", "label"]
        after = load_file(str(out / "model.safetensors"))
        assert max(float(np.abs(before[k] - after[k]).max()) for k in before) > 1e-6


def test_the_command_line_and_the_defaults(cranfield_run, static_model, tmp_path):
    """The switches reach the loss; another loss refuses them, and its settings key is unchanged."""
    res = runner.invoke(app, ["train", "--run", str(cranfield_run.path), "--out", str(tmp_path / "m"),
                              "--model", static_model, "--loss", "graded-wasserstein", "--graded-positives", "2",
                              "--num-negatives", "1", "--grade-temperature", "1", "--no-graded-in-batch",
                              "--wasserstein-form", "gaussian",
                              "--student-temperature", "0.1", "--batch-size", "4", "--max-steps", "1",
                              "--warmup-ratio", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    made = manifest_of(tmp_path / "m")
    assert made["loss"] == {"class": "GradedWassersteinLoss", "scale": 10.0, "in_batch": False,
                            "grade_temperature": 1.0, "form": "gaussian"}
    assert made["columns"] == ["anchor", "doc_1", "doc_2", "doc_3", "label"] and made["train_loss"] >= 0
    with pytest.raises(ConfigError, match="graded_in_batch"):
        hardneg.train(cranfield_run, tmp_path / "x", model=static_model, loss="mnrl-hn", graded_in_batch=False)
    with pytest.raises(ConfigError, match="wasserstein_form"):
        hardneg.train(cranfield_run, tmp_path / "y", model=static_model, loss="graded-softmax",
                      wasserstein_form="gaussian")
    plain = TrainConfig(run="r", out="o").fingerprint_settings()
    assert not {"graded_positives", "grade_temperature", "graded_in_batch", "wasserstein_form"} & set(plain)
