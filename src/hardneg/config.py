"""Mining configuration: one pydantic model shared by the CLI, YAML files and the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import ConfigError
from .filters import FilterSpec
from .samplers import SamplerSpec
from .teachers.dense import SEARCH_KINDS
from .teachers.hybrid import FUSIONS

TEACHER_KINDS = ("bm25", "dense", "hybrid")


class MineConfig(BaseModel):
    """Everything that decides a mining run's output (plus where to write it)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="BEIR folder, pairs file, HF dataset id or local HF folder")
    split: str = "train"
    corpus: str | None = Field(None, description="extra corpus file for a pairs dataset")
    query_column: str | None = None
    positive_column: str | None = None
    teacher: str = Field("dense", description="bm25[:stem] | dense[:MODEL] | hybrid[:bm25+dense:MODEL]")
    fusion: str = "rrf"
    filter_on: str | None = Field(None, description="teacher whose scores the filters use")
    filter: str = Field("percpos:0.95", description="none | percpos:P | margin:M | maxscore:S | minscore:S, joined by +")
    max_depth: int = Field(1000, ge=1, description="queries left short by the filters are searched again "
                           "to this depth (set equal to depth to turn off)")
    reference_floor: int | None = Field(
        None, ge=0, description="positive-aware rules use max(s+, score at this non-positive rank); "
        "default 10 when the filters use BM25 scores (a weak positive scores ~0 there), else off; 0 = off")
    calibration_quantile: float = Field(0.2, gt=0, lt=1, description="near_positive:auto drops candidates closer "
                                        "to a positive than this quantile of positive-to-positive cosines")
    near_model: str | None = Field(None, description="embedding model for near_positive when the teacher has "
                                   "none [default: packaged MiniLM]")
    judge: str | None = Field(None, description="cross-encoder:PATH (from `hardneg train-judge`): rescores the "
                              "top judge_depth kept candidates after the rules")
    judge_depth: int = Field(30, ge=1, description="non-positive ranks the judge rescores per query")
    judge_threshold: float = Field(0.5, gt=0, lt=1, description="drop a candidate whose calibrated P(relevant) "
                                   "is at least this")
    llm_judge: str | None = Field(None, description="llm:http(s)://HOST/v1 (OpenAI-compatible) or llm:PATH.gguf; "
                                  "with a cross-encoder it sees only the ambiguous band")
    llm_model: str = "default"
    llm_concurrency: int = Field(4, ge=1)
    llm_retries: int = Field(3, ge=0)
    llm_timeout: float = Field(30.0, gt=0)
    llm_max_error_rate: float = Field(0.05, ge=0, le=1, description="stop the run, writing nothing, when more "
                                      "than this share of the LLM-judged pairs failed (0 = any failure)")
    llm_threshold: float = Field(0.5, gt=0, lt=1, description="drop when the LLM's P(yes) is at least this")
    llm_band: float = Field(0.2, ge=0, lt=1, description="cross-encoder probabilities in [band, judge_threshold) "
                            "go to the LLM")
    relabel: bool = Field(False, description="candidates the judges agree are relevant become positives "
                          "(reason 'relabelled', column relabelled_ids), never silently")
    sampler: str = "top"
    num_negatives: int = Field(4, ge=1)
    depth: int = Field(100, ge=1, description="non-positive candidates considered per query")
    seed: int = 0
    search: str = "exact"
    query_prompt: str | None = None
    doc_prompt: str | None = None
    max_length: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    device: str | None = None
    encoder: str = Field("auto", description="dense encoder: auto (on a CPU with native bf16: openvino if installed, "
                         "else bf16; elsewhere torch) | torch | bf16 | onnx | onnx-int8 | openvino")
    embedding_dtype: str = Field("fp32", description="stored corpus embeddings: fp32 or fp16")
    backend: str = Field("local", description="local (in-process) or ray[:ADDRESS] (tasks over query shards)")
    strict: bool = False
    cache_dir: str | None = None
    out: str | None = None

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, v: str) -> str:
        for member in teacher_members(v):
            if member[0] not in ("bm25", "dense"):
                raise ValueError(f"unknown teacher '{member[0]}' (use {', '.join(TEACHER_KINDS)})")
        return v

    @field_validator("judge")
    @classmethod
    def _judge(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("cross-encoder:"):
            raise ValueError(f"unknown judge '{v}' (use cross-encoder:PATH)")
        return v

    @field_validator("llm_judge")
    @classmethod
    def _llm(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("llm:"):
            raise ValueError(f"unknown LLM judge '{v}' (use llm:http://HOST:PORT/v1 or llm:PATH.gguf)")
        return v

    @field_validator("filter")
    @classmethod
    def _filter(cls, v: str) -> str:
        FilterSpec.parse(v)
        return v

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        SamplerSpec.parse(v)
        return v

    @field_validator("search")
    @classmethod
    def _search(cls, v: str) -> str:
        if v not in SEARCH_KINDS:
            raise ValueError(f"unknown search '{v}' (use {', '.join(SEARCH_KINDS)})")
        return v

    @field_validator("fusion")
    @classmethod
    def _fusion(cls, v: str) -> str:
        if v not in FUSIONS:
            raise ValueError(f"unknown fusion '{v}' (use {', '.join(FUSIONS)})")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v != "local" and v != "ray" and not v.startswith("ray:"):
            raise ValueError(f"unknown backend '{v}' (use local, ray or ray:ADDRESS)")
        return v

    def output_settings(self) -> dict[str, Any]:
        """The fields that decide the output bytes (not where they go or how they are cached)."""
        return self.model_dump(exclude={"cache_dir", "out", "device", "batch_size", "backend", "llm_max_error_rate"})


def teacher_members(spec: str) -> list[tuple[str, str | None]]:
    """``hybrid`` -> bm25 + default dense; ``hybrid:bm25+dense:M`` -> listed members;
    ``dense:M`` -> one member with a model. A model may itself contain ':' (URLs, drive letters)."""
    spec = spec.strip()
    if spec == "hybrid":
        return [("bm25", None), ("dense", None)]
    if spec.startswith("hybrid:"):
        parts = spec[len("hybrid:"):].split("+")
        members = [teacher_members(p)[0] for p in parts]
        if len(members) < 2:
            raise ValueError("a hybrid teacher needs at least two members, e.g. hybrid:bm25+dense")
        return members
    kind, _, model = spec.partition(":")
    return [(kind, model or None)]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) config file; keys are MineConfig fields (dashes allowed)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise ConfigError(f"{p}{f':{line + 1}' if line is not None else ''}: malformed YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
