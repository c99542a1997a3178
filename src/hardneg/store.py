"""Embedding matrices on disk: written shard by shard into one ``.npy`` (fp32 or fp16) and read back
in bounded pieces, so that neither writing nor searching a corpus holds it in memory."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

DTYPES = {"fp32": np.float32, "fp16": np.float16}
READ_ROWS = 65536  # rows per mapped read: bounds the resident pages one lookup can touch


def write_rows(path: str | Path, pieces: Iterable[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int],
               dtype: Any = np.float32) -> Path:
    """Write an (n, dim) ``.npy`` from (row indices, rows) pieces, through a temporary file that is
    renamed at the end: a reader never sees a half-written matrix. Each piece is written and
    unmapped before the next is read, so memory stays bounded by a piece."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape).flush()
    for idx, rows in pieces:
        out = np.load(tmp, mmap_mode="r+")
        out[np.asarray(idx)] = rows
        out.flush()
        del out  # unmapped: its pages leave this process's resident memory
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


class EmbeddingMatrix:
    """A read-only (n, dim) matrix in a ``.npy`` file. Slicing and fancy indexing return float32
    arrays; each read maps the file afresh and unmaps it after, so resident memory is bounded by
    the rows asked for (``READ_ROWS`` at a time), never by the corpus."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        m = np.load(self.path, mmap_mode="r")
        self.shape: tuple[int, int] = tuple(m.shape)  # type: ignore[assignment]
        self.dtype = m.dtype
        del m

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def _map(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a new float32 array."""
        m = self._map()
        out = np.array(m[start:stop], dtype=np.float32)
        del m
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            return self.rows(start, stop)[::step] if step != 1 else self.rows(start, stop)
        idx = np.asarray(key)
        if idx.ndim == 0:
            return self.rows(int(idx), int(idx) + 1)[0]
        out = np.empty((*idx.shape, self.shape[1]), dtype=np.float32)
        flat, dest = idx.reshape(-1), out.reshape(-1, self.shape[1])
        for s in range(0, flat.size, READ_ROWS):
            m = self._map()
            dest[s:s + READ_ROWS] = m[flat[s:s + READ_ROWS]]
            del m
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.rows(0, self.shape[0])
        return a if dtype is None else a.astype(dtype, copy=False)

    def chunks(self, size: int) -> Iterable[tuple[int, np.ndarray]]:
        """(start, float32 rows) pieces of at most ``size`` rows, in order."""
        for s in range(0, self.shape[0], size):
            yield s, self.rows(s, min(s + size, self.shape[0]))
