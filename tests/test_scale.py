"""Issue 5: on-disk embeddings read in bounded pieces, memory-bounded search, kill -9 and resume,
encoder options, and the Ray backend against the local one."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hardneg.candidates.search import knn_block_topk, running_topk
from hardneg.runs.store import EmbeddingMatrix, write_rows


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rows_written_in_any_order_read_back_exactly(tmp_path, dtype):
    rng = np.random.default_rng(0)
    x = _unit(rng, 1000, 16)
    order = rng.permutation(1000)
    pieces = [(order[s:s + 128], x[order[s:s + 128]]) for s in range(0, 1000, 128)]
    m = EmbeddingMatrix(write_rows(tmp_path / "e.npy", pieces, x.shape, dtype))
    want = x.astype(dtype).astype(np.float32)
    assert m.shape == x.shape and m.dtype == dtype
    np.testing.assert_array_equal(m[10:500], want[10:500])
    idx = rng.integers(0, 1000, size=300)
    np.testing.assert_array_equal(m[idx], want[idx])
    np.testing.assert_array_equal(np.asarray(m), want)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed, not left behind


def test_search_peak_memory_is_a_chunk_not_the_corpus(tmp_path):
    """A corpus 100x larger than a chunk: traced numpy allocations stay far below the corpus size
    (a few (queries x chunk) blocks), and the result is the exact top-k."""
    rng = np.random.default_rng(1)
    n, dim, nq, k, chunk = 400_000, 32, 200, 10, 4000
    docs = _unit(rng, n, dim)
    queries = _unit(rng, nq, dim)
    full = queries @ docs.T
    top = np.argpartition(-full, k, axis=1)[:, :k]
    want = np.take_along_axis(top, np.argsort(-np.take_along_axis(full, top, axis=1), axis=1), axis=1)
    del full
    m = EmbeddingMatrix(write_rows(tmp_path / "c.npy", [(np.arange(n), docs)], docs.shape))
    del docs

    for kwargs in ({"score_block": lambda rows, d0, d1: queries[rows] @ m[d0:d1].T},
                   {"block_topk": knn_block_topk(queries, m)}):
        tracemalloc.start()
        ids, scores = running_topk(kwargs.get("score_block"), nq, n, k, doc_chunk=chunk, query_chunk=64,
                                   block_topk=kwargs.get("block_topk"))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < m.nbytes / 6, f"peak {peak} bytes for a {m.nbytes}-byte corpus"
        got = np.take_along_axis(ids, np.argsort(-scores, axis=1, kind="stable"), axis=1)
        assert (got == want).mean() > 0.99  # float ties aside, the exact top-k


def _mine_cmd(data: Path, cache: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "hardneg", "mine", "--dataset", str(data), "--teacher", "dense",
            "--filter", "percpos:0.95", "--num-negatives", "3", "--depth", "30", "--max-length", "48",
            "--batch-size", "8", "--cache-dir", str(cache), "--out", str(out), "--quiet"]



def _kill_once(proc: subprocess.Popen, ready: Callable[[], bool], poll: float, timeout: float = 300) -> None:
    """kill -9 ``proc`` as soon as ``ready()`` (a file it writes is on disk); fail if it ends first."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "finished before the kill"
        assert time.time() < deadline
        time.sleep(poll)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

def test_killed_run_resumes_without_redoing_shards_and_gives_the_same_bytes(slice_dir, tmp_path):
    """kill -9 once the first embedding shard is on disk; the same command then finishes, encodes
    only what was missing, and writes the bytes of an uninterrupted run."""
    cache, out = tmp_path / "cache", tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_mine_cmd(slice_dir, cache, out), env=env, stderr=subprocess.PIPE)
    _kill_once(proc, lambda: bool(list(cache.glob("embeddings/*/shard-*-00000.npy"))), poll=0.05)
    assert not (out / "manifest.json").exists()
    finished = list(cache.glob("embeddings/*/shard-*.npy")) + list(cache.glob("embeddings/*/embeddings.npy"))
    assert finished, "the kill came before any shard was written"
    kept = sum(np.load(f, mmap_mode="r").shape[0] for f in finished)

    subprocess.run(_mine_cmd(slice_dir, cache, out), env=env, check=True)
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    total = manifest["counts"]["docs"] + manifest["counts"]["queries"]
    assert manifest["counts"]["encoded_texts"] == total - kept  # finished shards were kept, not re-encoded

    clean = tmp_path / "clean"
    subprocess.run(_mine_cmd(slice_dir, tmp_path / "cache2", clean), env=env, check=True)
    for f in ("negatives.parquet", "candidates.parquet"):
        assert (out / f).read_bytes() == (clean / f).read_bytes(), f


def test_onnx_encoders_agree_with_sentence_transformers(scifact_slice, tmp_path):
    """The ONNX export (from the local folder) gives ST's embeddings; int8 stays close; bf16 and
    OpenVINO (bf16 on this CPU, fp16 weights) too, over texts of every length in uneven batches."""
    from hardneg.candidates.encoders import load_encoder
    from hardneg.runs.fingerprint import resolve_model

    path = resolve_model(None)
    texts = list(scifact_slice.doc_texts[:24]) + list(scifact_slice.query_texts[:8])
    common = {"device": None, "max_length": 128, "normalize": True, "batch_size": 5, "export_dir": tmp_path}
    ref = load_encoder("torch", path, **common).encode(texts, "")
    for kind, floor in (("onnx", 0.9999), ("onnx-int8", 0.95), ("bf16", 0.99), ("openvino", 0.99)):
        got = load_encoder(kind, path, **common).encode(texts, "")
        assert got.dtype == np.float32 and got.shape == ref.shape
        cos = (got * ref).sum(axis=1)
        assert cos.min() > floor, (kind, cos.min())
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "model-int8.onnx").exists()
    assert sorted(p.name for p in (tmp_path / "openvino").iterdir()) == ["model.bin", "model.xml"]


def test_ray_backend_gives_the_local_negatives(scifact_slice, tmp_path, monkeypatch):
    """Encoding on Ray actors, search + filters as Ray tasks over query shards: the same bytes as
    the local backend, sharded or not."""
    pytest.importorskip("ray")
    import pyarrow.parquet as pq

    import hardneg
    passes = importlib.import_module("hardneg.candidates.passes")

    common = {"teacher": "dense", "filter": "percpos:0.95+near_duplicate:0.5", "num_negatives": 4, "depth": 20,
              "sampler": "simans", "max_length": 64}
    hardneg.mine(scifact_slice, cache_dir=str(tmp_path / "c1"), out=str(tmp_path / "local"), **common)
    monkeypatch.setattr(passes, "QUERY_SHARD", 7)  # 30 queries -> 5 shards of unequal width
    hardneg.mine(scifact_slice, cache_dir=str(tmp_path / "c1"), out=str(tmp_path / "sharded"), **common)
    ray = hardneg.mine(scifact_slice, cache_dir=str(tmp_path / "c2"), out=str(tmp_path / "ray"), backend="ray",
                       **common)
    assert ray.manifest["counts"]["encoded_texts"] > 0  # encoded by the actors, not read from a cache
    for other in ("sharded", "ray"):
        for f in ("negatives.parquet", "candidates.parquet"):
            assert pq.read_table(tmp_path / "local" / f).equals(pq.read_table(tmp_path / other / f)), (other, f)
            assert (tmp_path / "local" / f).read_bytes() == (tmp_path / other / f).read_bytes(), (other, f)
    import ray as ray_mod

    ray_mod.shutdown()


def test_fp16_embeddings_halve_the_cache_and_keep_the_negatives(scifact_slice, tmp_path):
    import json

    import hardneg

    common = {"teacher": "dense", "filter": "percpos:0.95", "num_negatives": 4, "depth": 30, "max_length": 64,
              "cache_dir": str(tmp_path)}
    a = hardneg.mine(scifact_slice, **common)
    b = hardneg.mine(scifact_slice, embedding_dtype="fp16", **common)
    sizes = {}
    for meta in tmp_path.glob("embeddings/*/meta.json"):
        m = json.loads(meta.read_text())
        if m["count"] == scifact_slice.num_docs:
            sizes[m["dtype"]] = (meta.parent / "embeddings.npy").stat().st_size
    assert sizes["fp16"] < 0.55 * sizes["fp32"]
    assert b.manifest["teacher"]["embedding_dtype"] == "fp16"
    same = sum(x == y for x, y in zip(a.negatives.column("negative_ids").to_pylist(),
                                      b.negatives.column("negative_ids").to_pylist()))
    assert same >= 0.9 * a.negatives.num_rows


def test_auto_encoder_is_bf16_on_a_bf16_cpu_through_openvino_when_installed(monkeypatch, static_model):
    """``auto``: OpenVINO, else torch bf16, on a CPU with native bf16; fp32 torch on other CPUs and on a
    GPU; torch bf16 for a model OpenVINO cannot take. Deciding imports neither torch nor openvino."""
    import importlib.util

    from hardneg.candidates import encoders
    from hardneg.runs.fingerprint import default_model_path

    installed = {"openvino"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed else None)
    monkeypatch.setattr(encoders, "cpu_bf16", lambda: True)
    assert encoders.resolve_encoder("auto", "cpu") == "openvino"
    assert encoders.resolve_encoder("auto", "cpu", default_model_path()) == "openvino"
    assert encoders.resolve_encoder("auto", "cpu", static_model) == "bf16"  # StaticEmbedding: no transformer
    assert encoders.resolve_encoder("auto", "cuda") == "torch"
    installed.clear()
    assert encoders.resolve_encoder("auto", "cpu") == "bf16"
    monkeypatch.setattr(encoders, "cpu_bf16", lambda: False)
    assert encoders.resolve_encoder("auto", "cpu") == "torch"
    assert encoders.resolve_encoder("onnx-int8", "cpu") == "onnx-int8"
    with pytest.raises(encoders.ConfigError, match="unknown encoder"):
        encoders.resolve_encoder("tensorrt", "cpu")
    code = ("import sys; from hardneg.candidates.encoders import resolve_encoder; print(resolve_encoder('auto', None)); "
            "assert not {'torch', 'openvino', 'onnxruntime'} & set(sys.modules), 'imported to decide'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def many_queries_dir(tmp_path_factory) -> Path:
    """A generated BEIR collection with 5,000 judged queries (three search shards of passes.QUERY_SHARD =
    2,048) over 5,000 documents: each full shard's BM25 search takes ~0.5 s, time to kill between two."""
    import json

    from hardneg.candidates.passes import QUERY_SHARD

    rng = np.random.default_rng(3)
    vocab = np.array([f"w{i}" for i in range(6000)])
    zipf = 1.0 / np.arange(1, vocab.size + 1)
    zipf /= zipf.sum()
    n_docs, n_q = 5_000, 5_000
    assert QUERY_SHARD < n_q // 2
    root = tmp_path_factory.mktemp("many-queries")
    (root / "qrels").mkdir()
    lengths = rng.integers(8, 30, n_docs)
    words = vocab[rng.choice(vocab.size, size=int(lengths.sum()), p=zipf)]
    cuts = np.cumsum(lengths)[:-1]
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i:05d}", "text": " ".join(w)}) + "\n" for i, w in enumerate(np.split(words, cuts))))
    pos = rng.integers(0, n_docs, n_q)
    # Each query shares a few words with its positive plus a couple of frequent ones.
    docs_words = np.split(words, cuts)
    qtexts = [" ".join(list(rng.choice(docs_words[p], size=3)) + list(vocab[rng.integers(0, 50, 2)])) for p in pos]
    (root / "queries.jsonl").write_text("".join(
        json.dumps({"_id": f"q{i:05d}", "text": t}) + "\n" for i, t in enumerate(qtexts)))
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i:05d}\td{p:05d}\t1\n" for i, p in enumerate(pos)))
    return root


def test_killed_run_resumes_at_the_next_search_shard_and_gives_the_same_bytes(many_queries_dir, hardneg_exe,
                                                                             tmp_path):
    """kill -9 once the first query shard's search is in the cache; the same command then loads the
    cached shard(s) (their files untouched), searches only the rest, and writes the bytes of an
    uninterrupted run."""
    cache, out = tmp_path / "cache", tmp_path / "run"

    def cmd(cache_dir: Path, out_dir: Path) -> list[str]:
        return [hardneg_exe, "mine", "--dataset", str(many_queries_dir), "--teacher", "bm25", "--filter", "none",
                "--num-negatives", "3", "--depth", "20", "--max-depth", "20", "--cache-dir", str(cache_dir),
                "--out", str(out_dir), "--quiet"]

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd(cache, out), env=env, stderr=subprocess.PIPE)
    _kill_once(proc, lambda: bool(list(cache.glob("searches/*.npz"))), poll=0.005)
    assert not (out / "manifest.json").exists()
    cached = {p: p.stat() for p in cache.glob("searches/*.npz")}
    assert 1 <= len(cached) < 3, f"{len(cached)} of 3 search shards cached at the kill"

    subprocess.run(cmd(cache, out), env=env, check=True)
    after = {p: p.stat() for p in cache.glob("searches/*.npz")}
    assert len(after) == 3  # the missing shards were searched and cached
    for p, st in cached.items():  # the cached ones were loaded, not searched and written again
        assert (after[p].st_ino, after[p].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), p.name
    import json

    assert json.loads((out / "manifest.json").read_text())["counts"]["search_cache_hit"] is False

    import hardneg

    clean = tmp_path / "clean"
    hardneg.mine(str(many_queries_dir), teacher="bm25", filter="none", num_negatives=3, depth=20, max_depth=20,
                 cache_dir=str(tmp_path / "cache2"), out=str(clean))
    for f in ("negatives.parquet", "candidates.parquet"):
        assert (out / f).read_bytes() == (clean / f).read_bytes(), f
