"""What every generator shares around its output folder: the endpoint opened and checked before anything is
written, and a finished folder with the same settings returned as it is (one with other settings is refused unless
``overwrite``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError
from ..runs.fingerprint import env_cache_dir
from .client import TextGenerator
from .config import GeneratorSpec

MANIFEST = "manifest.json"
PROVENANCE = "generation.parquet"


@dataclass
class GeneratedFolder:
    """A folder written by a generator: its path, manifest and provenance table (one row per item asked)."""

    path: Path
    manifest: dict[str, Any]
    provenance: pa.Table


class EndpointSettings(Protocol):
    """The endpoint fields every generator's config has."""

    llm: GeneratorSpec
    llm_model: str
    llm_retries: int
    llm_timeout: float
    cache_dir: str | None


def open_generator(cfg: EndpointSettings) -> tuple[TextGenerator, str, Path]:
    """The generator, its identity and the cache folder; a dead endpoint stops here, before anything is written."""
    cache_root = env_cache_dir(cfg.cache_dir)
    gen = TextGenerator(cfg.llm.resolve(cache_root), cache_root, model=cfg.llm_model, retries=cfg.llm_retries,
                        timeout=cfg.llm_timeout)
    return gen, gen.check(), cache_root


def finished(out: Path, fingerprint: str, overwrite: bool, what: str, kind: str) -> tuple[dict[str, Any], pa.Table] | None:
    """The manifest and provenance of a folder already written with these settings (``fingerprint``), else None;
    a folder of other settings, or not a ``kind`` folder, is refused unless ``overwrite``."""
    if (out / MANIFEST).is_file():
        old = json.loads((out / MANIFEST).read_text())
        if old.get("fingerprint") == fingerprint:
            return old, pq.read_table(out / PROVENANCE)
        if not overwrite:
            raise ConfigError(f"out: {out} holds {what} generated with other settings (give --overwrite to replace them)")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"out: {out} exists and is not a {kind} folder (give --overwrite to replace it)")
    return None
