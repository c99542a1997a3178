"""save_beir: a Collection written back as a BEIR folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..runs.files import write_text
from .types import Collection


def save_beir(collection: Collection, path: str | Path, split: str = "train") -> Path:
    """Write a collection as a BEIR folder (documents keep their joined text; titles are empty).

    Args:
        collection: what to write.
        path: the folder; ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` are
            written in it, each atomically.
        split: the name of the qrels file.

    Returns:
        The folder, which :func:`load_beir` reads back.

    Example:
        ::

            from hardneg import load, save_beir

            save_beir(load("pairs.jsonl"), "data/my-pairs", split="train")
    """
    root = Path(path)
    write_text(root / "corpus.jsonl", "".join(
        json.dumps({"_id": d, "title": "", "text": t}, ensure_ascii=False) + "\n"
        for d, t in zip(collection.doc_ids.tolist(), collection.doc_texts)))
    write_text(root / "queries.jsonl", "".join(
        json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n"
        for q, t in zip(collection.query_ids.tolist(), collection.query_texts)))
    qr = collection.qrels
    write_text(root / "qrels" / f"{split}.tsv", "query-id\tcorpus-id\tscore\n" + "".join(
        f"{collection.query_ids[q]}\t{collection.doc_ids[d]}\t{g}\n"
        for q, d, g in zip(qr.query_idx.tolist(), qr.doc_idx.tolist(), qr.grade.tolist())))
    return root
