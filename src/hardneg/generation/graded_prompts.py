"""The few-shot prompt that asks an LLM for a passage at one level of relevance to a query (SyCL,
Esfandiarpoor et al., 2025, arXiv:2503.23239, writes documents for four levels; the levels follow the
TREC Deep Learning track's four-point scale).

The prompt states the four levels, shows two example queries each with a passage at every level
(written for this package), then gives the query and ends at ``Level N passage:`` so that a base model
completes it with one line. The instruction and examples are the same for every query and level, so
consecutive prompts share their prefix (llama.cpp's and vLLM's prefix caches reuse it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .prompts import shorten

TEMPLATE = "graded-fewshot-v1"
LEVELS: dict[int, str] = {
    3: "the passage is about the query and answers it completely",
    2: "the passage answers the query only in part, or the answer is mixed in with other matters",
    1: "the passage is on the query's topic but does not answer it",
    0: "the passage shares a word or a theme with the query but is of no use to someone asking it",
}
"""Relevance level -> what a passage at that level is (stated in the prompt)."""

INSTRUCTION = "Write a passage for the search query at the given level of relevance."
DEFAULT_EXAMPLES: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = (
    ("does walking reduce blood pressure in people with hypertension", (
        (3, ("In a randomised trial of 300 adults with hypertension, thirty minutes of brisk walking a day for twelve "
            "weeks lowered systolic blood pressure by 8 mmHg on average against an inactive control group, and "
            "diastolic pressure by 4 mmHg.")),
        (2, ("Advice for people with high blood pressure covers salt, alcohol, sleep, weight and medication; regular "
            "exercise such as walking is linked with somewhat lower readings, though most of the guidance is about "
            "diet and drugs.")),
        (1, ("Hypertension is diagnosed when resting blood pressure stays above 130/80 mmHg on repeated readings; it "
            "raises the risk of stroke and heart disease, and many people have it for years without symptoms.")),
        (0, ("Walking holidays in the Highlands suit every level of fitness: routes run from gentle paths along the "
            "lochs to steep ridges, and the guides check each group's pace before the first climb.")),
    )),
    ("why are solid state drives faster than hard disks", (
        (3, ("A solid-state drive keeps data in flash memory cells and has no moving parts, so there is no platter to "
            "spin and no head to position: a read takes microseconds where a hard disk needs several milliseconds.")),
        (2, ("When choosing storage for a laptop, weigh price per gigabyte, capacity, noise and battery life; flash "
            "drives cost more but start programs quicker since nothing mechanical has to move.")),
        (1, ("Hard disks store data magnetically on spinning platters and remain the cheapest way to keep many "
            "terabytes, which is why backup servers and video archives still use them.")),
        (0, ("The drive from the airport to the city centre takes forty minutes outside rush hour, and taxis wait "
            "at the exit of the arrivals hall.")),
    )),
)


@dataclass(frozen=True)
class GradedPrompt:
    """A passage-writing prompt: ``instruction``, the level definitions, each example query with its
    passages (``Query: ...`` / ``Level N passage: ...``), then the query and ``Level N passage:``.
    Queries are cut to ``max_query_chars`` at a word boundary.

    Example::

        prompt = GradedPrompt()
        text = prompt.render("what causes tides", 2)   # ends with "Level 2 passage:"
    """

    examples: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = DEFAULT_EXAMPLES
    instruction: str = INSTRUCTION
    max_query_chars: int = 500

    def prefix(self) -> str:
        """Everything before the query: the same for every query and level."""
        levels = "".join(f"Level {lv}: {LEVELS[lv]}.\n" for lv in sorted(LEVELS, reverse=True))
        shots = "".join(f"Query: {q}\n" + "".join(f"Level {lv} passage: {p}\n" for lv, p in passages) + "\n"
                        for q, passages in self.examples)
        return f"{self.instruction}\n{levels}\n{shots}"

    def render(self, query: str, level: int) -> str:
        if level not in LEVELS:
            raise ValueError(f"level {level} is not one of {sorted(LEVELS)}")
        return f"{self.prefix()}Query: {shorten(query, self.max_query_chars)}\nLevel {level} passage:"

    def passages(self) -> list[str]:
        """The example passages (a completion that copies one is bad output)."""
        return [p for _, passages in self.examples for _, p in passages]

    @property
    def prompt_id(self) -> str:
        """A short hash of everything that makes the prompt (template, instruction, levels, examples, limits)."""
        blob = json.dumps([TEMPLATE, self.instruction, sorted(LEVELS.items()), self.examples, self.max_query_chars])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def describe(self) -> dict[str, object]:
        return {"template": TEMPLATE, "prompt_id": self.prompt_id, "instruction": self.instruction,
                "levels": {str(k): v for k, v in sorted(LEVELS.items(), reverse=True)},
                "examples": [{"query": q, "passages": {str(lv): p for lv, p in passages}} for q, passages in self.examples],
                "max_query_chars": self.max_query_chars}
