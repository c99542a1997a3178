"""Query-balanced batches: every query once per pass, one of its positives drawn at random."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hardneg
from hardneg.errors import ConfigError
from hardneg.training import TrainConfig
from hardneg.training.query_balanced import QueryBalancedBatchSampler


def table_of(rows_per_query: list[int], shared_docs: int = 0, seed: int = 0) -> pa.Table:
    """Query i has rows_per_query[i] rows (one per positive), each with one negative; the documents are
    drawn from a pool, so that rows of different queries share texts (as real mined tables do) when the
    pool is small (shared_docs > 0)."""
    rng = np.random.default_rng(seed)
    anchors, positives, negatives = [], [], []
    for q, n in enumerate(rows_per_query):
        for j in range(n):
            anchors.append(f"q{q}")
            if shared_docs:
                a, b = rng.choice(shared_docs, 2, replace=False)
                positives.append(f"d{a}")
                negatives.append(f"d{b}")
            else:
                positives.append(f"p{q}-{j}")
                negatives.append(f"n{q}-{j}")
    label = pa.array([[1.0, 0.0]] * len(anchors), pa.list_(pa.float32()))
    return pa.table({"anchor": anchors, "positive": positives, "negative_1": negatives, "label": label})


def sampler(table: pa.Table, batch_size: int = 4, drop_last: bool = False, seed: int = 0) -> QueryBalancedBatchSampler:
    return QueryBalancedBatchSampler(datasets.Dataset(table), batch_size, drop_last, ["label", "score"], None, seed)


def one_pass(s: QueryBalancedBatchSampler, epoch: int = 0) -> list[list[int]]:
    s.set_epoch(epoch)
    return list(s)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.integers(1, 12), min_size=2, max_size=40), pool=st.sampled_from([0, 15, 40]),
       batch_size=st.integers(2, 8), seed=st.integers(0, 2**16), epoch=st.integers(0, 5))
def test_a_pass_serves_every_query_exactly_once_and_never_repeats_a_text_in_a_batch(rows, pool, batch_size, seed,
                                                                                       epoch):
    """Tables whose queries have 1-12 positives, with documents shared between queries (pool 15 or 40, so
    rows clash and are deferred) or not: one pass holds each query's row once, no batch repeats a text
    (query, positive or negative), batches are full except where every row left clashes, and the number
    of rows served is the number of queries, not of rows."""
    table = table_of(rows, pool, seed)
    s = sampler(table, batch_size, seed=seed)
    batches = one_pass(s, epoch)
    served = [r for b in batches for r in b]
    anchors = table.column("anchor").to_pylist()
    assert sorted(Counter(anchors[r] for r in served).values()) == [1] * len(rows)
    assert len(served) == len(rows) == s.num_queries
    for b in batches:
        texts = [t for r in b for t in (anchors[r], table["positive"][r].as_py(), table["negative_1"][r].as_py())]
        assert len(texts) == len(set(texts))
    if not pool:  # nothing clashes: full batches but the last, as many as __len__ says
        assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
        assert len(batches) == len(s)


def test_a_query_with_many_positives_is_served_as_often_as_one_with_a_single_positive_and_draws_all_of_them():
    """One query with 60 positives among 40 queries with one: sampled by row (what NO_DUPLICATES does)
    it would fill 60% of a pass; here it is once per pass like every other query, and over 300 passes
    its draws spread over its positives (each row 5 times on average; none left out)."""
    table = table_of([60] + [1] * 40)
    s = sampler(table, batch_size=8)
    anchors = np.array(table.column("anchor").to_pylist())
    draws = Counter()
    for epoch in range(300):
        served = [r for b in one_pass(s, epoch) for r in b]
        assert Counter(anchors[served].tolist()) == Counter(set(anchors.tolist()))
        draws.update(r for r in served if anchors[r] == "q0")
    assert set(draws) == set(range(60))
    assert max(draws.values()) < 16  # expected 5; 16 is beyond any seed's luck at p ~ 1e-4 per row


def test_the_draw_is_seeded_by_the_seed_and_the_epoch():
    table = table_of([5, 3, 1, 7, 2, 2, 9, 1], shared_docs=12)
    a, b = one_pass(sampler(table, seed=3), 1), one_pass(sampler(table, seed=3), 1)
    assert a == b
    assert one_pass(sampler(table, seed=3), 2) != a
    assert one_pass(sampler(table, seed=4), 1) != a


def test_drop_last_drops_the_short_batch_and_len_counts_queries():
    table = table_of([3] * 10)
    s = sampler(table, batch_size=4, drop_last=True)
    assert len(s) == 2
    assert [len(b) for b in one_pass(s)] == [4, 4]
    assert len(sampler(table, batch_size=4)) == 3


def test_query_balanced_trains_on_a_real_nfcorpus_slice_end_to_end(scifact_dir, static_model, cache_dir, tmp_path,
                                                                   monkeypatch):
    """Real NFCorpus train queries (many positives each), BM25-mined: the trainer uses the sampler when the
    switch is on, an epoch is one row per query, the manifest and settings key record it."""
    collection = hardneg.load(scifact_dir.parent / "nfcorpus", "train").slice(40, extra_docs=400, seed=0)
    run = hardneg.mine(collection, teacher="bm25", num_negatives=2, out=str(tmp_path / "run"),
                       cache_dir=str(cache_dir))
    passes: list[tuple[int, int]] = []  # (epoch, rows) of every pass drawn
    draw = QueryBalancedBatchSampler.draw

    def counting(self: QueryBalancedBatchSampler, rng: np.random.Generator) -> np.ndarray:
        rows = draw(self, rng)
        passes.append((self.epoch, len(rows)))
        return rows

    monkeypatch.setattr(QueryBalancedBatchSampler, "draw", counting)
    out = hardneg.train(run, tmp_path / "m", model=static_model, loss="mnrl-hn", query_balanced=True, batch_size=8,
                        max_steps=6, warmup_ratio=0.0, progress=False)
    manifest = json.loads((Path(out) / "hardneg_train.json").read_text())
    assert manifest["train_rows"] > 2 * 40  # one row per (query, positive) in the table ...
    assert passes and {n for _, n in passes} == {40}  # ... one per query in a pass; 6 steps of 8 need two
    assert [e for e, _ in passes][:2] == [0, 1] and manifest["steps"] == 6  # passes, drawn anew (the trainer's epoch)
    assert manifest["config"]["query_balanced"] is True
    off = TrainConfig(run="r", out="o")
    assert "query_balanced" not in off.fingerprint_settings()  # off: older models keep their key
    assert TrainConfig(run="r", out="o", query_balanced=True).fingerprint_settings()["query_balanced"] is True
    with pytest.raises(ConfigError, match="exclude each other"):
        hardneg.train(run, tmp_path / "m2", model=static_model, query_balanced=True, hard_batches=True,
                      max_steps=1, progress=False)
