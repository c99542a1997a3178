"""Text from an LLM: one prompt in, one completion out, over the judge's two backends.

- ``http``: an OpenAI-compatible server (vLLM, llama.cpp server, Ollama, hosted APIs): the legacy
  ``/completions`` API, which takes a few-shot prompt as it is, or ``/chat/completions`` where that is
  absent (the prompt is then the user's message). The sampling seed is sent; servers that ignore it
  (some hosted APIs) are still reproducible through the cache.
- ``gguf``: a local GGUF model in process with llama.cpp (one context, calls serialised; a prompt
  asked again right after itself reuses the evaluated prefix from llama.cpp's KV cache).
- ``hf``: a transformers model in process (``hf:`` + a folder, a hub id or a GGUF file), many prompts a
  batch, each row sampled with its own seed, on a GPU when there is one
  (:class:`~hardneg.generation.transformers_lm.TransformersLM`).

Credentials, timeouts, retries with backoff and the served model are
:class:`~hardneg.decisions.llm_endpoint.LLMEndpoint`'s. :meth:`TextGenerator.check` runs once before
any prompt: it asks ``/models``, then sends one short probe (or loads and probes the GGUF file); a dead
or unreadable endpoint stops there, naming it. Its :attr:`identity` (the endpoint without credentials,
the served model and the API, or the model file's or folder's sha256) names the cache its completions go to."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..decisions.llm_cache import answer_identity
from ..decisions.llm_endpoint import LLMEndpoint, LLMJudgeError, LLMReplyError, api_absent, one_line
from .completion import Completion, Sampling

if TYPE_CHECKING:
    from .transformers_lm import TransformersLM

HF = "hf:"  # the in-process transformers backend's prefix

PROBE = "Document: Water boils at 100 degrees Celsius at sea level.\nQuery:"


class GenerationError(LLMJudgeError):
    """The generator as a whole cannot be trusted: a dead or unreadable endpoint, or too many failed
    generations. The run stops and writes nothing."""


class TextGenerator(LLMEndpoint):
    """Completions from an OpenAI-compatible endpoint or a local GGUF file, checked once.

    Args:
        target: ``http(s)://HOST:PORT/v1`` (credentials may be in the URL, or in
            ``$HARDNEG_LLM_API_KEY`` / ``$OPENAI_API_KEY``), a ``.gguf`` path (llama.cpp) or ``hf:`` and a
            model folder, hub id or ``.gguf`` path (transformers, batched).
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
        if target.startswith(HF):
            self.backend, self.model = "hf", Path(target[len(HF):]).name or target[len(HF):]
        self.api = {"http": "completions", "gguf": "in-process", "hf": "transformers"}[self.backend]
        self.n_ctx = n_ctx
        self.identity: str | None = None
        self._hf: TransformersLM | None = None

    @property
    def label(self) -> str:
        """The generator as provenance rows name it: the endpoint (without credentials) or a GGUF file's
        name, then the model. Never a local path, so that the same inputs and seed write the same bytes
        on any machine; the file's hash is in ``describe()`` and in each row's fingerprint."""
        where = self.endpoint if self.backend == "http" else Path(self.endpoint).name
        return f"{HF}{where}" if self.backend == "hf" else f"{where} {self.model}"

    def describe(self) -> dict[str, Any]:
        out = {"backend": self.backend, "target": self.endpoint, "model": self.model, "api": self.api,
               "file_sha256": self.file_sha256, "identity": self.identity}
        if self._hf is not None:
            out |= {"fingerprint": self._hf.fingerprint, "dtype": self._hf.dtype, "device": self._hf.device}
        return out

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
        elif self.backend == "hf":
            lm = self.transformers_lm()
            self.complete(PROBE, probe, 0)
            self.identity = answer_identity(backend="hf", model=lm.fingerprint, dtype=lm.dtype)
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
        if self.backend == "hf":
            return self._hf_batch([prompt], sampling, [seed])[0]
        return self.retrying(lambda: self._gguf(prompt, sampling, seed))

    def complete_many(self, prompts: list[str], sampling: Sampling,
                      seeds: list[int]) -> list[Completion | LLMReplyError]:
        """One completion per prompt, or the :class:`LLMReplyError` its request ended with after its retries:
        in one batch with ``hf`` (where a batch that fails is this generator's fatal error: a model that cannot
        run, or out of memory); one request after the other elsewhere."""
        if self.backend == "hf":
            return list(self._hf_batch(prompts, sampling, seeds))
        out: list[Completion | LLMReplyError] = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            try:
                out.append(self.complete(prompt, sampling, seed))
            except LLMReplyError as exc:
                out.append(exc)
        return out

    def _hf_batch(self, prompts: list[str], sampling: Sampling, seeds: list[int]) -> list[Completion]:
        lm = self.transformers_lm()
        try:
            return lm.generate(prompts, sampling, seeds)
        except Exception as exc:  # noqa: BLE001 - torch's and transformers' errors have no common type
            raise self.error(f"a batch of {len(prompts)} failed ({one_line(exc)})") from None

    def transformers_lm(self) -> TransformersLM:
        """The ``hf`` backend's model, loaded once; one that cannot be loaded is the fatal error."""
        if self._hf is None:
            from .transformers_lm import TransformersLM

            try:
                self._hf = TransformersLM.load(self.target[len(HF):], self.cache_dir)
            except Exception as exc:  # noqa: BLE001 - a missing file, an unknown id offline, a missing package
                raise self.error(f"cannot load the model ({one_line(exc)})", self.target) from None
        return self._hf

    def count_tokens(self, prompt: str) -> int:
        """The prompt's token count: exact in process, about four characters a token over HTTP."""
        if self.backend == "gguf":
            with self._llama_lock:
                return len(self.llama(self.n_ctx).tokenize(prompt.encode()))
        if self.backend == "hf":
            return self.transformers_lm().count_tokens(prompt)
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
