"""On-disk caches keyed by fingerprints: embeddings in resumable shards, and search results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import write_json, write_npy, write_npz

Encoder = Callable[[list[str]], np.ndarray]


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
                   meta: dict[str, Any] | None = None) -> np.ndarray:
        """Embeddings of ``texts`` (row i = texts[i]) from the cache, encoding what is missing."""
        final = self.embedding_path(key)
        if final.exists():
            if on_progress:
                on_progress(len(texts))
            return np.load(final, mmap_mode="r")
        folder = final.parent
        folder.mkdir(parents=True, exist_ok=True)
        # Longest first: similar lengths share a batch (less padding) and the first shard is the slowest.
        order = np.argsort(-np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)),
                           kind="stable")
        shards = []
        for n, start in enumerate(range(0, len(texts), shard_size)):
            idx = order[start:start + shard_size]
            shard = folder / f"shard-{n:05d}.npy"
            if not shard.exists():
                emb = np.asarray(encode([texts[i] for i in idx]), dtype=np.float32)
                self.encoded_texts += len(idx)
                write_npy(shard, emb)
            if on_progress:
                on_progress(len(idx))
            shards.append((idx, shard))
        dim = np.load(shards[0][1], mmap_mode="r").shape[1] if shards else 0
        out = np.empty((len(texts), dim), dtype=np.float32)
        for idx, shard in shards:
            out[idx] = np.load(shard)
        write_npy(final, out)
        if meta is not None:
            write_json(folder / "meta.json", meta)
        for _, shard in shards:
            shard.unlink(missing_ok=True)
        return np.load(final, mmap_mode="r")

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
