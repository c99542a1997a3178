"""LLM relevance judge: P(relevant) for (query, document) pairs from the yes/no next-token
probabilities of an :class:`~hardneg.decisions.llm_client.LLMClient` (an OpenAI-compatible server or
a local GGUF model).

Answers come from the client's persistent cache where it has them; the rest are asked concurrently.
A reply that cannot be read is retried and then counted as an error: it is never taken to mean "not
relevant". When the failed pairs pass ``max_error_rate`` of the judged ones (or the endpoint refuses
connections) the judge stops asking and raises, so a dead judge cannot silently hand its candidates
to the ranks below. ``mine`` checks the judge before any search."""

from __future__ import annotations

import hashlib
import math
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .llm_cache import answer_identity, gguf_identity, http_identity, split_credentials
from .llm_client import (
    PROBE,
    PROMPT,
    LLMClient,
    LLMConfig,
    LLMJudgeError,
    LLMReplyError,
    yes_probability,
)

__all__ = ["PROBE", "PROMPT", "LLMClient", "LLMConfig", "LLMJudge", "LLMJudgeError", "LLMReplyError",
           "answer_identity", "gguf_identity", "http_identity", "parse_llm_target", "split_credentials",
           "yes_probability"]


class LLMJudge(LLMClient):
    """Calibrated-enough relevance probabilities from an LLM, cached. Errors are counted, not hidden:
    past ``max_error_rate`` of the judged pairs they stop the judge with :class:`LLMJudgeError`.

    Args:
        cfg: where the judge runs (``LLMConfig(target)``: an ``http(s)://.../v1`` URL or a ``.gguf``
            path) and how patiently it asks (concurrency, retries, timeout, max_error_rate).
        cache_dir: the hardneg cache folder; answers go to ``llm/<identity>.sqlite`` there.

    Example::

        judge = LLMJudge(LLMConfig("http://localhost:8000/v1", model="qwen"), "~/.cache/hardneg")
        judge.check()
        p = judge.probabilities(["what are cells"], ["Cells are the basic unit of life."])
    """

    def __init__(self, cfg: LLMConfig, cache_dir: str | Path):
        super().__init__(cfg, cache_dir)
        self.calls = self.cache_hits = self.judged = self.failed_pairs = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"kind": "llm", "backend": self.cfg.backend, "target": self.endpoint, "model": self.model,
                "api": self.api, "file_sha256": self.file_sha256, "calls": self.calls,
                "cache_hits": self.cache_hits, "judged": self.judged, "errors": self.failed_pairs,
                "max_error_rate": self.cfg.max_error_rate, "first_errors": self.errors[:3],
                "last_error": self.errors[-1] if self.errors else None}

    def probabilities(self, queries: list[str], docs: list[str], progress: bool = False) -> np.ndarray:
        """P(yes) per pair; NaN where the judge failed (the failure is in ``errors``). Raises
        :class:`LLMJudgeError` once the failed pairs are sure to pass ``max_error_rate`` of the pairs
        judged so far (counting this call's), or when the endpoint refuses connections."""
        self.check()
        cache = self.cache
        assert cache is not None
        prompts = [self._prompt(q, d) for q, d in zip(queries, docs)]
        keys = [hashlib.sha256(p.encode()).hexdigest() for p in prompts]
        known = cache.get_many(sorted(set(keys)))
        hits = sum(k in known for k in keys)
        self.cache_hits += hits
        todo = sorted({k: p for k, p in zip(keys, prompts) if k not in known}.items())
        weight = Counter(keys)                      # pairs per distinct prompt
        total = self.judged + len(keys)
        allowed = self.cfg.max_error_rate * total   # failed pairs allowed once this call is done
        stop = threading.Event()
        fatal: list[LLMJudgeError] = []
        asked = [hits]                              # pairs judged in this call so far

        def work(item: tuple[str, str]) -> None:
            key, prompt = item
            if stop.is_set():
                return
            try:
                p = self._ask(prompt)
            except LLMJudgeError as exc:
                fatal.append(exc)
                stop.set()
                return
            except LLMReplyError as exc:
                with self._lock:
                    asked[0] += weight[key]
                    self.calls += 1
                    self.errors.append(str(exc))
                    self.failed_pairs += weight[key]
                    if self.failed_pairs > allowed:
                        stop.set()  # the share is exceeded whatever the remaining pairs answer
                return
            cache.put(key, p)
            with self._lock:
                asked[0] += weight[key]
                self.calls += 1
                known[key] = p

        workers = 1 if self.cfg.backend == "gguf" else max(1, self.cfg.concurrency)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, todo))
        self.judged += asked[0]
        if fatal:
            raise LLMJudgeError(f"{fatal[0]}; {self.failed_pairs} of {self.judged} pairs had failed before")
        if self.failed_pairs > allowed:
            raise LLMJudgeError(
                f"LLM judge {self.endpoint}: {self.failed_pairs} of {self.judged} judged pairs failed; "
                f"--llm-max-error-rate {self.cfg.max_error_rate:g} allows {math.floor(allowed)} of the {total} "
                f"to judge; last error: {self.errors[-1]}")
        return np.array([known.get(k, np.nan) for k in keys], dtype=np.float64)


def parse_llm_target(spec: str) -> str:
    """``llm:http://host:port/v1`` or ``llm:/path/model.gguf`` -> the target."""
    target = spec.split(":", 1)[1] if spec.startswith("llm:") else spec
    if not target.startswith(("http://", "https://")) and not Path(target).is_file():
        raise ConfigError(f"LLM judge '{spec}': not an http(s) URL and no such GGUF file")
    return target
