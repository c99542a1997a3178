"""Mining configuration: one pydantic model shared by the CLI, YAML files and the Python API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .candidates.encoders import ENCODERS, resolve_for_model
from .candidates.teachers.dense import SEARCH_KINDS
from .candidates.teachers.hybrid import FUSIONS
from .decisions.filters import FilterChain
from .errors import ConfigError
from .runs.store import DTYPES
from .sampling import SamplerSpec

TEACHER_KINDS = ("bm25", "dense", "e5", "hybrid")
_DEFAULT_MODEL = ("", "default", "minilm")  # names of the packaged MiniLM (see fingerprint.resolve_model)


@dataclass(frozen=True)
class TeacherSpec:
    """``bm25[:stem]``, ``dense[:MODEL]``, ``e5[:enpt]`` or ``hybrid[:bm25+dense:MODEL+e5...]``, parsed once into
    (kind, option) members: the BM25 option (``stem``) or the dense model (None = the packaged MiniLM).
    ``str()`` is the canonical spelling (``BM25`` -> ``bm25``, ``dense:default`` -> ``dense``,
    ``hybrid:bm25+dense`` -> ``hybrid``); a model may itself contain ':' (URLs, drive letters)."""

    kind: str
    members: tuple[tuple[str, str | None], ...]

    @staticmethod
    def parse(text: str | TeacherSpec) -> TeacherSpec:
        if isinstance(text, TeacherSpec):
            return text
        head, colon, rest = text.strip().partition(":")
        if head.strip().lower() != "hybrid":
            member = _teacher_member(text)
            return TeacherSpec(member[0], (member,))
        if not colon:
            return TeacherSpec("hybrid", _HYBRID_DEFAULT)
        members = tuple(_teacher_member(p) for p in rest.split("+"))
        if len(members) < 2:
            raise ConfigError(f"hybrid teacher '{text}' needs at least two members, e.g. hybrid:bm25+dense")
        return TeacherSpec("hybrid", members)

    def __str__(self) -> str:
        if self.kind == "hybrid" and self.members == _HYBRID_DEFAULT:
            return "hybrid"
        text = "+".join(kind + (f":{opt}" if opt else "") for kind, opt in self.members)
        return f"hybrid:{text}" if self.kind == "hybrid" else text

    def names(self) -> list[str]:
        """Each member's teacher name: its kind, numbered when a kind repeats (``dense``, ``dense2``)."""
        names: list[str] = []
        for i, (kind, _) in enumerate(self.members):
            names.append(kind if kind not in names else f"{kind}{i + 1}")
        return names


@dataclass(frozen=True)
class ScoreWithSpec(TeacherSpec):
    """``e5+bm25:stem+dense:MODEL+cross-encoder:MODEL``: the extra teachers that score a run's candidates
    for soft labels (kind ``scores``; ``str()`` joins the members with ``+``). A cross-encoder scores
    only (:mod:`hardneg.candidates.teachers.cross_encoder`: GPL's pseudo-labels)."""

    @staticmethod
    def parse(text: str | TeacherSpec) -> ScoreWithSpec:  # type: ignore[override]
        if isinstance(text, ScoreWithSpec):
            return text
        parts = [p for p in str(text).split("+") if p.strip()]
        if not parts:
            raise ConfigError("expected one or more teachers joined by '+', e.g. e5+bm25:stem")
        return ScoreWithSpec("scores", tuple(_score_member(p) for p in parts))


def _score_member(text: str) -> tuple[str, str | None]:
    """A teacher member, or ``cross-encoder:MODEL`` (scoring only)."""
    kind, _, option = text.strip().partition(":")
    if kind.strip().lower() == "cross-encoder":
        if not option.strip():
            raise ConfigError(f"'{text.strip()}': name the model, cross-encoder:PATH (a CrossEncoder folder, e.g. "
                              "from `hardneg train-judge`, or a hub id)")
        return "cross-encoder", option.strip()
    return _teacher_member(text)


def _teacher_member(text: str) -> tuple[str, str | None]:
    """One ``bm25[:stem]``, ``dense[:MODEL]`` or ``e5[:enpt]``, checked."""
    kind, _, option = text.strip().partition(":")
    kind, opt = kind.strip().lower(), option.strip() or None
    if kind == "bm25":
        if opt is not None and opt.lower() != "stem":
            raise ConfigError(f"unknown bm25 option '{opt}' in teacher '{text.strip()}' (use bm25 or bm25:stem)")
        return kind, opt and opt.lower()
    if kind == "dense":
        return kind, None if opt is None or opt in _DEFAULT_MODEL else opt
    if kind == "e5":
        if opt is not None and opt.lower() not in ("original", "enpt"):
            raise ConfigError(f"unknown e5 variant '{opt}' in teacher '{text.strip()}' (use e5 or e5:enpt)")
        return kind, None if opt is None or opt.lower() == "original" else opt.lower()
    raise ConfigError(f"unknown teacher '{text.strip()}' (use {', '.join(TEACHER_KINDS)})")


_HYBRID_DEFAULT: tuple[tuple[str, str | None], ...] = (("bm25", None), ("dense", None))


def _after_prefix(text: str, prefix: str, error: str) -> str:
    """``PREFIX:REST`` (prefix in any case, spaces trimmed) -> ``REST``; a ConfigError with ``error``
    when the prefix differs or nothing follows it."""
    kind, _, rest = text.strip().partition(":")
    if kind.strip().lower() != prefix or not rest.strip():
        raise ConfigError(error)
    return rest.strip()


@dataclass(frozen=True)
class JudgeSpec:
    """``cross-encoder:PATH``: a judge folder written by ``hardneg train-judge``."""

    path: str

    @staticmethod
    def parse(text: str | JudgeSpec) -> JudgeSpec:
        if isinstance(text, JudgeSpec):
            return text
        return JudgeSpec(_after_prefix(text, "cross-encoder", f"unknown judge '{text}' (use cross-encoder:PATH)"))

    def __str__(self) -> str:
        return f"cross-encoder:{self.path}"


@dataclass(frozen=True)
class LLMJudgeSpec:
    """``llm:http(s)://HOST:PORT/v1`` (an OpenAI-compatible endpoint) or ``llm:PATH.gguf`` (in process)."""

    target: str

    @staticmethod
    def parse(text: str | LLMJudgeSpec) -> LLMJudgeSpec:
        if isinstance(text, LLMJudgeSpec):
            return text
        return LLMJudgeSpec(_after_prefix(text, "llm", f"unknown LLM judge '{text}' (use llm:http://HOST:PORT/v1 "
                                                       "or llm:PATH.gguf)"))

    def __str__(self) -> str:
        return f"llm:{self.target}"


@dataclass(frozen=True)
class BackendSpec:
    """``local`` (in-process), ``ray`` (a local Ray, or $RAY_ADDRESS) or ``ray:ADDRESS``."""

    kind: str = "local"
    address: str | None = None

    @staticmethod
    def parse(text: str | BackendSpec) -> BackendSpec:
        if isinstance(text, BackendSpec):
            return text
        kind, _, address = text.strip().partition(":")
        kind = kind.strip().lower()
        if kind == "local" and not address.strip():
            return BackendSpec()
        if kind == "ray":
            return BackendSpec("ray", address.strip() or None)
        raise ConfigError(f"unknown backend '{text}' (use local, ray or ray:ADDRESS)")

    def __str__(self) -> str:
        return self.kind + (f":{self.address}" if self.address else "")


def _parsed(spec: Any) -> Callable[[Any, ValidationInfo], Any]:
    """A pydantic validator that parses a ``spec`` class's string (or takes a parsed value as it is)
    and names the option in its error: ``teacher: unknown bm25 option 'foo' in teacher 'bm25:foo'``."""

    def validate(value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str | spec):
            raise ConfigError(f"{info.field_name}: expected text, got {value!r}")
        try:
            return spec.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{info.field_name}: {exc}") from None

    return validate


# The plain-string options and the values each may take (one validator for all of them).
CHOICES: dict[str, tuple[str, ...]] = {"search": SEARCH_KINDS, "fusion": FUSIONS, "encoder": ENCODERS,
                                       "embedding_dtype": tuple(DTYPES)}
# Typed spec fields: parsed once when the config is made, dumped (manifest, YAML, fingerprint) as
# their one canonical string.
_AS_TEXT = PlainSerializer(str, return_type=str)
_TEXT_SCHEMA = WithJsonSchema({"type": "string"})
TeacherField = Annotated[TeacherSpec, PlainValidator(_parsed(TeacherSpec)), _AS_TEXT, _TEXT_SCHEMA]
ScoreWithField = Annotated[TeacherSpec, PlainValidator(_parsed(ScoreWithSpec)), _AS_TEXT, _TEXT_SCHEMA]
FilterField = Annotated[FilterChain, PlainValidator(_parsed(FilterChain)), _AS_TEXT, _TEXT_SCHEMA]
SamplerField = Annotated[SamplerSpec, PlainValidator(_parsed(SamplerSpec)), _AS_TEXT, _TEXT_SCHEMA]
JudgeField = Annotated[JudgeSpec, PlainValidator(_parsed(JudgeSpec)), _AS_TEXT, _TEXT_SCHEMA]
LLMJudgeField = Annotated[LLMJudgeSpec, PlainValidator(_parsed(LLMJudgeSpec)), _AS_TEXT, _TEXT_SCHEMA]
BackendField = Annotated[BackendSpec, PlainValidator(_parsed(BackendSpec)), _AS_TEXT, _TEXT_SCHEMA]


class MineConfig(BaseModel):
    """Everything that decides a mining run's output (plus where to write it)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="BEIR folder, pairs file (jsonl/parquet/csv), HF dataset id or local HF folder")
    split: str = Field("train", description="qrels split")
    corpus: str | None = Field(None, description="extra corpus file for a pairs dataset")
    query_column: str | None = Field(None, description="query column of a pairs dataset [default: found by name]")
    positive_column: str | None = Field(None, description="positive column of a pairs dataset "
                                        "[default: found by name]")
    teacher: TeacherField = Field("dense", validate_default=True,
                                  description="bm25[:stem] | dense[:MODEL] | e5[:enpt] | hybrid[:bm25+dense:MODEL+e5]")
    score_with: ScoreWithField | None = Field(
        None, description="extra teachers that score every candidate, positive and negative for soft labels "
        "(score_<teacher> columns), e.g. e5+bm25:stem+dense:MODEL, or cross-encoder:MODEL (GPL's pseudo-labels: "
        "raw logits, column cross-encoder_<folder>); not used to search or filter")
    fusion: str = Field("rrf", description=f"hybrid fusion: {' | '.join(FUSIONS)}")
    filter_on: str | None = Field(None, description="teacher whose scores the filters use (hybrid: first dense)")
    filter: FilterField = Field("percpos:0.95", validate_default=True,
                                description="none | cascade | percpos:0.95 | margin:0.05 | maxscore:S | minscore:S | "
                                "near_duplicate:0.5 | near_positive:auto|C | knn_positive:0.5, joined by +")
    max_depth: int = Field(1000, ge=1, description="queries left short by the filters are searched again "
                           "to this depth (set equal to depth to turn off)")
    reference_floor: int | None = Field(
        None, ge=0, description="positive-aware rules use max(s+, score at this non-positive rank); "
        "default 10 when the filters use BM25 scores (a weak positive scores ~0 there), else off; 0 = off")
    calibration_quantile: float = Field(0.2, gt=0, lt=1, description="near_positive:auto drops candidates closer "
                                        "to a positive than this quantile of positive-to-positive cosines")
    near_model: str | None = Field(None, description="embedding model for near_positive when the teacher has "
                                   "none [default: packaged MiniLM]")
    judge: JudgeField | None = Field(None, description="cross-encoder:PATH (from `hardneg train-judge`): rescores the "
                              "top judge_depth kept candidates after the rules")
    judge_depth: int = Field(30, ge=1, description="non-positive ranks the judge rescores per query")
    judge_threshold: float = Field(0.5, gt=0, lt=1, description="drop a candidate whose calibrated P(relevant) "
                                   "is at least this")
    llm_judge: LLMJudgeField | None = Field(None, description="llm:http(s)://HOST/v1 (OpenAI-compatible) or llm:PATH.gguf; "
                                  "with a cross-encoder it sees only the ambiguous band")
    llm_model: str = Field("default", description="model name sent to an OpenAI-compatible LLM endpoint (key from "
                           "$HARDNEG_LLM_API_KEY or $OPENAI_API_KEY)")
    llm_concurrency: int = Field(4, ge=1, description="LLM requests in flight at once")
    llm_retries: int = Field(3, ge=0, description="retries of a failed LLM request")
    llm_timeout: float = Field(30.0, gt=0, description="seconds before an LLM request fails")
    llm_max_error_rate: float = Field(0.05, ge=0, le=1, description="stop the run, writing nothing, when more "
                                      "than this share of the LLM-judged pairs failed (0 = any failure)")
    llm_threshold: float = Field(0.5, gt=0, lt=1, description="drop when the LLM's P(yes) is at least this")
    llm_band: float = Field(0.2, ge=0, lt=1, description="cross-encoder probabilities in [band, judge_threshold) "
                            "go to the LLM")
    relabel: bool = Field(False, description="candidates the judges agree are relevant become positives "
                          "(reason 'relabelled', column relabelled_ids), never silently")
    sampler: SamplerField = Field("top", validate_default=True, description="top | window:10-100 | random[:A-B] | "
                                  "simans[:a=,b=] | top1+sampled[:A-B]")
    num_negatives: int = Field(4, ge=1, description="negatives per query")
    depth: int = Field(100, ge=1, description="non-positive candidates considered per query")
    seed: int = Field(0, description="seed for every random choice")
    search: str = Field("exact", description=" | ".join(SEARCH_KINDS))
    query_prompt: str | None = Field(None, description="prompt prepended to queries (dense)")
    doc_prompt: str | None = Field(None, description="prompt prepended to documents (dense)")
    max_length: int | None = Field(None, ge=1, description="max tokens per text (dense) [default: the model's]")
    batch_size: int = Field(32, ge=1, description="encoding batch size")
    device: str | None = Field(None, description="torch device [default: auto]")
    encoder: str = Field("auto", description="dense encoder: auto (on a CPU with native bf16: openvino if installed, "
                         "else bf16; elsewhere torch fp32) | torch | bf16 | onnx | onnx-int8 | openvino")
    embedding_dtype: str = Field("fp32", description="stored corpus embeddings: fp32 | fp16 (half the disk and reads)")
    backend: BackendField = Field("local", validate_default=True, description="local (in-process) | ray | "
                                  "ray:ADDRESS (an existing cluster): tasks over query shards")
    strict: bool = Field(False, description="treat empty documents as errors")
    cache_dir: str | None = Field(None, description="cache folder [default: $HARDNEG_CACHE_DIR or the user cache]")
    out: str | None = Field(None, description="run folder to write")

    @field_validator(*CHOICES)
    @classmethod
    def _choice(cls, v: str, info: ValidationInfo) -> str:
        allowed = CHOICES[str(info.field_name)]
        if v not in allowed:
            raise ValueError(f"unknown {str(info.field_name).replace('_', ' ')} '{v}' (use {', '.join(allowed)})")
        return v

    @model_validator(mode="after")
    def _filter_on(self) -> MineConfig:
        names = self.teacher.names()
        if self.filter_on is not None and self.filter_on not in names:
            raise ConfigError(f"filter_on: '{self.filter_on}' is not one of the teachers of '{self.teacher}' "
                              f"({', '.join(names)})")
        return self

    def check_files(self) -> None:
        """What a run reads besides the data must be there before any work starts: the judge folder
        and a local GGUF file (an endpoint is asked once, by the judge, before mining)."""
        if self.judge is not None and not (Path(self.judge.path) / "hardneg_judge.json").is_file():
            raise ConfigError(f"judge: no hardneg_judge.json in '{self.judge.path}' (from '{self.judge}'; "
                              "make one with `hardneg train-judge`)")
        if self.llm_judge is not None:
            from .decisions.llm import parse_llm_target

            try:
                parse_llm_target(str(self.llm_judge))
            except ConfigError as exc:
                raise ConfigError(f"judge: {exc}") from None

    _encoders: dict[str, str] | None = PrivateAttr(None)

    def dense_models(self) -> list[str | None]:
        """The dense models a run encodes with: the dense teachers', else ``near_model`` when a rule
        compares embeddings (near_positive, knn_positive). None is the packaged MiniLM."""
        models = [opt for kind, opt in self.teacher.members if kind == "dense"]
        if not models and any(f.kind in ("near_positive", "knn_positive") for f in self.filter):
            models = [self.near_model]
        return models

    def encoders(self) -> dict[str, str]:
        """The concrete encoder of each dense model (``auto`` resolved on this machine, for this device
        and model folder), keyed by model ("default" = the packaged MiniLM). Decided once: the
        fingerprint, the manifest and the teachers all use this answer."""
        if self._encoders is None:
            field = "teacher" if any(kind == "dense" for kind, _ in self.teacher.members) else "near_model"
            try:
                self._encoders = {m or "default": resolve_for_model(self.encoder, self.device, m)
                                  for m in self.dense_models()}
            except ConfigError as exc:
                raise ConfigError(f"{field}: {exc}") from None
        return self._encoders

    def encoder_for(self, model: str | None) -> str:
        """The resolved encoder of one of :meth:`dense_models`."""
        return self.encoders().get(model or "default") or resolve_for_model(self.encoder, self.device, model)

    def output_settings(self) -> dict[str, Any]:
        """The fields that decide the output bytes (not where they go, how they are cached or when a
        failing judge stops the run), specs in their canonical spelling, and the encoders ``encoder``
        resolved to rather than what was asked (``auto`` is a different encoder on another machine)."""
        settings = self.model_dump(exclude={"cache_dir", "out", "device", "batch_size", "backend", "encoder",
                                            "llm_max_error_rate", *(() if self.score_with else ("score_with",))})
        return settings | {"encoders": self.encoders()}


def teacher_members(spec: str) -> list[tuple[str, str | None]]:
    """``hybrid`` -> bm25 + default dense; ``hybrid:bm25+dense:M`` -> listed members;
    ``dense:M`` -> one member with a model (see :class:`TeacherSpec`)."""
    return list(TeacherSpec.parse(spec).members)


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
