"""Graded-document settings: one pydantic model for the ``hardneg generate graded`` options and the
Python API. The LLM and endpoint options are :class:`~hardneg.generation.config.QueryGenConfig`'s
fields (declared there once); the rest are the graded generator's own."""

from __future__ import annotations

from copy import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import ConfigError
from .config import GeneratorField, QueryGenConfig
from .graded_prompts import LEVELS


def _shared(name: str) -> Any:
    """:class:`QueryGenConfig`'s field (default, bounds, help), declared there once."""
    return copy(QueryGenConfig.model_fields[name])


def parse_levels(value: Any) -> tuple[int, ...]:
    """``"3,2,1,0"`` (or a list of ints) as distinct levels from :data:`LEVELS`, in the given order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        levels = tuple(int(str(v).strip()) for v in items if str(v).strip())
    except ValueError:
        raise ConfigError(f"levels: expected levels like 3,2,1,0, got {value!r}") from None
    if not levels:
        raise ConfigError("levels: give at least one level")
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise ConfigError(f"levels: {bad[0]} is not a level (choose from {', '.join(map(str, sorted(LEVELS)))})")
    if len(set(levels)) != len(levels):
        raise ConfigError(f"levels: {value!r} names a level twice")
    return levels


class GradedGenConfig(BaseModel):
    """Everything that decides the graded documents (plus where they go and how patiently the LLM is asked)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="labelled collection whose queries get documents (a BEIR folder, pairs file or "
                         "Hugging Face dataset, as for mine)")
    llm: GeneratorField = _shared("llm")
    out: str = Field(description="BEIR folder to write (corpus.jsonl = the corpus + the synthetic documents, "
                     "queries.jsonl, qrels/<split>.tsv, generation.parquet, manifest.json)")
    split: str = Field("train", description="qrels split of --dataset whose queries get documents (written under "
                       "the same name)")
    levels: tuple[int, ...] = Field("3,2,1,0", validate_default=True, description="relevance levels to write documents for, comma "
                                    "separated: 3 answers the query fully, 2 in part, 1 on its topic without "
                                    "answering it, 0 on topic but of no use (written as a grade-0 judgement)")
    per_level: int = Field(1, ge=1, description="documents asked per query and level")
    sample_queries: int | None = Field(None, ge=1, description="write for a seeded sample of this many judged "
                                       "queries [default: every query with a positive]")
    real_grade: int | None = Field(None, ge=1, description="grade of the real positives in the written qrels "
                                   "[default: binary qrels (every positive grade 1) get the top level asked, so "
                                   "that a real positive is not below a synthetic level-3 document; graded qrels "
                                   "keep their grades]")
    seed: int = Field(0, description="seed of the query sample and of every sampling seed")
    llm_model: str = _shared("llm_model")
    temperature: float = _shared("temperature")
    top_p: float = _shared("top_p")
    max_tokens: int = Field(160, ge=8, description="tokens per document at most (a document cut off there is bad "
                            "output)")
    min_words: int = Field(8, ge=1, description="words a document needs (a shorter one is bad output)")
    attempts: int = Field(3, ge=1, description="tries per document when the output is bad (empty, a copy of the "
                          "query or of an example, not one finished paragraph), each with a new seed; then it is "
                          "dropped and counted")
    concurrency: int = _shared("concurrency")
    llm_retries: int = _shared("llm_retries")
    llm_timeout: float = _shared("llm_timeout")
    llm_max_error_rate: float = Field(0.1, ge=0, le=1, description="stop, writing nothing, when more than this "
                                      "share of the documents asked failed (request errors and bad output)")
    cache_dir: str | None = _shared("cache_dir")

    @field_validator("levels", mode="before")
    @classmethod
    def _check_levels(cls, v: Any) -> tuple[int, ...]:
        return parse_levels(v)

    def output_settings(self) -> dict[str, Any]:
        """The fields that decide the output bytes (not where they go or how patiently the LLM is asked)."""
        return self.model_dump(mode="json", exclude={"out", "cache_dir", "concurrency", "llm_retries", "llm_timeout",
                                                     "llm_max_error_rate"})
