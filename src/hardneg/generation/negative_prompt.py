"""The prompt that asks an LLM for a hard negative passage, and the check of what comes back.

A few-shot prompt: an instruction, worked examples, then the query (and, with ``with_positive``, a
passage that answers it), ending at ``Passage that does not answer it:`` so that a base model
completes it with one paragraph on one line ("Don't Retrieve, Generate", arXiv:2504.21015, 2025:
the negative is written from the query alone, or in later versions from the query and its positive).
The examples are fixed (:data:`NEGATIVE_EXAMPLES`, written for this package on the documents of the
query prompt's examples), so every prompt shares one prefix, which llama.cpp's and vLLM's prefix
caches reuse.

Bad output is named, never kept (:func:`bad_passage`): ``empty``; ``copy`` (the query or a positive
again, or a long verbatim stretch of a positive: it would answer the query); ``format`` (cut off at
the token limit, a prompt label echoed, or too short to be a passage)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from .completion import Completion
from .prompts import DEFAULT_EXAMPLES, shorten
from .validation import normalise

INSTRUCTION = ("Write a passage that looks relevant to the search query, on the same topic and with its words, "
               "but does not answer it.")
TEMPLATE = "negative-fewshot-v1"
ANSWER = "Passage that does not answer it:"
# (query, its positive, a passage that looks relevant but does not answer it)
NEGATIVE_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    (DEFAULT_EXAMPLES[0][1], DEFAULT_EXAMPLES[0][0],
     ("Blood pressure in adults with hypertension is measured with a cuff around the upper arm. Readings vary "
     "through the day, so doctors take several on different visits, and walking up stairs just before a reading "
     "can raise it for a few minutes.")),
    (DEFAULT_EXAMPLES[1][1], DEFAULT_EXAMPLES[1][0],
     ("Hard drives and SSDs are sold in the same sizes and connect through the same SATA port. Most laptops sold "
     "today come with an SSD, and many desktops still use a hard drive as a second disk for backups.")),
    (DEFAULT_EXAMPLES[2][1], DEFAULT_EXAMPLES[2][0],
     ("After the Great Fire of London, Christopher Wren drew plans to rebuild the city with wide avenues, and the "
     "Monument was raised near the site in the 1670s to remember the fire.")),
)
_LABELS = re.compile(r"\b(?:query|passage|relevant passage|document)\s*:", re.IGNORECASE)
BAD_REASONS = ("empty", "copy", "format")


@dataclass(frozen=True)
class NegativePrompt:
    """A negative-writing prompt: ``instruction``, then each example as ``Query: ...`` (``Relevant
    passage: ...`` with ``with_positive``) ``Passage that does not answer it: ...``, then the query.
    Positives are cut to ``max_doc_chars`` (examples' to ``example_doc_chars``) at a word boundary.

    Example::

        prompt = NegativePrompt(with_positive=True)
        text = prompt.render("what do mitochondria make", "Mitochondria make ATP by oxidative phosphorylation.")
    """

    with_positive: bool = False
    examples: tuple[tuple[str, str, str], ...] = NEGATIVE_EXAMPLES
    instruction: str = INSTRUCTION
    max_doc_chars: int = 1000
    example_doc_chars: int = 400

    def _block(self, query: str, positive: str | None, limit: int) -> str:
        shown = f"Relevant passage: {shorten(positive or '', limit)}\n" if self.with_positive else ""
        return f"Query: {' '.join(query.split())}\n{shown}{ANSWER}"

    def render(self, query: str, positive: str | None = None) -> str:
        shots = "".join(f"{self._block(q, p, self.example_doc_chars)} {' '.join(n.split())}\n\n"
                        for q, p, n in self.examples)
        return f"{self.instruction}\n\n{shots}{self._block(query, positive, self.max_doc_chars)}"

    @property
    def prompt_id(self) -> str:
        """A short hash of everything that makes the prompt (template, instruction, examples, limits)."""
        blob = json.dumps([TEMPLATE, self.instruction, self.with_positive, self.examples, self.max_doc_chars,
                           self.example_doc_chars])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def describe(self) -> dict[str, object]:
        return {"template": TEMPLATE, "prompt_id": self.prompt_id, "instruction": self.instruction,
                "with_positive": self.with_positive, "examples": [list(e) for e in self.examples],
                "max_doc_chars": self.max_doc_chars, "example_doc_chars": self.example_doc_chars}


def clean_passage(text: str) -> str:
    """A completion as a passage: its first non-empty line, whitespace collapsed."""
    return " ".join(next((ln for ln in text.splitlines() if ln.strip()), "").split())


def bad_passage(c: Completion, query: str, positives: list[str], min_words: int = 8,
                copy_min_words: int = 12) -> str:
    """Why a completion is not a usable negative for ``query``, or ``""`` when it is.

    - ``empty``: no words;
    - ``copy``: normalised, the passage is the query or one of its ``positives``, holds a whole
      positive, or is a verbatim stretch of one of at least ``copy_min_words`` words;
    - ``format``: cut off at the token limit (``finish == "length"``), a ``Query:``/``Passage:`` label
      in it, or fewer than ``min_words`` words."""
    text = clean_passage(c.text)
    words = normalise(text).split()
    if not words:
        return "empty"
    p = " ".join(words)
    if p == normalise(query):
        return "copy"
    for positive in positives:
        pos = normalise(positive)
        if pos and (p == pos or f" {pos} " in f" {p} " or (len(words) >= copy_min_words and f" {p} " in f" {pos} ")):
            return "copy"
    if c.finish == "length" or _LABELS.search(text) or len(words) < min_words:
        return "format"
    return ""
