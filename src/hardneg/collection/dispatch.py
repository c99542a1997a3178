"""load: recognise a source (a BEIR folder, a pairs file, a Hugging Face id or object) and load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from .beir import load_beir
from .hf import load_hf
from .pairs import load_pairs
from .readers import PAIR_SUFFIXES
from .types import Collection


def load(dataset: Any, split: str = "train", corpus: str | Path | None = None,
         query_column: str | None = None, positive_column: str | None = None,
         strict: bool = False) -> Collection:
    """Load any supported source: a BEIR folder, a pairs file, a local or hub HF dataset, or a
    ``datasets`` object. See :func:`load_beir`, :func:`load_pairs` and :func:`load_hf`.

    Args:
        dataset: a path or hub id, a ``datasets`` object, or a Collection (returned as it is).
        split: the qrels split (BEIR, MTEB layout) or dataset split (Hugging Face).
        corpus: for a pairs file, an optional file of more documents.
        query_column: for pairs, the query column (default: found by name).
        positive_column: for pairs, the positive column (default: found by name).
        strict: make an empty document an error instead of a warning.

    Returns:
        A Collection whose documents and queries are sorted by id.

    Example:
        ::

            import hardneg

            col = hardneg.load("data/scifact", split="train")
    """
    if isinstance(dataset, Collection):
        return dataset
    if not isinstance(dataset, (str, Path)):
        return load_hf(dataset, split, query_column, positive_column, strict=strict)
    p = Path(dataset)
    if p.is_dir() and ((p / "corpus.jsonl").exists() or (p / "queries.jsonl").exists()):
        return load_beir(p, split, strict=strict)
    if p.is_file() or p.suffix.lower() in PAIR_SUFFIXES:
        return load_pairs(p, corpus, query_column, positive_column, strict=strict)
    if p.is_dir() or "/" in str(dataset) and not str(dataset).startswith((".", "/")):
        return load_hf(str(dataset), split, query_column, positive_column, strict=strict)
    raise DataError(dataset, "dataset not found: not a BEIR folder, a pairs file or a Hugging Face id")
