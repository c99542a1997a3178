"""Embedding cache: a new threshold never re-encodes; a new model, prompt or file always does;
a killed encode resumes at the first missing shard."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import hardneg
from hardneg.runs.cache import Cache
from hardneg.runs.fingerprint import default_model_path, folder_fingerprint


def test_threshold_change_reuses_embeddings_model_change_does_not(scifact_slice, static_model, tmp_path):
    cache = str(tmp_path / "cache")
    small = scifact_slice.slice(10, extra_docs=60)
    a = hardneg.mine(small, teacher="dense", filter="percpos:0.95", cache_dir=cache)
    n_texts = small.num_docs + small.judged_queries().size
    assert a.manifest["counts"]["encoded_texts"] == n_texts

    b = hardneg.mine(small, teacher="dense", filter="margin:0.02", sampler="random", cache_dir=cache)
    assert b.manifest["counts"]["encoded_texts"] == 0
    assert b.manifest["counts"]["search_cache_hit"]
    assert b.manifest["teacher"]["fingerprint"] == a.manifest["teacher"]["fingerprint"]

    c = hardneg.mine(small, teacher=f"dense:{static_model}", cache_dir=cache)
    assert c.manifest["counts"]["encoded_texts"] == n_texts
    d = hardneg.mine(small, teacher="dense", doc_prompt="passage: ", cache_dir=cache)
    assert d.manifest["counts"]["encoded_texts"] == small.num_docs  # queries' prompt unchanged
    e = hardneg.mine(small, teacher="dense", max_length=64, cache_dir=cache)
    assert e.manifest["counts"]["encoded_texts"] == n_texts


def test_model_fingerprint_covers_every_file(static_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(static_model, copy)
    before = folder_fingerprint(copy)
    assert before == folder_fingerprint(static_model)  # content, not location
    cfg = next(p for p in copy.rglob("*.json") if p.name != "config_sentence_transformers.json")
    cfg.write_text(cfg.read_text() + " ")
    assert folder_fingerprint(copy) != before
    assert folder_fingerprint(default_model_path()) != before


class Killed(Exception):
    pass


def test_killed_encode_resumes_at_missing_shard(tmp_path):
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(50)]
    calls: list[int] = []

    def encode(batch):
        calls.append(len(batch))
        return np.array([[len(t), t.count("1"), hash(t) % 97] for t in batch], dtype=np.float32)

    def dies_after_two(batch):
        if len(calls) == 2:
            raise Killed
        return encode(batch)

    cache = Cache(tmp_path)
    with pytest.raises(Killed):
        cache.embeddings("k", texts, dies_after_two, shard_size=8)
    assert len(list((tmp_path / "embeddings" / "k").glob("shard-*.npy"))) == 2
    resumed = Cache(tmp_path)
    emb = resumed.embeddings("k", texts, encode, shard_size=8)
    assert resumed.encoded_texts == 50 - 16  # only the missing shards
    fresh = Cache(tmp_path / "fresh").embeddings("k", texts, encode, shard_size=8)
    np.testing.assert_array_equal(emb, fresh)
    assert not list((tmp_path / "embeddings" / "k").glob("shard-*.npy"))  # merged, shards removed


def _rows(batch):
    return np.array([[len(t), int(t.split()[2])] for t in batch], dtype=np.float32)


def test_an_encode_resumed_or_shared_with_another_shard_size_keeps_every_row(tmp_path):
    """The dense teacher cuts shards of batch_size x 32 texts, evaluation 2,048: two processes of one grid (split by
    seed) met on the same corpus and model key, and one read the other's 2,048-row shard as its 1,024-row one
    (shape mismatch: the run died). Shards of another size are not this call's; a matrix that another process
    finishes meanwhile is taken as it is."""
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(50)]
    calls: list[int] = []

    def dies_after_two(batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise Killed
        return _rows(batch)

    with pytest.raises(Killed):
        Cache(tmp_path).embeddings("k", texts, dies_after_two, shard_size=16)
    resumed = Cache(tmp_path)
    np.testing.assert_array_equal(resumed.embeddings("k", texts, _rows, shard_size=8), _rows(texts))
    assert resumed.encoded_texts == 50  # a 16-text shard is not two 8-text ones
    assert not list((tmp_path / "embeddings" / "k").glob("*shard-*.npy"))

    other = Cache(tmp_path)

    def another_process_finishes_first(batch):  # the same key, encoded to the end by someone else meanwhile
        if not other.has_embeddings("k2"):
            other.embeddings("k2", texts, _rows, shard_size=16)
        return _rows(batch)

    np.testing.assert_array_equal(Cache(tmp_path).embeddings("k2", texts, another_process_finishes_first,
                                                             shard_size=8), _rows(texts))
    assert not list((tmp_path / "embeddings" / "k2").glob("*shard-*.npy"))


def test_warm_rerun_reads_collection_hashes_from_cache(scifact_slice, tmp_path, monkeypatch):
    """The corpus-sized hash arrays (text groups, id hashes) are computed on the first run only:
    a rerun on the same corpus reads them from the cache, equal to a fresh computation."""
    import hardneg.collection.hashes as hashes_mod
    from hardneg.decisions.filters import normalised_text_hash
    from hardneg.sampling import id_hashes

    calls = {"text": 0, "ids": 0}

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper

    monkeypatch.setattr(hashes_mod, "normalised_text_hash", counted("text", normalised_text_hash))
    monkeypatch.setattr(hashes_mod, "id_hashes", counted("ids", id_hashes))
    cache = tmp_path / "cache"
    small = scifact_slice.slice(10, extra_docs=60)
    a = hardneg.mine(small, teacher="bm25", num_negatives=3, cache_dir=str(cache))
    assert calls == {"text": 1, "ids": 2}
    assert len(list((cache / "hashes").glob("*.npz"))) == 2  # the corpus arrays, the query array

    hardneg.mine(small, teacher="bm25", num_negatives=3, filter="margin:0.02", cache_dir=str(cache))
    assert calls == {"text": 1, "ids": 2}  # the warm run hashed nothing
    cached = hashes_mod.collection_hashes(small, Cache(cache))
    assert calls == {"text": 1, "ids": 2}
    fresh_groups = np.unique(normalised_text_hash(small.doc_texts), return_inverse=True)[1]
    np.testing.assert_array_equal(cached.text_group, fresh_groups)
    np.testing.assert_array_equal(cached.doc_hash, id_hashes(small.doc_ids))
    np.testing.assert_array_equal(cached.query_hash, id_hashes(small.query_ids))
    assert cached.text_group.dtype == np.int64 and cached.doc_hash.dtype == np.uint64
    # same settings, same negatives, whether the hashes were computed or read
    c = hardneg.mine(small, teacher="bm25", num_negatives=3, cache_dir=str(cache))
    assert calls == {"text": 1, "ids": 2}
    assert c.negatives.equals(a.negatives) and c.candidates.equals(a.candidates)
