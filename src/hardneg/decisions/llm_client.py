"""The LLM judge's connection: one interface over two backends, answering P(yes) for one prompt.

- ``http``: any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, hosted APIs). Base URL,
  model, key from the environment, retries with backoff and timeouts; the legacy completions API,
  or the chat API where that is absent (hosted APIs cap ``logprobs`` at five).
- ``gguf``: a local GGUF model in process with llama.cpp, reading the last-token logits.

:meth:`LLMClient.check` runs once before any pair is asked: it asks ``/models`` which model the
server serves, then sends one probe, to the legacy completions API or, where that is absent, to the
chat API; a GGUF file is loaded and probed. A dead or unreadable endpoint is an error at once,
naming it. It then opens the persistent SQLite answer cache under the judge's identity: the endpoint
(without credentials), the model the server reports, the API, the prompt template, or for a GGUF
file its content hash."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .llm_cache import AnswerCache, answer_identity, http_identity
from .llm_endpoint import (
    API_KEY_ENV,
    LLMEndpoint,
    LLMJudgeError,
    LLMReplyError,
    api_absent,
    one_line,
)

__all__ = ["API_KEY_ENV", "PROBE", "PROMPT", "LLMClient", "LLMConfig", "LLMJudgeError", "LLMReplyError",
           "yes_probability"]

PROMPT =("Decide whether the document answers or is relevant to the query.\n\n"
          "Query: {query}\nDocument: {doc}\n\nRelevant (yes or no)? Answer:")
YES = ("yes", "Yes", "YES")
NO = ("no", "No", "NO")
# How many top tokens to ask for. Legacy /completions: OpenAI's API reference says "The maximum value
# for logprobs is 5" (CreateCompletionRequest.logprobs) and answers more with HTTP 400; vLLM caps at its
# --max-logprobs (default 20), Together at 20 (its OpenAPI spec). /chat/completions takes
# `logprobs: true` plus `top_logprobs`: 0-20 at OpenAI, 0-5 on Vertex AI's OpenAI-compatible API. Five is
# accepted by all of them, and a yes/no answer's tokens are among the top five of a model that reads the prompt.
COMPLETIONS_TOP_LOGPROBS = 5
CHAT_TOP_LOGPROBS = 5
PROBE = ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level.")


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
    max_error_rate: float = 0.05    # failed pairs allowed, as a share of the judged pairs

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



class LLMClient(LLMEndpoint):
    """One LLM endpoint or GGUF file, checked once, asked one prompt at a time (with retries), its
    answers cached. :class:`~hardneg.decisions.llm.LLMJudge` adds the pairs, the threads and the
    error share. The connection (credentials, the served model, retries) is :class:`LLMEndpoint`'s."""

    def __init__(self, cfg: LLMConfig, cache_dir: str | Path):
        super().__init__(cfg.target, cfg.model, cfg.retries, cfg.timeout, cfg.backoff, cache_dir, role="LLM judge")
        self.cfg = cfg
        self.api = "completions" if cfg.backend == "http" else "in-process"
        self.cache: AnswerCache | None = None

    def _prompt(self, query: str, doc: str) -> str:
        return self.cfg.prompt.format(query=query.strip(), doc=doc.strip()[: self.cfg.max_doc_chars])

    # ------------------------------------------------------------------ the check, once
    def check(self) -> None:
        """Ask the endpoint once (or load and probe the GGUF file) and open the answer cache under the
        judge's identity. Raises :class:`LLMJudgeError` naming the endpoint if it does not answer or
        answers unreadably. Later calls return at once."""
        if self.cache is not None:
            return
        if self.cfg.backend == "http":
            self._check_http()
            ident = http_identity(self.endpoint, self.model, self.api, self.cfg.prompt)
        else:
            self._check_gguf()
            ident = answer_identity(backend="gguf", sha256=self.file_sha256, prompt=self.cfg.prompt)
        self.cache = AnswerCache(self.cache_dir / "llm" / f"{ident}.sqlite")

    def _check_http(self) -> None:
        self.model = self.choose_model(self.served_models())
        probe = self._prompt(*PROBE)
        try:
            self._ask(probe, "completions")
            self.api = "completions"
            return
        except LLMReplyError as exc:
            if not api_absent(exc):
                raise self.error(f"the probe got no readable answer from /completions ({exc})") from None
            first = exc
        try:
            self._ask(probe, "chat")
        except LLMReplyError as exc:
            raise self.error(f"/completions is not served ({first}) and /chat/completions gave no readable "
                             f"answer ({exc})") from None
        self.api = "chat"

    def _check_gguf(self) -> None:
        self.hash_file()
        try:
            self._gguf(self._prompt(*PROBE))
        except LLMJudgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - llama.cpp's errors have no common type
            raise self.error(f"the probe failed ({one_line(exc)})", self.target) from None

    # ------------------------------------------------------------------ backends
    def _http(self, prompt: str, api: str) -> float:
        if api == "chat":
            reply = self.request("/chat/completions", {
                "model": self.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
                "temperature": 0.0, "logprobs": True, "top_logprobs": CHAT_TOP_LOGPROBS})
            try:
                entries = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
                top = {str(e["token"]): float(e["logprob"]) for e in entries}
            except (KeyError, IndexError, TypeError, ValueError):
                raise LLMReplyError(f"reply without top_logprobs: {one_line(reply, 200)}") from None
            return yes_probability(top)
        reply = self.request("/completions", {"model": self.model, "prompt": prompt, "max_tokens": 1,
                                              "temperature": 0.0, "logprobs": COMPLETIONS_TOP_LOGPROBS})
        try:
            top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            raise LLMReplyError(f"reply without top_logprobs: {one_line(reply, 200)}") from None
        return yes_probability(top)

    def _yes_no_tokens(self, llm: Any) -> None:
        tok = llm.tokenize
        self._yes = sorted({tok(w.encode(), add_bos=False)[0] for w in (" yes", "yes", " Yes", "Yes")})
        self._no = sorted({tok(w.encode(), add_bos=False)[0] for w in (" no", "no", " No", "No")})

    def _gguf(self, prompt: str) -> float:
        with self._llama_lock:  # one llama.cpp context: calls are serialised
            llm = self.llama(1024, self._yes_no_tokens)
            tokens = llm.tokenize(prompt.encode())[-1000:]
            llm.reset()
            llm.eval(tokens)
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
            lp = np.concatenate([logits[self._yes], logits[self._no]]).astype(np.float64)
            e = np.exp(lp - lp.max())
            return float(e[: len(self._yes)].sum() / e.sum())

    def _ask(self, prompt: str, api: str | None = None) -> float:
        """One pair's P(yes), retried with backoff (:meth:`LLMEndpoint.retrying`)."""
        if self.cfg.backend == "http":
            return self.retrying(lambda: self._http(prompt, api or self.api))
        return self.retrying(lambda: self._gguf(prompt))
