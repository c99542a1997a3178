"""Embedding matrices on disk: written shard by shard into one ``.npy`` (fp32 or fp16) and read back
in bounded pieces, so that neither writing nor searching a corpus holds it in memory."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

DTYPES = {"fp32": np.float32, "fp16": np.float16}


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
    arrays. A contiguous read maps the file afresh and unmaps it after; a scattered read uses pread.
    Resident memory is therefore bounded by the rows asked for, never by the corpus."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            self._offset = fh.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{self.path}: expected a C-ordered 2-d matrix, got shape {shape}")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)

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
        return self._scattered(idx.reshape(-1)).reshape(*idx.shape, self.shape[1])

    def _scattered(self, flat: np.ndarray) -> np.ndarray:
        """Rows at arbitrary indices, read with pread in runs of consecutive rows. Not mapped: a
        scattered read through a memory map pulls whole page-cache folios into the process (a
        1,024-row read of a 768 MB file mapped 600 MB), which is what bounded memory rules out."""
        out = np.empty((flat.size, self.shape[1]), dtype=np.float32)
        if flat.size == 0:
            return out
        if flat.min() < 0 or flat.max() >= self.shape[0]:
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        order = np.argsort(flat, kind="stable")
        rows = flat[order]
        row_bytes = self.shape[1] * self.dtype.itemsize
        starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)
        lengths = np.diff(np.append(starts, rows.size))
        with open(self.path, "rb", buffering=0) as fh:
            fd = fh.fileno()
            for s, n in zip(starts.tolist(), lengths.tolist()):
                raw = os.pread(fd, n * row_bytes, self._offset + int(rows[s]) * row_bytes)
                out[order[s:s + n]] = np.frombuffer(raw, dtype=self.dtype).reshape(n, self.shape[1])
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.rows(0, self.shape[0])
        return a if dtype is None else a.astype(dtype, copy=False)
