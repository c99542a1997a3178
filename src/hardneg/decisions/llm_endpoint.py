"""One LLM endpoint, as the judge and the generators reach it: an OpenAI-compatible HTTP server or a
local GGUF file run in process by llama.cpp.

What every user of an LLM shares lives here: the credentials (from the environment, or the URL's
user info, never in an identity or a log), JSON requests with a timeout, the model the server
serves (``GET /models``), retries with exponential backoff (a refused connection stops at once: nothing
listens), the content hash of a GGUF file and llama.cpp loaded once. What is asked and how a reply is
read belong to the subclasses (:class:`~hardneg.decisions.llm_client.LLMClient` for P(yes),
:class:`~hardneg.generation.client.TextGenerator` for text)."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import HardnegError
from ..runs.fingerprint import file_fingerprint
from .llm_cache import split_credentials

API_KEY_ENV = ("HARDNEG_LLM_API_KEY", "OPENAI_API_KEY")
RETRY_STATUS = (408, 429)           # client errors worth asking again; other 4xx are not
ABSENT_STATUS = (404, 405, 501)     # the API is not served here
T = TypeVar("T")


class LLMReplyError(HardnegError):
    """The endpoint gave no readable answer for one prompt after every retry."""

    def __init__(self, message: str, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.status, self.body = status, body


class LLMJudgeError(HardnegError):
    """An LLM as a whole cannot be trusted: a dead or unreadable endpoint, or too many failed prompts.
    (The judge's name for it; generation raises its subclass
    :class:`~hardneg.generation.client.GenerationError`.)"""


def is_http(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


class LLMEndpoint:
    """Where one LLM runs and how patiently it is asked.

    Args:
        target: an ``http(s)://HOST:PORT/v1`` URL (credentials may be in it) or a ``.gguf`` path.
        model: the model to ask an HTTP server for; ``"default"`` takes the one it serves.
        retries, timeout, backoff: a failed request is asked again ``retries`` times, waiting
            ``backoff * 2**attempt`` seconds; each waits ``timeout`` seconds for an answer.
        cache_dir: the hardneg cache folder (a GGUF file's hash is memoised there).
        role: how errors name this LLM (``"LLM judge"``, ``"LLM generator"``).
    """

    fatal: type[HardnegError] = LLMJudgeError

    def __init__(self, target: str, model: str, retries: int, timeout: float, backoff: float,
                 cache_dir: str | Path, role: str = "LLM judge"):
        self.target, self.asked_model, self.role = target, model, role
        self.retries, self.timeout, self.backoff = retries, timeout, backoff
        self.cache_dir = Path(cache_dir)
        self.backend = "http" if is_http(target) else "gguf"
        self.endpoint, self._userinfo = split_credentials(target)
        self.model = model if self.backend == "http" else Path(target).name
        self.file_sha256: str | None = None
        self._llama: Any = None
        self._llama_lock = threading.Lock()

    def error(self, problem: str, where: str | None = None) -> HardnegError:
        """The fatal error of this endpoint: ``<role> <endpoint>: <problem>``, one line."""
        return self.fatal(f"{self.role} {where or self.endpoint}: {problem}")

    # ------------------------------------------------------------------ HTTP
    def request(self, path: str, body: dict[str, Any] | None = None) -> Any:
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
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            return json.loads(r.read().decode())

    def served_models(self) -> list[str]:
        """Model ids from ``GET /models``; [] where the server has no such route."""
        try:
            reply = self.request("/models")
        except urllib.error.HTTPError as exc:
            if exc.code in ABSENT_STATUS:
                return []
            raise self.error(f"/models answered HTTP {exc.code} ({one_line(http_body(exc), 200)})") from None
        except (urllib.error.URLError, OSError) as exc:
            raise self.error(f"no answer ({reason(exc)})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self.error(f"/models answered unreadably ({exc})") from None
        try:
            return [str(m["id"]) for m in reply["data"]]
        except (KeyError, TypeError) as exc:
            raise self.error(f"/models answered unreadably (no data[].id: {one_line(reply, 200)})") from exc

    def choose_model(self, served: list[str]) -> str:
        """The model to ask for: the one asked for, if served; with none asked for, the one served."""
        asked = self.asked_model
        if asked != "default":
            if served and asked not in served:
                raise self.error(f"no model '{asked}' here (it serves {', '.join(served[:10])})")
            return asked
        if len(served) > 1:
            raise self.error(f"serves several models ({', '.join(served[:10])}); choose one with --llm-model")
        return served[0] if served else asked

    # ------------------------------------------------------------------ GGUF
    def hash_file(self) -> str:
        """The GGUF file's sha256 (memoised in the cache folder): its identity, whatever its name."""
        try:
            self.file_sha256 = file_fingerprint(self.target, self.cache_dir)
        except OSError as exc:
            raise self.error(f"cannot read the model file ({exc})", self.target) from None
        return self.file_sha256

    def llama(self, n_ctx: int = 1024, on_load: Callable[[Any], None] | None = None) -> Any:
        """The llama.cpp model, loaded once (``on_load`` runs then); a missing package or an unloadable
        file is this endpoint's fatal error. Callers hold :attr:`_llama_lock`: one context, one caller."""
        if self._llama is None:
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                from llama_cpp import Llama
            except ImportError:
                raise self.error("a GGUF model needs llama-cpp-python (pip install -e '.[llm]')",
                                 self.target) from None
            try:
                llm = Llama(model_path=self.target, n_ctx=n_ctx, logits_all=False, verbose=False)
            except Exception as exc:  # noqa: BLE001 - llama.cpp's errors have no common type
                raise self.error(f"cannot load the model ({one_line(exc)})", self.target) from None
            if on_load is not None:
                on_load(llm)
            self._llama = llm
        return self._llama

    # ------------------------------------------------------------------ retries
    def retrying(self, call: Callable[[], T]) -> T:
        """``call()``, retried with backoff. A refused connection raises the fatal error at once (nothing
        listens: retrying every prompt would only cost time); a client error (4xx) is not retried.
        After the last try, :class:`LLMReplyError` names the endpoint and the last error."""
        last: Exception | None = None
        tries = 0
        for attempt in range(self.retries + 1):
            tries += 1
            try:
                return call()
            except urllib.error.HTTPError as exc:
                text = http_body(exc)
                last = LLMReplyError(f"HTTP {exc.code} ({one_line(text, 200)})", exc.code, text)
                if 400 <= exc.code < 500 and exc.code not in RETRY_STATUS:
                    break
            except (urllib.error.URLError, OSError) as exc:
                if isinstance(getattr(exc, "reason", exc), (ConnectionRefusedError, socket.gaierror)):
                    raise self.error(f"no answer ({reason(exc)})") from None
                last = exc
            except (LLMReplyError, json.JSONDecodeError, UnicodeDecodeError, RuntimeError, ValueError) as exc:
                last = exc
            if attempt < self.retries:
                time.sleep(self.backoff * 2 ** attempt)
        status = last.status if isinstance(last, LLMReplyError) else None
        raise LLMReplyError(f"{self.endpoint}: no readable answer after {tries} tr{'y' if tries == 1 else 'ies'}: "
                            f"{one_line(last)}", status, last.body if isinstance(last, LLMReplyError) else "")


def http_body(exc: urllib.error.HTTPError) -> str:
    """An HTTP error's body, where servers put the reason (read it once: it is a stream)."""
    try:
        return exc.read().decode(errors="replace")
    except (OSError, ValueError):
        return ""


def reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words."""
    why = getattr(exc, "reason", exc)
    if isinstance(why, TimeoutError) or isinstance(exc, TimeoutError):
        return "timed out"
    return one_line(why, 200)


def api_absent(exc: LLMReplyError) -> bool:
    """True when a reply says the API is not served here (so the other one may be)."""
    text = exc.body.lower()
    return exc.status in ABSENT_STATUS or (exc.status == 400 and ("chat" in text or "not supported" in text))
