"""Specs are parsed once into typed values, checked before any work, and fingerprinted in one
canonical spelling together with the encoder ``auto`` resolved to (issue 12, defect 7)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hardneg
from hardneg.audit import audit
from hardneg.candidates.encoders import resolve_encoder
from hardneg.config import MineConfig
from hardneg.decisions.filters import CASCADE, FilterSpec
from hardneg.errors import ConfigError, RunError
from hardneg.sampling import SAMPLERS, SamplerSpec

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)


# ---------------------------------------------------------------- (a) equivalent spellings, one run
def test_equivalent_spellings_return_the_finished_run(scifact_slice, cache_dir, tmp_path):
    """``percpos:.95`` then ``percpos:0.95`` (and ``BM25``, ``top:1-``) at the same --out is the
    same run, stored in one canonical spelling; a BM25 run does not depend on --encoder."""
    out = tmp_path / "run"
    first = hardneg.mine(scifact_slice, teacher="bm25", filter="percpos:.95", num_negatives=2, out=str(out),
                         cache_dir=str(cache_dir))
    again = hardneg.mine(scifact_slice, teacher="bm25", filter="percpos:0.95", num_negatives=2, out=str(out),
                         cache_dir=str(cache_dir))
    assert again.manifest["created"] == first.manifest["created"]
    again = hardneg.mine(scifact_slice, teacher=" BM25 ", filter="PercPos:0.950", sampler="top:1-",
                         num_negatives=2, out=str(out), cache_dir=str(cache_dir), encoder="torch")
    assert again.manifest["created"] == first.manifest["created"]
    stored = json.loads((out / "manifest.json").read_text())["config"]
    assert (stored["teacher"], stored["filter"], stored["sampler"]) == ("bm25", "percpos:0.95", "top")
    with pytest.raises(RunError, match="other settings"):  # a real change is still one
        hardneg.mine(scifact_slice, teacher="bm25", filter="percpos:0.9", num_negatives=2, out=str(out),
                     cache_dir=str(cache_dir))


def _number(draw: st.DrawFn, v: float, plus: bool = True) -> str:
    """A spelling of ``v`` that parses to exactly ``v``: shortest, 17 digits, exponent, no leading zero
    (and no '+' where '+' joins rules)."""
    r = repr(v)
    texts = [r, f"{v:.17g}", f"{v:.17e}".upper(), r.replace("0.", ".", 1) if r.startswith("0.") else r]
    if plus and v >= 0:
        texts.append("+" + r)
    text = draw(st.sampled_from(texts))
    return draw(st.sampled_from(["", " "])) + (text if plus else text.replace("+", ""))


_ALIASES = {"percpos": ["percpos", "perc", "PercPos"], "margin": ["margin", "MARGIN"],
            "maxscore": ["maxscore", "max_score"], "minscore": ["minscore", "min_score"],
            "near_duplicate": ["near_duplicate", "neardup"], "near_positive": ["near_positive", "NearPos"],
            "knn_positive": ["knn_positive"]}
_DEFAULT = {"percpos": 0.95, "near_duplicate": 0.5, "knn_positive": 0.5}


@st.composite
def filter_rules(draw: st.DrawFn) -> tuple[FilterSpec, str]:
    """A rule and one of its spellings."""
    kind = draw(st.sampled_from(sorted(_ALIASES)))
    if kind in ("percpos", "near_positive") and draw(st.booleans()):
        return FilterSpec(kind, math.nan), f"{draw(st.sampled_from(_ALIASES[kind]))}:{draw(st.sampled_from(['auto', 'AUTO']))}"
    if kind in ("percpos", "near_duplicate", "knn_positive"):
        value = draw(st.sampled_from([_DEFAULT[kind], 1.0]) | st.floats(0, 1, exclude_min=True))
    else:
        value = draw(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
    name = draw(st.sampled_from(_ALIASES[kind]))
    if value == _DEFAULT.get(kind) and draw(st.booleans()):
        return FilterSpec(kind, value), name + draw(st.sampled_from(["", ":"]))  # the default value
    return FilterSpec(kind, value), f"{name}:{_number(draw, value, plus=False)}"


@st.composite
def filter_chains(draw: st.DrawFn) -> tuple[Any, str]:
    from hardneg.decisions.filters import FilterChain

    rules, words = [], []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 5)) == 0:  # the cascade, by name
            rules += FilterSpec.parse(CASCADE)
            words.append(draw(st.sampled_from(["cascade", "Cascade"])))
        else:
            rule, word = draw(filter_rules())
            rules.append(rule)
            words.append(word)
    if not words:
        return FilterChain(), draw(st.sampled_from(["none", "None", " ", "none+none"]))
    sep = draw(st.sampled_from(["+", ",", " + "]))
    return FilterChain(tuple(rules)), sep.join(words)


@st.composite
def samplers(draw: st.DrawFn) -> tuple[SamplerSpec, str]:
    kind = draw(st.sampled_from(SAMPLERS))
    lo, hi = 1, None
    if kind == "window" or draw(st.booleans()):
        lo = draw(st.integers(1, 500))
        hi = draw(st.none() | st.integers(lo, 1000))
        if kind == "window" and lo == 1 and hi is None:
            hi = 100
    params = {}
    if kind == "simans":
        if draw(st.booleans()):
            params["a"] = draw(st.floats(1e-6, 1e6))
        if draw(st.booleans()):
            params["b"] = draw(st.floats(-10, 10, allow_nan=False))
    parts = []
    if (lo, hi) != (1, None) or draw(st.booleans()):
        parts.append(f"{'0' * draw(st.integers(0, 2))}{lo}-{hi if hi is not None else ''}")
    parts += [f"{k}={_number(draw, v)}" for k, v in params.items()]
    parts = draw(st.permutations(parts))
    word = draw(st.sampled_from([kind, kind.upper()]))
    text = word + (":" + ",".join(parts) if parts else draw(st.sampled_from(["", ":"])))
    return SamplerSpec(kind, lo, hi, params), text


_MODEL = st.text("abzAZ09/._-:", min_size=1, max_size=12).filter(lambda m: m not in ("default", "minilm"))


@st.composite
def teacher_member(draw: st.DrawFn) -> tuple[tuple[str, str | None], str]:
    if draw(st.booleans()):
        stem = draw(st.booleans())
        word = draw(st.sampled_from(["bm25", "BM25", "Bm25"]))
        return ("bm25", "stem" if stem else None), word + (draw(st.sampled_from([":stem", ":STEM"])) if stem else "")
    word = draw(st.sampled_from(["dense", "Dense"]))
    model = draw(st.none() | _MODEL)
    if model is None:
        return ("dense", None), word + draw(st.sampled_from(["", ":", ":default", ":minilm"]))
    return ("dense", model), f"{word}:{model}"


@st.composite
def teachers(draw: st.DrawFn) -> tuple[Any, str]:
    from hardneg.config import TeacherSpec

    if draw(st.booleans()):
        member, text = draw(teacher_member())
        return TeacherSpec(member[0], (member,)), draw(st.sampled_from(["", " "])) + text
    drawn = draw(st.lists(teacher_member(), min_size=2, max_size=3))
    members = tuple(m for m, _ in drawn)
    if members == (("bm25", None), ("dense", None)) and draw(st.booleans()):
        return TeacherSpec("hybrid", members), draw(st.sampled_from(["hybrid", "Hybrid"]))
    return TeacherSpec("hybrid", members), "hybrid:" + "+".join(t for _, t in drawn)


def _fixed_point(parse, value, text: str) -> None:
    parsed = parse(text)
    assert parsed == value, (text, parsed, value)
    canonical = str(parsed)
    assert parse(canonical) == parsed, canonical
    assert str(parse(canonical)) == canonical


@SETTINGS
@given(filter_chains())
def test_filter_spellings_parse_to_one_canonical_string(case):
    from hardneg.decisions.filters import FilterChain

    _fixed_point(FilterChain.parse, *case)
    chain, text = case
    assert MineConfig(dataset="x", filter=text).model_dump()["filter"] == str(chain)


@SETTINGS
@given(samplers())
def test_sampler_spellings_parse_to_one_canonical_string(case):
    _fixed_point(SamplerSpec.parse, *case)
    spec, text = case
    assert MineConfig(dataset="x", sampler=text).model_dump()["sampler"] == str(spec)


@SETTINGS
@given(teachers())
def test_teacher_spellings_parse_to_one_canonical_string(case):
    from hardneg.config import TeacherSpec

    _fixed_point(TeacherSpec.parse, *case)
    spec, text = case
    assert MineConfig(dataset="x", teacher=text).model_dump()["teacher"] == str(spec)


# ---------------------------------------------------------------- (b) bad specs, before any work
BAD_SPECS = [
    (["--teacher", "bm25:foo"], "teacher", "bm25:foo"),
    (["--teacher", "hybrid:bm25+nope"], "teacher", "nope"),
    (["--filter", "percpos:abc"], "filter", "percpos:abc"),
    (["--filter", "bogus:1"], "filter", "bogus:1"),
    (["--filter", "maxscore:nan"], "filter", "maxscore:nan"),
    (["--sampler", "window:9-3"], "sampler", "window:9-3"),
    (["--search", "faiss-nope"], "search", "faiss-nope"),
    (["--judge", "bogus:x"], "judge", "bogus:x"),
    (["--judge", "cross-encoder:/no/such/judge"], "judge", "/no/such/judge"),
    (["--judge", "llm:/no/such/model.gguf"], "judge", "/no/such/model.gguf"),
    (["--judge", "llm:"], "judge", "llm:"),
    (["--encoder", "tensorrt"], "encoder", "tensorrt"),
    (["--teacher", "bm25", "--filter-on", "dense"], "filter_on", "dense"),
]


def _hardneg() -> str:
    exe = Path(sys.executable).with_name("hardneg")
    if not exe.exists():
        pytest.fail(f"the installed `hardneg` command is missing next to {sys.executable}")
    return str(exe)


@pytest.mark.parametrize(("args", "option", "value"), BAD_SPECS, ids=[" ".join(a) for a, _, _ in BAD_SPECS])
def test_bad_spec_is_one_line_error_before_the_data_is_read(args, option, value, tmp_path):
    """Through the installed command. The dataset does not exist: an error about it would mean the data
    was read before the spec was checked."""
    dataset, out = tmp_path / "no-such-dataset", tmp_path / "run"
    proc = subprocess.run([_hardneg(), "mine", "--dataset", str(dataset), *args, "--out", str(out), "--quiet"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
                          check=False)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert option in lines[0] and value in lines[0], lines[0]
    assert "no-such-dataset" not in lines[0], lines[0]
    assert not out.exists() and not (tmp_path / ".run.partial").exists()


def test_api_checks_specs_before_loading(tmp_path):
    """mine, audit and evaluate parse the teacher spec before they read the (missing) dataset."""
    missing = str(tmp_path / "no-such-dataset")
    for call in (lambda: hardneg.mine(missing, teacher="bm25:foo", out=str(tmp_path / "run")),
                 lambda: audit(missing, teacher="bm25:foo"),
                 lambda: hardneg.evaluate(missing, teacher="bm25:foo")):
        with pytest.raises(ConfigError, match=r"^teacher: .*'bm25:foo'"):
            call()
    assert not (tmp_path / "run").exists()


def test_a_model_that_is_nowhere_is_a_config_error(tmp_path):
    """Resolving ``auto`` may need the model's folder, before the data is read: a model that is neither
    a folder nor on the Hub (offline here) is an error naming it, not a traceback from the Hub client."""
    from hardneg.runs.fingerprint import resolve_model

    for model in (str(tmp_path / "no-such-model"), "no-such-org/no-such-model"):
        with pytest.raises(ConfigError, match=f"model '{model}': no such folder"):
            resolve_model(model)


# ---------------------------------------------------------------- (c) the resolved encoder
def test_fingerprint_covers_the_encoder_auto_resolved_to(scifact_slice, static_model, cache_dir, tmp_path):
    """A run made with ``auto`` records what it resolved to; asking for that encoder by name is the same
    run, while ``auto`` resolving to another encoder (here: on a GPU device, fp32 torch) is not."""
    on_cpu = resolve_encoder("auto", "cpu", static_model)
    on_gpu = resolve_encoder("auto", "cuda", static_model)
    if on_cpu == on_gpu:
        pytest.skip(f"`auto` is {on_cpu} on this CPU and on a GPU alike (no native bf16)")
    out = tmp_path / "run"
    opts = {"teacher": f"dense:{static_model}", "num_negatives": 2, "out": str(out), "cache_dir": str(cache_dir)}
    first = hardneg.mine(scifact_slice, encoder="auto", device="cpu", **opts)
    with pytest.raises(RunError, match="other settings"):  # not returned as unchanged
        hardneg.mine(scifact_slice, encoder="auto", device="cuda", **opts)
    same = hardneg.mine(scifact_slice, encoder=on_cpu, device="cpu", **opts)
    assert same.manifest["created"] == first.manifest["created"]
    with pytest.raises(RunError, match="other settings"):
        hardneg.mine(scifact_slice, encoder=on_gpu, device="cpu", **opts)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["encoder"] == "auto"
    assert manifest["encoder"] == {"asked": "auto", "resolved": {static_model: on_cpu}}
    assert manifest["teacher"]["encoder"] == on_cpu


def test_llm_judge_is_a_typed_spec_with_one_spelling():
    """The LLM judge is parsed once like the other specs: case and spaces around it do not change the
    run's settings, and the manifest keeps the canonical string."""
    from hardneg.config import LLMJudgeSpec, MineConfig

    a = MineConfig(dataset="d", llm_judge=" LLM:http://127.0.0.1:8080/v1 ")
    b = MineConfig(dataset="d", llm_judge="llm:http://127.0.0.1:8080/v1")
    assert a.llm_judge == b.llm_judge == LLMJudgeSpec("http://127.0.0.1:8080/v1")
    assert a.model_dump()["llm_judge"] == "llm:http://127.0.0.1:8080/v1"
