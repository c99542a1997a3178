"""Text from an LLM: one prompt in, one completion out, over the judge's two backends.

- ``http``: an OpenAI-compatible server (vLLM, llama.cpp server, Ollama, hosted APIs): the legacy
  ``/completions`` API, which takes a few-shot prompt as it is, or ``/chat/completions`` where that is
  absent (the prompt is then the user's message). The sampling seed is sent; servers that ignore it
  (some hosted APIs) are still reproducible through the cache.
- ``gguf``: a local GGUF model in process with llama.cpp (one context, calls serialised; a prompt
  asked again right after itself reuses the evaluated prefix from llama.cpp's KV cache).

Credentials, timeouts, retries with backoff and the served model are
:class:`~hardneg.decisions.llm_endpoint.LLMEndpoint`'s. :meth:`TextGenerator.check` runs once before
any prompt: it asks ``/models``, then sends one short probe (or loads and probes the GGUF file); a dead
or unreadable endpoint stops there, naming it. Its :attr:`identity` (the endpoint without credentials,
the served model and the API, or the GGUF file's sha256) names the cache its completions go to."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..decisions.llm_cache import answer_identity
from ..decisions.llm_endpoint import LLMEndpoint, LLMJudgeError, LLMReplyError, api_absent, one_line

PROBE = "Document: Water boils at 100 degrees Celsius at sea level.\nQuery:"


class GenerationError(LLMJudgeError):
    """The generator as a whole cannot be trusted: a dead or unreadable endpoint, or too many failed
    generations. The run stops and writes nothing."""


@dataclass(frozen=True)
class Sampling:
    """How each completion is sampled (recorded with every generated text, and part of its cache key).

    ``stop`` ends a completion at the first newline: the few-shot prompt asks for one query a line, so
    a reply that reaches ``max_tokens`` without a newline is not in the asked format."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 48
    stop: tuple[str, ...] = ("\n",)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}


@dataclass(frozen=True)
class Completion:
    """One completion as the LLM gave it: its text, why it ended (``stop`` or ``length``) and its
    token counts (the server's ``usage``, or llama.cpp's)."""

    text: str
    finish: str
    prompt_tokens: int
    completion_tokens: int


class TextGenerator(LLMEndpoint):
    """Completions from an OpenAI-compatible endpoint or a local GGUF file, checked once.

    Args:
        target: ``http(s)://HOST:PORT/v1`` (credentials may be in the URL, or in
            ``$HARDNEG_LLM_API_KEY`` / ``$OPENAI_API_KEY``) or a ``.gguf`` path.
        cache_dir: the hardneg cache folder (a GGUF file's hash is memoised there).
        model: the model to ask an HTTP server for; ``"default"`` takes the one it serves.
        retries, timeout, backoff: how patiently each request is asked.
        n_ctx: llama.cpp's context size (prompt + completion tokens).

    Example::

        gen = TextGenerator("http://localhost:8000/v1", "~/.cache/hardneg", model="qwen")
        gen.check()
        c = gen.complete("Document: Cells divide by mitosis.\\nQuery:", Sampling(), seed=1)
    """

    fatal = GenerationError

    def __init__(self, target: str, cache_dir: str | Path, model: str = "default", retries: int = 3,
                 timeout: float = 60.0, backoff: float = 0.5, n_ctx: int = 2048):
        super().__init__(target, model, retries, timeout, backoff, cache_dir, role="LLM generator")
        self.api = "completions" if self.backend == "http" else "in-process"
        self.n_ctx = n_ctx
        self.identity: str | None = None

    @property
    def label(self) -> str:
        """The generator as provenance rows name it: the endpoint (without credentials) or a GGUF file's
        name, then the model. Never a local path, so that the same inputs and seed write the same bytes
        on any machine; the file's hash is in ``describe()`` and in each row's fingerprint."""
        where = self.endpoint if self.backend == "http" else Path(self.endpoint).name
        return f"{where} {self.model}"

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "target": self.endpoint, "model": self.model, "api": self.api,
                "file_sha256": self.file_sha256, "identity": self.identity}

    # ------------------------------------------------------------------ the check, once
    def check(self) -> str:
        """Probe the endpoint (or load and probe the GGUF file) and return the generator's identity.
        Raises :class:`GenerationError` naming the endpoint when it does not answer readably."""
        if self.identity is not None:
            return self.identity
        probe = Sampling(temperature=0.0, max_tokens=4)
        if self.backend == "http":
            self.model = self.choose_model(self.served_models())
            try:
                self.complete(PROBE, probe, 0, "completions")
                self.api = "completions"
            except LLMReplyError as exc:
                if not api_absent(exc):
                    raise self.error(f"the probe got no readable answer from /completions ({exc})") from None
                try:
                    self.complete(PROBE, probe, 0, "chat")
                except LLMReplyError as chat_exc:
                    raise self.error(f"/completions is not served ({exc}) and /chat/completions gave no "
                                     f"readable answer ({chat_exc})") from None
                self.api = "chat"
            self.identity = answer_identity(backend="http", endpoint=self.endpoint.rstrip("/"), model=self.model,
                                            api=self.api)
        else:
            sha = self.hash_file()
            try:
                self.complete(PROBE, probe, 0)
            except GenerationError:
                raise
            except Exception as exc:  # noqa: BLE001 - llama.cpp's errors have no common type
                raise self.error(f"the probe failed ({one_line(exc)})", self.target) from None
            self.identity = answer_identity(backend="gguf", sha256=sha)
        return self.identity

    # ------------------------------------------------------------------ one completion
    def complete(self, prompt: str, sampling: Sampling, seed: int, api: str | None = None) -> Completion:
        """One completion, retried with backoff; :class:`LLMReplyError` after the last try."""
        if self.backend == "http":
            return self.retrying(lambda: self._http(prompt, sampling, seed, api or self.api))
        return self.retrying(lambda: self._gguf(prompt, sampling, seed))

    def count_tokens(self, prompt: str) -> int:
        """The prompt's token count: exact in process, about four characters a token over HTTP."""
        if self.backend == "gguf":
            with self._llama_lock:
                return len(self.llama(self.n_ctx).tokenize(prompt.encode()))
        return max(1, len(prompt) // 4)

    def _http(self, prompt: str, sampling: Sampling, seed: int, api: str) -> Completion:
        settings = {"model": self.model, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
                    "top_p": sampling.top_p, "seed": seed, "stop": list(sampling.stop)}
        if api == "chat":
            reply = self.request("/chat/completions", {**settings, "messages": [{"role": "user", "content": prompt}]})
            try:
                choice = reply["choices"][0]
                text = choice["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise LLMReplyError(f"reply without choices[0].message.content: {one_line(reply, 200)}") from None
        else:
            reply = self.request("/completions", {**settings, "prompt": prompt})
            try:
                choice = reply["choices"][0]
                text = choice["text"]
            except (KeyError, IndexError, TypeError):
                raise LLMReplyError(f"reply without choices[0].text: {one_line(reply, 200)}") from None
        if not isinstance(text, str):
            raise LLMReplyError(f"reply text is not a string: {one_line(reply, 200)}")
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        return Completion(text, str(choice.get("finish_reason") or ""),
                          int(usage.get("prompt_tokens") or max(1, len(prompt) // 4)),
                          int(usage.get("completion_tokens") or max(0, len(text) // 4)))

    def _gguf(self, prompt: str, sampling: Sampling, seed: int) -> Completion:
        with self._llama_lock:  # one llama.cpp context: calls are serialised
            llm = self.llama(self.n_ctx)
            out = llm.create_completion(prompt, max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                        top_p=sampling.top_p, stop=list(sampling.stop), seed=seed)
        choice, usage = out["choices"][0], out.get("usage") or {}
        return Completion(str(choice["text"]), str(choice.get("finish_reason") or ""),
                          int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
