"""Loss ``adore`` (hardneg.training.adore): negatives retrieved at every step from a fixed index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hardneg
from hardneg.training import training_table
from hardneg.training.adore import AdoreLoss, adore_rows


class Linear(torch.nn.Module):
    """A stand-in student: the feature ``x`` through one linear map."""

    def __init__(self, dim: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = torch.nn.Linear(dim, dim, bias=False)

    def forward(self, features):
        return {"sentence_embedding": self.proj(features["x"])}


def numpy_top(q: np.ndarray, index: np.ndarray, positives: np.ndarray, k: int) -> np.ndarray:
    """The exact top-k documents of each query by dot product, the query's positives left out."""
    scores = q.astype(np.float64) @ index.astype(np.float64).T
    for r, pos in enumerate(positives):
        scores[r, pos[pos >= 0]] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 30), negatives=st.none() | st.integers(1, 30),
       normalize=st.booleans())
def test_retrieval_is_the_exact_top_k_of_the_index_without_the_positives(seed, depth, negatives, normalize):
    rng = np.random.default_rng(seed)
    n, dim, rows = 40, 6, 9
    index = rng.normal(size=(n, dim)).astype(np.float32)
    positives = np.full((rows, 3), -1)
    for r in range(rows):  # 1-3 positives per row, the rows of one query share them
        positives[r, : 1 + r % 3] = rng.choice(n, size=1 + r % 3, replace=False)
    target = positives[:, 0]
    loss = AdoreLoss(Linear(dim), torch.from_numpy(index), torch.from_numpy(target), torch.from_numpy(positives),
                     depth=depth, negatives=negatives, normalize=normalize)
    batch = np.array([3, 0, 7, 7])
    q = rng.normal(size=(batch.size, dim)).astype(np.float32)
    ids, found = loss.retrieve(torch.from_numpy(q), torch.from_numpy(batch))
    k = min(depth, negatives or depth)
    assert ids.shape == (batch.size, k) and found.all()
    assert np.array_equal(ids.numpy(), numpy_top(q, index, positives[batch], k))
    assert not any(np.isin(ids[i].numpy(), positives[b]).any() for i, b in enumerate(batch))


def test_the_loss_is_infonce_over_the_positive_and_the_retrieved_negatives_with_query_gradients_only():
    dim = 3
    index = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0], [0, 0.6, 0.8]])
    target = torch.tensor([0, 2])
    positives = torch.tensor([[0, -1], [2, 4]])
    model = Linear(dim)
    with torch.no_grad():
        model.proj.weight.copy_(torch.eye(dim))
    loss = AdoreLoss(model, index, target, positives, depth=2, scale=10.0)
    x = torch.tensor([[0.0, 3.0, 4.0], [1.0, 1.0, 0.0]])
    value = loss([{"x": x}], torch.tensor([0, 1]))
    # hand computation: q = x / |x|
    q = np.array([[0, 0.6, 0.8], [1 / np.sqrt(2), 1 / np.sqrt(2), 0]])
    d = index.numpy()
    s0 = q[0] @ d.T  # positive doc 0; the best non-positives: doc 4 (1.0), then doc 2 (0.8)
    s1 = q[1] @ d.T  # positive doc 2; docs 2 and 4 are positives: doc 3 (0.99), then doc 0 or 1 (0.71)
    assert loss.last_negatives[0].tolist() == [4, 2] and loss.last_negatives[1, 0].item() == 3
    l0 = -np.log(np.exp(10 * s0[0]) / np.exp(10 * s0[[0, 4, 2]]).sum())
    l1 = -np.log(np.exp(10 * s1[2]) / np.exp(10 * s1[[2, 3, int(loss.last_negatives[1, 1])]]).sum())
    assert value.item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    value.backward()
    assert model.proj.weight.grad is not None and model.proj.weight.grad.abs().sum() > 0
    assert not loss.index.requires_grad and loss.index.grad is None


def test_an_index_with_too_few_documents_masks_the_missing_negatives():
    index = torch.eye(3)
    loss = AdoreLoss(Linear(3), index, torch.tensor([0]), torch.tensor([[0, 1]]), depth=5)
    ids, found = loss.retrieve(torch.ones(1, 3), torch.tensor([0]))
    assert found.tolist() == [[True, False, False]] and ids[0, 0].item() == 2
    value = loss([{"x": torch.ones(1, 3)}], torch.tensor([0]))
    assert torch.isfinite(value)


@pytest.fixture(scope="module")
def bm25_run(scifact_slice, cache_dir):
    return hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, cache_dir=str(cache_dir))


def test_the_rows_are_the_pairs_of_the_run(bm25_run):
    col = bm25_run.collection()
    q_idx, target, positives = adore_rows(bm25_run)
    pairs = training_table(bm25_run, "mnrl")
    assert [col.query_texts[i] for i in q_idx] == pairs.column("anchor").to_pylist()
    assert [col.doc_texts[i] for i in target] == pairs.column("positive").to_pylist()
    table = training_table(bm25_run, "adore")
    assert table.column_names == ["anchor", "label"] and table.column("label").to_pylist() == list(range(q_idx.size))
    pos = col.positives()
    for r in range(q_idx.size):  # every positive of the row's query, and nothing else
        want = set(pos.doc_idx[pos.query_idx == q_idx[r]].tolist())
        assert set(positives[r][positives[r] >= 0].tolist()) == want and target[r] in want


def test_three_real_steps_retrieve_the_exact_top_k_at_every_step(bm25_run, static_model, tmp_path, monkeypatch):
    """Through hardneg.train: the index is the base model's (here mined by BM25, so the index is encoded
    for the loss), each step's negatives are numpy's exact top-k of it for that step's query
    embeddings, and the model changes."""
    steps: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    retrieve = AdoreLoss.retrieve

    def spy(self, queries, rows):
        ids, found = retrieve(self, queries, rows)
        steps.append((queries.numpy().copy(), self.index.numpy(), self.positives[rows].numpy(), ids.numpy(),
                      found.numpy()))
        return ids, found

    monkeypatch.setattr(AdoreLoss, "retrieve", spy)
    out = hardneg.train(bm25_run, tmp_path / "m", model=static_model, loss="adore", adore_depth=25,
                        adore_negatives=10, batch_size=8, max_steps=3, warmup_ratio=0.0, learning_rate=0.5,
                        progress=False)
    made = json.loads((Path(out) / "hardneg_train.json").read_text())
    assert made["steps"] == 3 and made["loss"]["class"] == "AdoreLoss" and made["loss"]["negatives"] == 10
    assert made["adore_index"]["docs"] == bm25_run.collection().num_docs and made["columns"] == ["anchor", "label"]
    assert len(steps) == 3
    for q, index, positives, ids, found in steps:
        assert found.all() and ids.shape == (8, 10)
        assert np.array_equal(ids, numpy_top(q, index, positives, 10))

    from safetensors.numpy import load_file

    a, b = load_file(str(Path(static_model) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not np.array_equal(a[k], b[k]) for k in a)
