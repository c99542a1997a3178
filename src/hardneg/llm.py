"""LLM relevance judge: P(relevant) for (query, document) from the yes/no next-token logits.

Two backends behind one interface:
- ``http``: any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, hosted APIs). Base URL,
  model, key from the environment, concurrency, retries with backoff and timeouts.
- ``gguf``: a local GGUF model in process with llama.cpp, reading the last-token logits.

Answers go to a persistent SQLite cache keyed by (backend, model, prompt), so a rerun costs nothing.
A reply that cannot be read is retried and then reported as an error: it is never taken to mean
"not relevant"."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, HardnegError

PROMPT = ("Decide whether the document answers or is relevant to the query.\n\n"
          "Query: {query}\nDocument: {doc}\n\nRelevant (yes or no)? Answer:")
YES = ("yes", "Yes", "YES")
NO = ("no", "No", "NO")
API_KEY_ENV = ("HARDNEG_LLM_API_KEY", "OPENAI_API_KEY")


class LLMReplyError(HardnegError):
    """The endpoint gave no readable yes/no answer after every retry."""


@dataclass
class LLMConfig:
    """Where the judge runs and how patiently it asks."""

    target: str                     # http(s)://host:port/v1 or a .gguf path
    model: str = "default"
    concurrency: int = 4
    retries: int = 3
    timeout: float = 30.0
    backoff: float = 0.5
    max_doc_chars: int = 1500
    prompt: str = PROMPT

    @property
    def backend(self) -> str:
        return "http" if self.target.startswith(("http://", "https://")) else "gguf"


def yes_probability(top: dict[str, float]) -> float:
    """P(yes) from next-token log-probabilities (tokens with or without a leading space). Raises if
    neither answer is among them: an unreadable reply is an error, not a "no"."""
    yes = [math.exp(v) for k, v in top.items() if k.strip() in YES]
    no = [math.exp(v) for k, v in top.items() if k.strip() in NO]
    if not yes and not no:
        raise LLMReplyError(f"no yes/no token among the top log-probabilities ({', '.join(list(top)[:8])})")
    y, n = sum(yes), sum(no)
    return y / (y + n)


class _Cache:
    """(key -> probability) in SQLite; safe across threads and reruns."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, p REAL NOT NULL)")
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        with self._lock:
            for s in range(0, len(keys), 500):
                chunk = keys[s:s + 500]
                rows = self._db.execute(f"SELECT key, p FROM answers WHERE key IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall()
                out.update(dict(rows))
        return out

    def put(self, key: str, p: float) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, p))


class LLMJudge:
    """Calibrated-enough relevance probabilities from an LLM, cached. Errors are collected, not hidden."""

    def __init__(self, cfg: LLMConfig, cache_dir: str | Path):
        self.cfg = cfg
        ident = f"{cfg.backend}\t{cfg.model if cfg.backend == 'http' else Path(cfg.target).name}\t{cfg.prompt}"
        self._ident = hashlib.sha256(ident.encode()).hexdigest()[:16]
        self.cache = _Cache(Path(cache_dir) / "llm" / f"{self._ident}.sqlite")
        self.calls = self.cache_hits = 0
        self.errors: list[str] = []
        self._llama: Any = None
        self._llama_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"kind": "llm", "backend": self.cfg.backend, "target": self.cfg.target, "model": self.cfg.model,
                "calls": self.calls, "cache_hits": self.cache_hits, "errors": len(self.errors),
                "first_errors": self.errors[:3]}

    def _prompt(self, query: str, doc: str) -> str:
        return self.cfg.prompt.format(query=query.strip(), doc=doc.strip()[: self.cfg.max_doc_chars])

    # ------------------------------------------------------------------ backends
    def _http(self, prompt: str) -> float:
        url = self.cfg.target.rstrip("/") + "/completions"
        body = json.dumps({"model": self.cfg.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0,
                           "logprobs": 10}).encode()
        headers = {"Content-Type": "application/json"}
        key = next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=self.cfg.timeout) as r:
            reply = json.loads(r.read().decode())
        try:
            top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            raise LLMReplyError(f"reply without top_logprobs: {str(reply)[:200]}") from None
        return yes_probability(top)

    def _gguf(self, prompt: str) -> float:
        with self._llama_lock:  # one llama.cpp context: calls are serialised
            if self._llama is None:
                os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
                from llama_cpp import Llama

                self._llama = Llama(model_path=self.cfg.target, n_ctx=1024, logits_all=False, verbose=False)
                tok = self._llama.tokenize
                self._yes = sorted({tok(w.encode(), add_bos=False)[0] for w in (" yes", "yes", " Yes", "Yes")})
                self._no = sorted({tok(w.encode(), add_bos=False)[0] for w in (" no", "no", " No", "No")})
            llm = self._llama
            tokens = llm.tokenize(prompt.encode())[-1000:]
            llm.reset()
            llm.eval(tokens)
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
            lp = np.concatenate([logits[self._yes], logits[self._no]]).astype(np.float64)
            e = np.exp(lp - lp.max())
            return float(e[: len(self._yes)].sum() / e.sum())

    def _ask(self, prompt: str) -> float:
        last: Exception | None = None
        for attempt in range(self.cfg.retries + 1):
            try:
                return self._http(prompt) if self.cfg.backend == "http" else self._gguf(prompt)
            except (urllib.error.URLError, TimeoutError, OSError, LLMReplyError, json.JSONDecodeError) as exc:
                last = exc
                if attempt < self.cfg.retries:
                    time.sleep(self.cfg.backoff * 2 ** attempt)
        raise LLMReplyError(f"{self.cfg.target}: no readable answer after {self.cfg.retries + 1} tries: {last}")

    # ------------------------------------------------------------------ public
    def probabilities(self, queries: list[str], docs: list[str], progress: bool = False) -> np.ndarray:
        """P(yes) per pair; NaN where the judge failed (the failure is in ``errors``)."""
        prompts = [self._prompt(q, d) for q, d in zip(queries, docs)]
        keys = [hashlib.sha256(p.encode()).hexdigest() for p in prompts]
        known = self.cache.get_many(sorted(set(keys)))
        self.cache_hits += sum(k in known for k in keys)
        todo = sorted({k: p for k, p in zip(keys, prompts) if k not in known}.items())

        def work(item: tuple[str, str]) -> None:
            key, prompt = item
            try:
                p = self._ask(prompt)
            except LLMReplyError as exc:
                self.errors.append(str(exc))
                return
            self.cache.put(key, p)
            known[key] = p

        workers = 1 if self.cfg.backend == "gguf" else max(1, self.cfg.concurrency)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, todo))
        self.calls += len(todo)
        return np.array([known.get(k, np.nan) for k in keys], dtype=np.float64)


def parse_llm_target(spec: str) -> str:
    """``llm:http://host:port/v1`` or ``llm:/path/model.gguf`` -> the target."""
    target = spec.split(":", 1)[1] if spec.startswith("llm:") else spec
    if not target.startswith(("http://", "https://")) and not Path(target).is_file():
        raise ConfigError(f"LLM judge '{spec}': not an http(s) URL and no such GGUF file")
    return target
