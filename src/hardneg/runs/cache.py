"""On-disk caches keyed by fingerprints: embeddings in resumable shards, and search results."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .files import write_json, write_npy, write_npz
from .store import DTYPES, EmbeddingMatrix, write_rows

Encoder = Callable[[list[str]], np.ndarray]
ShardEncoder = Callable[[Iterator[tuple[int, list[str]]]], Iterator[tuple[int, np.ndarray]]]
"""Encodes (shard number, texts) items, yielding (shard number, embeddings) in any order."""


class Cache:
    """A cache folder. ``embeddings(key, ...)`` encodes in length-sorted shards, each written
    atomically, so a killed encode resumes at the first missing shard; ``arrays`` stores search
    results so that changing a threshold re-runs neither encoding nor search."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.encoded_texts = 0  # how many texts this process encoded (tests read it)

    def embedding_path(self, key: str) -> Path:
        return self.root / "embeddings" / key / "embeddings.npy"

    def has_embeddings(self, key: str) -> bool:
        return self.embedding_path(key).exists()

    def embeddings(self, key: str, texts: Sequence[str], encode: Encoder, shard_size: int = 2048,
                   on_progress: Callable[[int], None] | None = None,
                   meta: dict[str, Any] | None = None, dtype: str = "fp32",
                   encode_shards: ShardEncoder | None = None) -> EmbeddingMatrix:
        """Embeddings of ``texts`` (row i = texts[i]) from the cache, encoding what is missing.
        ``encode_shards`` (e.g. Ray workers) encodes many missing shards at once instead of ``encode``."""
        final = self.embedding_path(key)
        if final.exists():
            if on_progress:
                on_progress(len(texts))
            return EmbeddingMatrix(final)
        folder = final.parent
        folder.mkdir(parents=True, exist_ok=True)
        # Longest first: similar lengths share a batch (less padding) and the first shard is the slowest.
        order = np.argsort(-np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)),
                           kind="stable")
        # The shard size is in the name: a call cutting other shards (another caller, another process on the
        # same key) never reads these as its own.
        shards = [(order[s:s + shard_size], folder / f"shard-{shard_size}-{n:05d}.npy")
                  for n, s in enumerate(range(0, len(texts), shard_size))]
        todo = [n for n, (_, shard) in enumerate(shards) if not shard.exists()]
        if on_progress:
            on_progress(len(texts) - sum(len(shards[n][0]) for n in todo))
        work = ((n, [texts[i] for i in shards[n][0]]) for n in todo)
        results = encode_shards(work) if encode_shards else ((n, encode(batch)) for n, batch in work)
        for n, emb in results:  # each shard is written atomically as it arrives: a kill loses none
            write_npy(shards[n][1], np.asarray(emb, dtype=DTYPES[dtype]))
            self.encoded_texts += len(shards[n][0])
            if on_progress:
                on_progress(len(shards[n][0]))
        try:
            if not final.exists():  # else another process finished the same key meanwhile: take its matrix
                dim = np.load(shards[0][1], mmap_mode="r").shape[1] if shards else 0
                write_rows(final, ((idx, np.load(shard)) for idx, shard in shards), (len(texts), dim),
                           DTYPES[dtype])
                if meta is not None:
                    write_json(folder / "meta.json", {**meta, "dtype": dtype})
        except FileNotFoundError:  # a process with the same shards finished and removed them
            if not final.exists():
                raise
        for shard in folder.glob("shard-*.npy"):  # these and any a killed call of another shard size left
            shard.unlink(missing_ok=True)
        return EmbeddingMatrix(final)

    def array_path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.npz"

    def load_arrays(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        p = self.array_path(kind, key)
        if not p.exists():
            return None
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def save_arrays(self, kind: str, key: str, **arrays: np.ndarray) -> None:
        write_npz(self.array_path(kind, key), **arrays)
