"""One request's sampling settings and the completion it got: what every generation backend takes and returns,
and what the completion cache keeps."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
