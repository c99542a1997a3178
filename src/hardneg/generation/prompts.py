"""The few-shot prompt that asks an LLM for a query: an instruction, a few (document, query) examples,
then the document, ending at ``Query:`` so that a base model completes it with one line (InPars,
Bonifacio et al., SIGIR 2022, arXiv:2202.05144; Promptagator, Dai et al., ICLR 2023, arXiv:2209.11755).

The examples are drawn once per run, seeded, from the user's labelled pairs when there are any (a
BEIR folder with qrels, or a pairs file), else a small default set written for this package. One set
for every document keeps the prompt's prefix the same, which llama.cpp's and vLLM's prefix caches reuse."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..collection import load

INSTRUCTION = "Write a search query that the document answers."
TEMPLATE = "fewshot-v1"
DEFAULT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (("Regular aerobic exercise lowers resting blood pressure in adults with hypertension. In a trial of 300 "
     "patients, twelve weeks of brisk walking reduced systolic pressure by 8 mmHg on average compared with a "
     "control group that did not change its activity."),
     "does walking reduce blood pressure in people with hypertension"),
    (("A solid-state drive stores data in flash memory cells and has no moving parts, so it reads and writes "
     "far faster than a spinning hard disk. Its cells wear out after many write cycles, which the controller "
     "spreads evenly across the chip."),
     "why are SSDs faster than hard drives"),
    (("The Great Fire of London began in a bakery on Pudding Lane in September 1666 and burned for four days, "
     "destroying more than 13,000 houses and St Paul's Cathedral."),
     "where did the great fire of london start"),
)


def shorten(text: str, limit: int) -> str:
    """``text`` with its whitespace collapsed, cut to at most ``limit`` characters at a word boundary."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[: cut.rfind(" ")] if " " in cut else cut


@dataclass(frozen=True)
class FewShotPrompt:
    """A query-writing prompt: ``instruction``, then each example as ``Document: ...`` / ``Query: ...``,
    then the document and ``Query:``. Documents are cut to ``max_doc_chars`` (examples to
    ``example_doc_chars``) at a word boundary.

    Example::

        prompt = FewShotPrompt()                      # the default examples
        text = prompt.render("Mitochondria make ATP by oxidative phosphorylation.")
    """

    examples: tuple[tuple[str, str], ...] = DEFAULT_EXAMPLES
    instruction: str = INSTRUCTION
    max_doc_chars: int = 1500
    example_doc_chars: int = 600
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "default"}, compare=False)

    def render(self, doc: str) -> str:
        shots = "".join(f"Document: {shorten(d, self.example_doc_chars)}\nQuery: {' '.join(q.split())}\n\n"
                        for d, q in self.examples)
        return f"{self.instruction}\n\n{shots}Document: {shorten(doc, self.max_doc_chars)}\nQuery:"

    @property
    def prompt_id(self) -> str:
        """A short hash of everything that makes the prompt (template, instruction, examples, limits)."""
        blob = json.dumps([TEMPLATE, self.instruction, self.examples, self.max_doc_chars, self.example_doc_chars])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def describe(self) -> dict[str, Any]:
        return {"template": TEMPLATE, "prompt_id": self.prompt_id, "instruction": self.instruction,
                "examples": [list(e) for e in self.examples], "examples_from": self.source,
                "max_doc_chars": self.max_doc_chars, "example_doc_chars": self.example_doc_chars}


def examples_from(dataset: str, split: str, n: int, seed: int, exclude_docs: set[str] | None = None,
                  ) -> tuple[tuple[str, str], ...]:
    """``n`` (document, query) examples drawn with ``seed`` from the positive judgements of a labelled
    collection (a BEIR folder with ``qrels/<split>.tsv``, a pairs file, a Hugging Face dataset), one per
    query, none of whose document is in ``exclude_docs`` (the documents being written for)."""
    col = load(dataset, split)
    pos = col.positives()
    order = np.random.default_rng(seed).permutation(len(pos))
    chosen: list[tuple[str, str]] = []
    seen: set[int] = set()
    for i in order.tolist():
        q, d = int(pos.query_idx[i]), int(pos.doc_idx[i])
        if q in seen or (exclude_docs and str(col.doc_ids[d]) in exclude_docs):
            continue
        seen.add(q)
        chosen.append((col.doc_texts[d], col.query_texts[q]))
        if len(chosen) == n:
            break
    return tuple(chosen)
