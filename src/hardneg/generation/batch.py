"""Many generations at once, as the judge asks many pairs: the cache first, then the rest concurrently
(a thread pool on an HTTP endpoint; in process one llama.cpp context, with the requests of one prompt
back to back so that its evaluated prefix is reused; or batches of prompts through a transformers model),
every bad completion asked again with a new seed, and a loud stop once too many generations have failed.

Each *slot* (one query to write for one document) is asked up to ``attempts`` times; attempt ``a``
uses the seed ``hash(seed, slot name, a)``, so the attempt is part of the cache key and a rerun finds
every attempt it made before. A slot whose every attempt was bad (``empty``, ``copy``, ``format``) is
dropped with the last reason; one whose request failed after the endpoint's retries is dropped as
``error``. Both count as failed: past ``max_error_rate`` of the slots the run raises
:class:`~hardneg.generation.client.GenerationError` with the counts and the last problem."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..decisions.llm_endpoint import LLMReplyError
from ..progress import SILENT, RateAdvance, Reporter
from ..runs.files import hash64
from .cache import CompletionCache, request_key
from .client import GenerationError, TextGenerator
from .completion import Completion, Sampling
from .validation import clean

Check = Callable[[int, Completion], str]
"""(slot, completion) -> why it is not usable, or ""."""


def slot_seed(seed: int, name: str, attempt: int) -> int:
    """The sampling seed of one attempt of one slot (31 bits: every server takes it)."""
    return hash64(f"{seed}\x00{name}\x00{attempt}") % (2 ** 31)


@dataclass
class Generations:
    """What became of each slot: the cleaned query text (empty when dropped), the reason it was
    dropped ("" = kept), the attempts made, the seed of the last attempt, the tokens it cost and
    whether every attempt came from the cache; plus the plan printed before the start."""

    text: list[str]
    reason: np.ndarray
    attempts: np.ndarray
    seed: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    cached: np.ndarray
    plan: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)


def estimate(gen: TextGenerator, cache: CompletionCache, prompts: list[str], slot_prompt: np.ndarray,
             names: list[str], sampling: Sampling, seed: int) -> dict[str, Any]:
    """Before the start: how many requests the first attempts need, how many the cache already has,
    and about how many tokens the rest will cost (prompt tokens exact in process, ~4 characters a token
    over HTTP; completion tokens at most ``max_tokens`` each). Retries of bad output come on top."""
    sdict = sampling.as_dict()
    keys = [request_key(prompts[p], sdict, slot_seed(seed, n, 0)) for p, n in zip(slot_prompt.tolist(), names)]
    known = cache.get_many(sorted(set(keys)))
    todo = np.array([k not in known for k in keys], dtype=bool)
    uniq = np.unique(slot_prompt[todo])
    tokens = dict(zip(uniq.tolist(), (gen.count_tokens(prompts[p]) for p in uniq.tolist())))
    prompt_tokens = int(sum(tokens[p] for p in slot_prompt[todo].tolist()))
    return {"requests": len(keys), "cached": int((~todo).sum()), "to_ask": int(todo.sum()),
            "prompt_tokens": prompt_tokens, "max_completion_tokens": int(todo.sum()) * sampling.max_tokens,
            "token_count": "exact" if gen.backend in ("gguf", "hf") else "about 4 characters a token"}


def generate(gen: TextGenerator, cache: CompletionCache, prompts: list[str], slot_prompt: np.ndarray,
             names: list[str], check: Check, sampling: Sampling, *, seed: int = 0, attempts: int = 3,
             concurrency: int = 4, max_error_rate: float = 0.1, reporter: Reporter = SILENT) -> Generations:
    """Ask for every slot's text (see the module's docstring).

    Args:
        gen: a checked :class:`TextGenerator`.
        cache: its completion cache.
        prompts: the distinct rendered prompts.
        slot_prompt: per slot, the index of its prompt.
        names: per slot, a stable name (document id and sample number) from which its seeds derive.
        check: why a completion is not usable for its slot ("" when it is).
        sampling: the sampling settings of every request.
        seed: the run's seed.
        attempts: tries per slot (the first and the retries of bad output).
        concurrency: requests in flight on an HTTP endpoint; prompts per batch with hf (llama.cpp: one).
        max_error_rate: the share of failed slots that stops the run.
        reporter: progress bar with completion tokens per second.
    """
    n = len(names)
    plan = estimate(gen, cache, prompts, slot_prompt, names, sampling, seed)
    reporter.note(f"generate: {plan['requests']} requests, {plan['cached']} in the cache; to ask {plan['to_ask']}: "
                  f"about {plan['prompt_tokens']:,} prompt tokens + at most {plan['max_completion_tokens']:,} "
                  f"generated ({gen.model}, {gen.api})")
    sdict = sampling.as_dict()
    text = [""] * n
    reason = np.full(n, "", dtype=object)
    tries = np.zeros(n, dtype=np.int32)
    seeds = np.zeros(n, dtype=np.int64)
    ptok = np.zeros(n, dtype=np.int64)
    ctok = np.zeros(n, dtype=np.int64)
    cached = np.ones(n, dtype=bool)
    replayed = np.ones(n, dtype=bool)
    asked_tokens = np.zeros(n, dtype=np.int64)
    lock, stop = threading.Lock(), threading.Event()
    allowed = max_error_rate * n
    state: dict[str, Any] = {"failed": 0, "asked": 0, "errors": 0, "last": None, "fatal": None}

    def ask(group: list[int], a: int) -> list[Completion | LLMReplyError]:
        """Attempt ``a`` of each slot of ``group``: from the cache, else asked (one batch in process with hf)."""
        sds = [slot_seed(seed, names[s], a) for s in group]
        keys = [request_key(prompts[int(slot_prompt[s])], sdict, sd) for s, sd in zip(group, sds, strict=True)]
        known = cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in known]
        asked = gen.complete_many([prompts[int(slot_prompt[group[i]])] for i in missing], sampling,
                                  [sds[i] for i in missing]) if missing else []
        answers = dict(zip(missing, asked, strict=True))
        for i, c in answers.items():
            slot = group[i]
            replayed[slot], cached[slot] = False, False  # this slot cost a request (the time left comes from such)
            if isinstance(c, Completion):
                cache.put(keys[i], c)
                asked_tokens[slot] += c.completion_tokens
                with lock:
                    state["asked"] += 1
        for i, slot in enumerate(group):
            tries[slot], seeds[slot] = a + 1, sds[i]
        return [known[k] if k in known else answers[i] for i, k in enumerate(keys)]

    def work(group: list[int], advance: RateAdvance) -> None:
        live = list(group)
        for a in range(attempts):
            if stop.is_set() or not live:
                break
            try:
                got = ask(live, a)
            except GenerationError as exc:
                state["fatal"] = exc
                stop.set()
                return
            again = []
            for slot, c in zip(live, got, strict=True):
                if isinstance(c, LLMReplyError):
                    reason[slot] = "error"
                    with lock:
                        state["errors"] += 1
                        state["last"] = str(c)
                    continue
                ptok[slot] += c.prompt_tokens
                ctok[slot] += c.completion_tokens
                reason[slot] = check(slot, c)
                if not reason[slot]:
                    text[slot] = clean(c.text)
                    continue
                again.append(slot)
                with lock:
                    state["last"] = f"{reason[slot]}: {c.text[:120]!r}"
            live = again
        for slot in group:
            with lock:
                if reason[slot]:
                    state["failed"] += 1
                    if state["failed"] > allowed:
                        stop.set()  # the share is exceeded whatever the other slots give
            advance(1, int(asked_tokens[slot]), bool(replayed[slot]))

    # One prompt's slots back to back (llama.cpp reuses its evaluated prefix), in a stable order; in process with
    # hf, batches of `concurrency` slots in that order, asked one batch at a time.
    order = np.lexsort((np.arange(n), slot_prompt)).tolist()
    size = max(1, concurrency) if gen.backend == "hf" else 1
    groups = [order[s:s + size] for s in range(0, n, size)]
    workers = 1 if gen.backend in ("gguf", "hf") else max(1, concurrency)
    with reporter.rate_task("generate", n, "tok/s", replays=plan["cached"]) as advance, ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda g: work(g, advance), groups))
    if state["fatal"] is not None:
        raise GenerationError(f"{state['fatal']}; {state['failed']} of {n} generations had failed before")
    if state["failed"] > allowed:
        raise GenerationError(
            f"LLM generator {gen.endpoint}: {state['failed']} generations failed (of {int((tries > 0).sum())} "
            f"tried, {n} planned); --llm-max-error-rate {max_error_rate:g} allows {math.floor(allowed)}; "
            f"last problem: {' '.join(str(state['last']).split())[:300]}")
    kinds = {k: int((reason == k).sum()) for k in sorted(set(reason.tolist())) if k}
    counts = {"slots": n, "requests_asked": state["asked"], "from_cache": int(cached.sum()),
              "attempts": int(tries.sum()), "retried_slots": int((tries > 1).sum()), "failed": state["failed"],
              "dropped": kinds, "request_errors": state["errors"], "last_problem": state["last"],
              "prompt_tokens": int(ptok.sum()), "completion_tokens": int(ctok.sum())}
    return Generations(text, reason, tries, seeds, ptok, ctok, cached, plan, counts)
