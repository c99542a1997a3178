"""Atomic file writes and content checksums: nothing is ever half written."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def _new_temp(path: Path) -> Path:
    """Create an empty, uniquely named file next to ``path`` with the user's normal mode (0666 less
    the umask, as ``open`` gives): ``tempfile.mkstemp`` makes it 0600, and the rename would publish
    a file nobody else can read."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.
    The published file has the mode any new file of the user's gets (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

    return atomic_write(path, _write)


def write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    return atomic_write(path, _write)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_texts(*parts: object) -> str:
    """Stable hash of a sequence of values (strings, numbers, lists of strings)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, (list, tuple, np.ndarray)):
            for item in part:
                b = str(item).encode("utf-8")
                h.update(len(b).to_bytes(8, "little"))
                h.update(b)
        else:
            b = str(part).encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        h.update(b"\x00|")
    return h.hexdigest()


def hash64(text: str) -> int:
    """A stable 64-bit hash of ``text`` (blake2b, 8 bytes, little-endian): the same on every
    machine and Python process, unlike ``hash()``. Seeds, sampling keys and near-duplicate sketches."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def hashes64(texts: Iterable[str], count: int = -1) -> np.ndarray:
    """:func:`hash64` of each text, as a uint64 array (``count``: how many, when known)."""
    return np.fromiter((hash64(t) for t in texts), dtype=np.uint64, count=count)


def publish_dir(staging: Path, final: Path, overwrite: bool) -> None:
    """Move a fully written staging folder into place; an old folder is replaced only when allowed."""
    if final.exists():
        if not overwrite:
            raise FileExistsError(final)
        trash = final.with_name(f".{final.name}.old")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash)
    else:
        os.replace(staging, final)


def fsync_files(folder: Path) -> None:
    """Flush every file under ``folder`` to disk (before a rename publishes the folder)."""
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


@contextmanager
def staged_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A fresh staging folder ``.NAME.partial`` next to ``final`` to write into; when the block
    ends without error its files are flushed and the folder replaces ``final`` in one rename
    (:func:`publish_dir`), else it is removed. A reader never sees a half-written folder.

    Example::

        with staged_dir("out/model", overwrite=True) as tmp:
            (tmp / "weights.bin").write_bytes(data)
    """
    final = Path(final)
    staging = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        fsync_files(staging)
        publish_dir(staging, final, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
