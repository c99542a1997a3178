"""load_beir: a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) as a Collection."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..runs.files import sha256_file
from .builder import Builder, add_corpus, add_qrels_rows, add_queries
from .readers import read_jsonl, read_qrels_tsv
from .types import Collection


def load_beir(path: str | Path, split: str = "train", strict: bool = False) -> Collection:
    """Load a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

    Empty documents are skipped with a warning (and their judgements dropped); ``strict=True``
    makes them an error. Queries must have text.

    Args:
        path: the folder.
        split: which qrels file to read, ``qrels/<split>.tsv``.
        strict: make an empty document an error instead of a warning.

    Returns:
        The Collection, ids sorted; ``source`` records the folder, split and file checksums.

    Example:
        ::

            from hardneg import load_beir

            col = load_beir("data/scifact", split="test")
            print(col.num_docs, col.query_ids.size, len(col.qrels))
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    corpus, queries, qrels = root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"
    for f in (corpus, queries):
        if not f.is_file():
            raise DataError(f, "file not found (a BEIR folder needs corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    if not qrels.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise DataError(qrels, f"file not found (split '{split}'; available: {', '.join(have) or 'none'})")
    b = Builder(strict=strict)
    add_corpus(b, read_jsonl(corpus), corpus)
    add_queries(b, read_jsonl(queries), queries)
    add_qrels_rows(b, read_qrels_tsv(qrels), qrels)
    source = {"kind": "beir", "path": str(root.resolve()), "split": split,
              "checksums": {str(f.relative_to(root)): sha256_file(f) for f in (corpus, queries, qrels)}}
    return b.build(source)
