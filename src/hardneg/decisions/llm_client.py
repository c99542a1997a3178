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

import base64
import json
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HardnegError
from ..runs.fingerprint import file_fingerprint
from .llm_cache import AnswerCache, answer_identity, http_identity, split_credentials

PROMPT = ("Decide whether the document answers or is relevant to the query.\n\n"
          "Query: {query}\nDocument: {doc}\n\nRelevant (yes or no)? Answer:")
YES = ("yes", "Yes", "YES")
NO = ("no", "No", "NO")
API_KEY_ENV = ("HARDNEG_LLM_API_KEY", "OPENAI_API_KEY")
# How many top tokens to ask for. Legacy /completions: OpenAI's API reference says "The maximum value
# for logprobs is 5" (CreateCompletionRequest.logprobs) and answers more with HTTP 400; vLLM caps at its
# --max-logprobs (default 20), Together at 20 (its OpenAPI spec). /chat/completions takes
# `logprobs: true` plus `top_logprobs`: 0-20 at OpenAI, 0-5 on Vertex AI's OpenAI-compatible API. Five is
# accepted by all of them, and a yes/no answer's tokens are among the top five of a model that reads the prompt.
COMPLETIONS_TOP_LOGPROBS = 5
CHAT_TOP_LOGPROBS = 5
PROBE = ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level.")
_RETRY_STATUS = (408, 429)           # client errors worth asking again; other 4xx are not
_ABSENT_STATUS = (404, 405, 501)     # the API is not served here


class LLMReplyError(HardnegError):
    """The endpoint gave no readable yes/no answer for one pair after every retry."""

    def __init__(self, message: str, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.status, self.body = status, body


class LLMJudgeError(HardnegError):
    """The judge as a whole cannot be trusted: a dead or unreadable endpoint, or too many failed pairs."""


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


def _one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def yes_probability(top: dict[str, float]) -> float:
    """P(yes) from next-token log-probabilities (tokens with or without a leading space). Raises if
    neither answer is among them: an unreadable reply is an error, not a "no"."""
    yes = [math.exp(v) for k, v in top.items() if k.strip() in YES]
    no = [math.exp(v) for k, v in top.items() if k.strip() in NO]
    if not yes and not no:
        raise LLMReplyError(f"no yes/no token among the top log-probabilities ({', '.join(list(top)[:8])})")
    y, n = sum(yes), sum(no)
    return y / (y + n)


class LLMClient:
    """One LLM endpoint or GGUF file, checked once, asked one prompt at a time (with retries), its
    answers cached. :class:`~hardneg.decisions.llm.LLMJudge` adds the pairs, the threads and the
    error share."""

    def __init__(self, cfg: LLMConfig, cache_dir: str | Path):
        self.cfg = cfg
        self.cache_dir = Path(cache_dir)
        self.endpoint, self._userinfo = split_credentials(cfg.target)
        self.model = cfg.model if cfg.backend == "http" else Path(cfg.target).name
        self.api = "completions" if cfg.backend == "http" else "in-process"
        self.file_sha256: str | None = None
        self.cache: AnswerCache | None = None
        self._llama: Any = None
        self._llama_lock = threading.Lock()

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
        self.model = self._choose_model(self._served_models())
        probe = self._prompt(*PROBE)
        try:
            self._ask(probe, "completions")
            self.api = "completions"
            return
        except LLMReplyError as exc:
            if not _absent(exc):
                raise LLMJudgeError(f"LLM judge {self.endpoint}: the probe got no readable answer from "
                                    f"/completions ({exc})") from None
            first = exc
        try:
            self._ask(probe, "chat")
        except LLMReplyError as exc:
            raise LLMJudgeError(f"LLM judge {self.endpoint}: /completions is not served ({first}) and "
                                f"/chat/completions gave no readable answer ({exc})") from None
        self.api = "chat"

    def _served_models(self) -> list[str]:
        """Model ids from ``GET /models``; [] where the server has no such route."""
        try:
            reply = self._request("/models")
        except urllib.error.HTTPError as exc:
            if exc.code in _ABSENT_STATUS:
                return []
            raise LLMJudgeError(f"LLM judge {self.endpoint}: /models answered HTTP {exc.code} "
                                f"({_one_line(_body(exc), 200)})") from None
        except (urllib.error.URLError, OSError) as exc:
            raise LLMJudgeError(f"LLM judge {self.endpoint}: no answer ({_reason(exc)})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LLMJudgeError(f"LLM judge {self.endpoint}: /models answered unreadably ({exc})") from None
        try:
            return [str(m["id"]) for m in reply["data"]]
        except (KeyError, TypeError) as exc:
            raise LLMJudgeError(f"LLM judge {self.endpoint}: /models answered unreadably (no data[].id: "
                                f"{_one_line(reply, 200)})") from exc

    def _choose_model(self, served: list[str]) -> str:
        """The model to ask for: the one asked for, if served; with none asked for, the one served."""
        asked = self.cfg.model
        if asked != "default":
            if served and asked not in served:
                raise LLMJudgeError(f"LLM judge {self.endpoint}: no model '{asked}' here (it serves "
                                    f"{', '.join(served[:10])})")
            return asked
        if len(served) > 1:
            raise LLMJudgeError(f"LLM judge {self.endpoint}: serves several models ({', '.join(served[:10])}); "
                                "choose one with --llm-model")
        return served[0] if served else asked

    def _check_gguf(self) -> None:
        try:
            self.file_sha256 = file_fingerprint(self.cfg.target, self.cache_dir)
        except OSError as exc:
            raise LLMJudgeError(f"LLM judge {self.cfg.target}: cannot read the model file ({exc})") from None
        try:
            self._gguf(self._prompt(*PROBE))
        except LLMJudgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - llama.cpp's errors have no common type
            raise LLMJudgeError(f"LLM judge {self.cfg.target}: the probe failed ({_one_line(exc)})") from None

    # ------------------------------------------------------------------ backends
    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET (no body) or POST JSON to the endpoint; the decoded JSON reply."""
        headers = {"Content-Type": "application/json"}
        key = next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif self._userinfo:
            headers["Authorization"] = "Basic " + base64.b64encode(self._userinfo.encode()).decode()
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.endpoint.rstrip("/") + path, data, headers,
                                     method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=self.cfg.timeout) as r:
            return json.loads(r.read().decode())

    def _http(self, prompt: str, api: str) -> float:
        if api == "chat":
            reply = self._request("/chat/completions", {
                "model": self.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
                "temperature": 0.0, "logprobs": True, "top_logprobs": CHAT_TOP_LOGPROBS})
            try:
                entries = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
                top = {str(e["token"]): float(e["logprob"]) for e in entries}
            except (KeyError, IndexError, TypeError, ValueError):
                raise LLMReplyError(f"reply without top_logprobs: {_one_line(reply, 200)}") from None
            return yes_probability(top)
        reply = self._request("/completions", {"model": self.model, "prompt": prompt, "max_tokens": 1,
                                               "temperature": 0.0, "logprobs": COMPLETIONS_TOP_LOGPROBS})
        try:
            top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            raise LLMReplyError(f"reply without top_logprobs: {_one_line(reply, 200)}") from None
        return yes_probability(top)

    def _load_llama(self) -> Any:
        """The llama.cpp model, loaded once; a missing package or an unloadable file is an LLMJudgeError."""
        if self._llama is None:
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                from llama_cpp import Llama
            except ImportError:
                raise LLMJudgeError(f"LLM judge {self.cfg.target}: a GGUF judge needs llama-cpp-python "
                                    "(pip install -e '.[llm]')") from None
            try:
                llm = Llama(model_path=self.cfg.target, n_ctx=1024, logits_all=False, verbose=False)
            except Exception as exc:  # noqa: BLE001 - llama.cpp's errors have no common type
                raise LLMJudgeError(f"LLM judge {self.cfg.target}: cannot load the model ({_one_line(exc)})") from None
            tok = llm.tokenize
            self._yes = sorted({tok(w.encode(), add_bos=False)[0] for w in (" yes", "yes", " Yes", "Yes")})
            self._no = sorted({tok(w.encode(), add_bos=False)[0] for w in (" no", "no", " No", "No")})
            self._llama = llm
        return self._llama

    def _gguf(self, prompt: str) -> float:
        with self._llama_lock:  # one llama.cpp context: calls are serialised
            llm = self._load_llama()
            tokens = llm.tokenize(prompt.encode())[-1000:]
            llm.reset()
            llm.eval(tokens)
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
            lp = np.concatenate([logits[self._yes], logits[self._no]]).astype(np.float64)
            e = np.exp(lp - lp.max())
            return float(e[: len(self._yes)].sum() / e.sum())

    def _ask(self, prompt: str, api: str | None = None) -> float:
        """One pair's P(yes), retried with backoff. A refused connection raises LLMJudgeError at once
        (nothing listens: retrying every pair would only cost time); a client error (4xx) is not retried."""
        last: Exception | None = None
        tries = 0
        for attempt in range(self.cfg.retries + 1):
            tries += 1
            try:
                if self.cfg.backend == "http":
                    return self._http(prompt, api or self.api)
                return self._gguf(prompt)
            except urllib.error.HTTPError as exc:
                text = _body(exc)
                last = LLMReplyError(f"HTTP {exc.code} ({_one_line(text, 200)})", exc.code, text)
                if 400 <= exc.code < 500 and exc.code not in _RETRY_STATUS:
                    break
            except (urllib.error.URLError, OSError) as exc:
                if isinstance(getattr(exc, "reason", exc), (ConnectionRefusedError, socket.gaierror)):
                    raise LLMJudgeError(f"LLM judge {self.endpoint}: no answer ({_reason(exc)})") from None
                last = exc
            except (LLMReplyError, json.JSONDecodeError, UnicodeDecodeError, RuntimeError, ValueError) as exc:
                last = exc
            if attempt < self.cfg.retries:
                time.sleep(self.cfg.backoff * 2 ** attempt)
        status = last.status if isinstance(last, LLMReplyError) else None
        raise LLMReplyError(f"{self.endpoint}: no readable answer after {tries} tr{'y' if tries == 1 else 'ies'}: "
                            f"{_one_line(last)}", status, last.body if isinstance(last, LLMReplyError) else "")

def _body(exc: urllib.error.HTTPError) -> str:
    """An HTTP error's body, where servers put the reason (read it once: it is a stream)."""
    try:
        return exc.read().decode(errors="replace")
    except (OSError, ValueError):
        return ""


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
        return "timed out"
    return _one_line(reason, 200)


def _absent(exc: LLMReplyError) -> bool:
    """True when a reply says the API is not served here (so the other one may be)."""
    text = exc.body.lower()
    return exc.status in _ABSENT_STATUS or (exc.status == 400 and ("chat" in text or "not supported" in text))
