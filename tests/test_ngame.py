"""NGAME: hard batches (clusters of similar queries) and the id-masked InfoNCE loss (mnrl-idmask)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import hardneg
from hardneg.training import TrainConfig, training_table
from hardneg.training.hard_batches import HardBatchSampler, balanced_clusters, model_embedder
from hardneg.training.id_masking import IdMaskedMNRLLoss, id_labels


@pytest.fixture(scope="module")
def ngame_run(scifact_train, cache_dir, tmp_path_factory):
    """200 real SciFact train queries with 3 BM25 negatives each, in a corpus of ~3k abstracts."""
    out = tmp_path_factory.mktemp("ngame") / "run"
    return hardneg.mine(scifact_train.slice(200, extra_docs=3000, seed=0), teacher="bm25", num_negatives=3,
                        out=str(out), cache_dir=str(cache_dir))


@pytest.fixture(scope="module")
def student(static_model):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(static_model)


def sampler(table, embed, batch_size=16, seed=0, **options) -> HardBatchSampler:
    import datasets

    return HardBatchSampler(datasets.Dataset(table), batch_size, False, ["label", "score"], None, seed,
                            embed=embed, **options)


def texts_of(table, batch: list[int]) -> list[str]:
    cols = [c for c in table.column_names if c != "label"]
    rows = table.take(batch).select(cols).to_pylist()
    return [t for r in rows for t in r.values()]


def mean_similarity(batches: list[list[int]], emb: np.ndarray) -> float:
    """Mean cosine similarity of two rows' queries in one batch, over the batches."""
    return float(np.mean([(emb[b] @ emb[b].T)[~np.eye(len(b), dtype=bool)].mean() for b in batches if len(b) > 1]))


def similarity_against_random(batches: list[list[int]], emb: np.ndarray) -> tuple[float, list[float]]:
    """The batches' mean similarity, and that of 20 seeded random batchings of the same sizes."""
    rng = np.random.default_rng(0)
    cuts = np.cumsum([len(b) for b in batches])[:-1]
    n = sum(len(b) for b in batches)
    return mean_similarity(batches, emb), [mean_similarity(np.split(rng.permutation(n), cuts), emb)
                                           for _ in range(20)]


def test_balanced_clusters_are_exact_sized_seeded_and_find_planted_groups():
    """Four tight groups of 8 points (shuffled): clusters of 8 are the groups, every cluster is full
    but the remainder, and the same seed gives the same clusters."""
    rng = np.random.default_rng(0)
    centres = np.linalg.qr(rng.normal(size=(16, 4)))[0].T  # 4 orthonormal directions
    group = rng.permutation(np.repeat(np.arange(4), 8))
    emb = centres[group] + 0.05 * rng.normal(size=(32, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = balanced_clusters(emb, 8, seed=0)
    assert sorted(np.bincount(labels)) == [8, 8, 8, 8]
    assert all(np.unique(group[labels == c]).size == 1 for c in range(4))  # each cluster is one planted group
    sizes = np.bincount(balanced_clusters(rng.normal(size=(43, 8)), 5, seed=1))
    assert sorted(sizes) == [3] + [5] * 8
    x = rng.normal(size=(60, 8))
    assert np.array_equal(balanced_clusters(x, 4, seed=3), balanced_clusters(x, 4, seed=3))


def test_with_one_row_per_query_every_batch_is_a_union_of_whole_clusters(ngame_run, student):
    """Real SciFact queries, one row each and no text shared by two rows (so nothing is deferred):
    each batch holds exactly batch_size / cluster_size whole clusters, every row is served once, and
    the order is the seed's."""
    import pyarrow as pa

    table = training_table(ngame_run, "mnrl")
    anchors = np.array(table.column("anchor").to_pylist(), dtype=object)
    positives = np.array(table.column("positive").to_pylist(), dtype=object)
    _, first_query = np.unique(anchors, return_index=True)
    keep = first_query[np.unique(positives[first_query], return_index=True)[1]]
    table = table.take(pa.array(np.sort(keep)[:96]))  # 96 queries: 24 clusters of 4, 6 batches of 16
    embed = model_embedder(student)
    s = sampler(table, embed, cluster_size=4)
    batches = list(s)
    assert [len(b) for b in batches] == [16] * 6 and sorted(np.concatenate(batches).tolist()) == list(range(96))
    cluster_of_row = s.cluster_of_query[s.query_of_row]
    assert np.bincount(cluster_of_row).tolist() == [4] * 24
    for b in batches:
        in_batch = cluster_of_row[b]
        assert np.unique(in_batch).size == 4
        assert all(np.sum(cluster_of_row == c) == np.sum(in_batch == c) for c in in_batch)  # whole clusters
    hard, random = similarity_against_random(batches, embed(s.query_texts)[s.query_of_row])
    assert hard > max(random) + 0.01, (hard, random)
    assert batches == list(sampler(table, embed, cluster_size=4))  # seeded: the same batches again
    assert batches != list(sampler(table, embed, seed=1, cluster_size=4))
    s.set_epoch(1)
    assert list(s) != batches  # a new epoch, a new order of the same clusters


def test_hard_batches_are_clustered_and_never_repeat_a_text(ngame_run, student):
    """On the mined n-tuples (similar SciFact queries share positives and BM25 negatives, so the rule
    parts them): no text twice in a batch, each row once a pass, a batch short only when every row left
    clashes with it, and the queries of a batch more alike than in any of 20 random batchings of the same
    sizes (by the sampler's own model)."""
    table = training_table(ngame_run, "mnrl-idmask")
    embed = model_embedder(student)
    s = sampler(table, embed, cluster_size=16)
    batches = list(s)
    assert sorted(np.concatenate(batches).tolist()) == list(range(table.num_rows))
    for b in batches:
        texts = texts_of(table, b)
        assert len(texts) == len(set(texts))
    short = [i for i, b in enumerate(batches) if len(b) < 16]
    assert len(short) <= 3
    for i in short:  # a short batch: every row served after it clashes with it
        inside = set(texts_of(table, batches[i]))
        assert all(inside & set(texts_of(table, [r])) for b in batches[i + 1:] for r in b)

    hard, random = similarity_against_random(batches, embed(s.query_texts)[s.query_of_row])
    assert hard > max(random) + 0.02, (hard, max(random))


def test_on_real_batches_the_mask_drops_exactly_the_qrels_positives_of_each_rows_query(ngame_run, student):
    """The loss's mask on the sampler's batches and on random ones, checked against the collection's
    qrels: candidate j is masked for row i iff its document is a positive of row i's query, j != i."""
    table = training_table(ngame_run, "mnrl-idmask")
    ids = torch.tensor(np.array(table.column("label").to_pylist()))
    qrels = ngame_run.collection().positives()
    judged = set(zip(qrels.query_idx.tolist(), qrels.doc_idx.tolist()))
    loss = IdMaskedMNRLLoss(None)
    loss.remember_positives(ids[:, 0].numpy(), ids[:, 1].numpy())
    perm = np.random.default_rng(0).permutation(table.num_rows)
    batches = list(sampler(table, model_embedder(student), cluster_size=4)) + np.array_split(perm, 15)
    masked = 0
    for b in batches:
        rows = ids[b]
        docs = rows[:, 1:].T.reshape(-1).tolist()
        expected = [[(q, d) in judged and i != j for j, d in enumerate(docs)] for i, q in enumerate(rows[:, 0].tolist())]
        assert loss.positive_mask(rows).tolist() == expected
        masked += int(np.sum(expected))
    assert masked > 0


def test_reclustering_reads_the_current_model_every_n_batches(ngame_run):
    """recluster_every=3: the queries are embedded before the first batch and again every 3 batches
    served (only the queries with rows left), and the batches after a refresh follow the new
    embeddings; with 0 the clusters are computed once for every epoch."""
    table = training_table(ngame_run, "mnrl")
    rng = np.random.default_rng(0)
    anchors = sorted(set(table.column("anchor").to_pylist()))
    vectors = {"before": dict(zip(anchors, rng.normal(size=(len(anchors), 8)))),
               "after": dict(zip(anchors, rng.normal(size=(len(anchors), 8))))}
    calls: list[int] = []
    model = {"state": "before"}

    def embed(texts: list[str]) -> np.ndarray:  # a model whose embeddings change when it is trained
        calls.append(len(texts))
        return np.stack([vectors[model["state"]][t] for t in texts]).astype(np.float32)

    s = sampler(table, embed, cluster_size=4, recluster_every=3)
    batches = list(s)
    assert s.refreshes == len(calls) == 1 + (len(batches) - 1) // 3 > 2
    assert calls[0] == len(s.query_texts) and all(n < calls[0] for n in calls[1:])
    assert list(sampler(table, embed, cluster_size=4, recluster_every=3)) == batches

    class Trained(HardBatchSampler):  # the model moves after the first refresh
        def _recluster(self, queries: np.ndarray) -> None:
            super()._recluster(queries)
            model["state"] = "after"

    import datasets

    moved = list(Trained(datasets.Dataset(table), 16, False, ["label"], None, 0, embed=embed, cluster_size=4,
                         recluster_every=3))
    model["state"] = "before"
    assert moved[:3] == batches[:3] and moved[3:] != batches[3:]
    calls.clear()
    once = sampler(table, embed, cluster_size=4)
    for epoch in (0, 1):
        once.set_epoch(epoch)
        list(once)
    assert calls == [len(once.query_texts)]


def test_id_labels_are_the_ids_of_the_table_texts(ngame_run):
    table = training_table(ngame_run, "mnrl-idmask")
    col = ngame_run.collection()
    ids = id_labels(ngame_run, 2)
    assert ids.shape == (table.num_rows, 4)
    assert np.array_equal(np.array(table.column("label").to_pylist())[:, :4], ids)
    assert [col.query_texts[i] for i in ids[:, 0]] == table.column("anchor").to_pylist()
    for j, name in enumerate(["positive", "negative_1", "negative_2"], start=1):
        assert [col.doc_texts[i] for i in ids[:, j]] == table.column(name).to_pylist()


def tiny_batch() -> tuple[list[torch.Tensor], torch.Tensor]:
    """Two rows [query, positive, negative] as 2-d embeddings (angles) and their id labels:
    A = (q0, d10, d12), B = (q1, d11, d13)."""

    def unit(*deg: float) -> torch.Tensor:
        r = torch.deg2rad(torch.tensor(deg, dtype=torch.float64))
        return torch.stack([torch.cos(r), torch.sin(r)], dim=1)

    embeddings = [unit(0.0, 40.0), unit(30.0, 10.0), unit(45.0, 120.0)]  # queries, positives, negatives
    return embeddings, torch.tensor([[0, 10, 12], [1, 11, 13]])


def hand_loss(masked: dict[int, set[int]]) -> float:
    """-mean log softmax of the own positive over cos * 20, leaving out the masked columns per row.
    Candidate columns: d10 (30 deg), d11 (10), d12 (45), d13 (120); queries at 0 and 40 deg."""
    cand = np.deg2rad([30.0, 10.0, 45.0, 120.0])
    losses = []
    for i, q in enumerate(np.deg2rad([0.0, 40.0])):
        logits = 20 * np.cos(q - cand)
        keep = [j for j in range(4) if j not in masked.get(i, set())]
        losses.append(-(logits[i] - np.log(np.exp(logits[keep]).sum())))
    return float(np.mean(losses))


def test_id_mask_drops_other_queries_positives_and_matches_a_hand_computed_loss():
    """qrels: q0 -> {d10, d11}, q1 -> {d11, d12}. B's positive d11 is an in-batch candidate of A and A's
    positive too: masked for A. A's mined negative d12 is a positive of q1: masked for B. Own positives
    stay. Unmasked, the loss is sentence-transformers' MNRL (and differs from the masked value)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    embeddings, labels = tiny_batch()
    loss = IdMaskedMNRLLoss(None)
    loss.remember_positives(np.array([0, 0, 1, 1]), np.array([10, 11, 11, 12]))
    mask = loss.positive_mask(labels)
    assert mask.tolist() == [[False, True, False, False], [False, False, True, False]]
    value = float(loss.compute_loss_from_embeddings(embeddings, labels))
    assert value == pytest.approx(hand_loss({0: {1}, 1: {2}}), rel=1e-9)
    assert loss.masked_fraction == pytest.approx(2 / 8)

    plain = IdMaskedMNRLLoss(None)  # no qrels: only the rows' own pairs are known, nothing to mask here
    unmasked = float(plain.compute_loss_from_embeddings(embeddings, labels))
    assert unmasked == pytest.approx(hand_loss({}), rel=1e-9)
    mnrl = MultipleNegativesRankingLoss(None)  # type: ignore[arg-type]
    assert unmasked == pytest.approx(float(mnrl.compute_loss_from_embeddings(embeddings, labels)), rel=1e-9)
    assert abs(value - unmasked) > 0.1
    with pytest.raises(ValueError, match="label column of ids"):
        loss.compute_loss_from_embeddings(embeddings, None)


def test_hard_batches_and_the_id_mask_train_a_model_end_to_end(ngame_run, static_model, tmp_path, monkeypatch):
    """Three real steps through hardneg.train with both switches on (re-clustered every 2 steps): the
    trainer's sampler clusters with the student before the first step and again after two, the
    manifest records the switches, the loss knows every positive pair of the table, the weights moved."""
    from safetensors.numpy import load_file

    refreshed_at: list[int] = []
    recluster = HardBatchSampler._recluster

    def counting(self: HardBatchSampler, queries: np.ndarray) -> None:
        refreshed_at.append(self.served)
        recluster(self, queries)

    monkeypatch.setattr(HardBatchSampler, "_recluster", counting)
    out = hardneg.train(ngame_run, tmp_path / "m", model=static_model, loss="mnrl-idmask", hard_batches=True,
                        cluster_size=4, recluster_every=2, batch_size=8, max_steps=3, warmup_ratio=0.0,
                        progress=False)
    assert refreshed_at[:2] == [0, 2]
    manifest = json.loads((Path(out) / "hardneg_train.json").read_text())
    assert manifest["steps"] == 3 and np.isfinite(manifest["train_loss"]) and manifest["train_loss"] > 0
    assert manifest["config"] | {"hard_batches": True, "cluster_size": 4, "recluster_every": 2} == manifest["config"]
    assert manifest["loss"]["class"] == "IdMaskedMNRLLoss"
    assert manifest["loss"]["positive_pairs"] == manifest["train_rows"]
    assert manifest["columns"][-1] == "label"
    before, after = (load_file(str(Path(p) / "model.safetensors")) for p in (static_model, out))
    assert max(float(np.abs(before[k] - after[k]).max()) for k in before) > 1e-7


def test_the_switches_are_trainconfig_fields_usable_from_an_experiment_variant():
    """A variant's ``train:`` options switch both on; off, they leave the settings key as it was."""
    from hardneg.experiment.config import ExperimentConfig

    cfg = ExperimentConfig(dataset="d", variants=[{"name": "ngame", "loss": "mnrl-idmask",
                                                   "train": {"hard_batches": True, "cluster_size": 4}}])
    v = cfg.variants[0]
    tc = TrainConfig(run="r", out="o", loss=v.loss, **(cfg.budget.model_dump() | v.budget | v.train))
    assert (tc.hard_batches, tc.cluster_size, tc.recluster_every, tc.loss) == (True, 4, 0, "mnrl-idmask")
    off = TrainConfig(run="r", out="o")
    assert not off.hard_batches  # off by default, and then out of the fingerprint (older models keep their key)
    assert not {"hard_batches", "cluster_size", "recluster_every"} & off.fingerprint_settings().keys()
    assert {"hard_batches", "cluster_size", "recluster_every"} <= tc.fingerprint_settings().keys()
    with pytest.raises(ValueError):
        TrainConfig(run="r", out="o", cluster_size=0)
