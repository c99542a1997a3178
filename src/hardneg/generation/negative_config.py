"""Negative-generation settings: one pydantic model for the ``hardneg generate negatives`` options and
the Python API (the LLM and judge specs parsed once, as ``generate queries`` and ``mine`` parse them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import JudgeField, LLMJudgeField
from .config import GeneratorField, QueryGenConfig


class NegativeGenConfig(BaseModel):
    """Everything that decides the generated negatives (plus where they go and how patiently the LLM is asked)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="a collection with qrels (BEIR folder, pairs file, HF id): a negative is "
                         "written for each of its judged queries")
    split: str = Field("train", description="qrels split")
    llm: GeneratorField = Field(description=QueryGenConfig.model_fields["llm"].description)
    out: str = Field(description="folder to write (documents.jsonl, generation.parquet, manifest.json)")
    llm_model: str = Field("default", description="model name sent to an OpenAI-compatible endpoint (key from "
                           "$HARDNEG_LLM_API_KEY or $OPENAI_API_KEY); default: the one it serves")
    per_query: int = Field(1, ge=1, description="negatives asked per query")
    with_positive: bool = Field(False, description="show the LLM the query's positive too (its first of the "
                                "highest grade), not only the query")
    sample_queries: int | None = Field(None, ge=1, description="write for a seeded sample of this many queries "
                                       "[default: every judged query]")
    seed: int = Field(0, description="seed of the query sample and every sampling seed")
    temperature: float = Field(0.7, ge=0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling share")
    max_tokens: int = Field(160, ge=1, description="tokens per passage at most (a longer one is cut off: bad output)")
    max_doc_chars: int = Field(1000, ge=100, description="characters of each positive put in the prompt")
    attempts: int = Field(3, ge=1, description="tries per negative when the output is bad (empty, a copy of the "
                          "query or positive, cut off or too short), each with a new seed; then dropped and counted")
    judge: JudgeField | None = Field(None, description="cross-encoder:PATH (from `hardneg train-judge`): a passage "
                                     "it finds relevant (P >= judge_threshold) is dropped as an accidental positive")
    judge_threshold: float = Field(0.5, gt=0, lt=1, description="drop a passage whose calibrated P(relevant) is at "
                                   "least this")
    llm_judge: LLMJudgeField | None = Field(None, description="llm:http(s)://HOST/v1 or llm:PATH.gguf: judges every "
                                            "passage the cross-encoder kept (or every passage)")
    llm_threshold: float = Field(0.5, gt=0, lt=1, description="drop when the LLM judge's P(yes) is at least this")
    filter: str | None = Field(None, description="one of mining's score rules, judged by a dense teacher against "
                               "the query's own positives: percpos:P | margin:M | maxscore:S | minscore:S (percpos:0.95 "
                               "drops a passage scored above 0.95 x the query's lowest positive, as mined negatives "
                               "are); run before the judges [default: none]")
    filter_model: str | None = Field(None, description="--filter's teacher model [default: the packaged "
                                     "all-MiniLM-L6-v2]")
    concurrency: int = Field(4, ge=1, description="requests in flight on an HTTP endpoint (generator and LLM judge); "
                             "prompts per batch with hf:")
    llm_retries: int = Field(3, ge=0, description="retries of a failed LLM request")
    llm_timeout: float = Field(60.0, gt=0, description="seconds before an LLM request fails")
    llm_max_error_rate: float = Field(0.1, ge=0, le=1, description="stop, writing nothing, when more than this "
                                      "share of the negatives asked (or of the LLM-judged ones) failed")
    cache_dir: str | None = Field(None, description="cache folder [default: $HARDNEG_CACHE_DIR or the user cache]")

    @field_validator("filter")
    @classmethod
    def _one_score_rule(cls, v: str | None) -> str | None:
        from .negative_filter import parse_score_rule

        return None if v is None else str(parse_score_rule(v))

    @model_validator(mode="after")
    def _model_needs_filter(self) -> NegativeGenConfig:
        if self.filter_model is not None and self.filter is None:
            raise ValueError("filter_model is --filter's teacher: give --filter too")
        return self

    def unset_filter(self) -> set[str]:
        """The filter fields when no filter is set: left out of the key and the manifest, so a folder written
        before they existed keeps its fingerprint (and the models trained on it their keys)."""
        return {"filter", "filter_model"} if self.filter is None else set()

    def output_settings(self) -> dict[str, Any]:
        """The fields that decide the output bytes (not where they go or how patiently the LLM is asked)."""
        return self.model_dump(mode="json", exclude={"out", "cache_dir", "concurrency", "llm_retries", "llm_timeout",
                                                     "llm_max_error_rate"} | self.unset_filter())
