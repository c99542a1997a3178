"""The run folder: candidates.parquet, negatives.parquet and manifest.json, published atomically."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..collection import Collection, load
from ..errors import RunError
from .files import publish_dir, write_json

FILES = ("candidates.parquet", "negatives.parquet", "manifest.json")


class Run:
    """A mining result: ``negatives`` (one row per query), ``candidates`` (one row per considered
    document, with per-teacher scores and the reason it was kept or dropped) and ``manifest``."""

    def __init__(self, negatives: pa.Table, candidates: pa.Table, manifest: dict[str, Any],
                 path: Path | None = None, collection: Collection | None = None):
        self.negatives, self.candidates, self.manifest = negatives, candidates, manifest
        self.path = path
        self._collection = collection

    @classmethod
    def load(cls, path: str | Path) -> Run:
        p = Path(path)
        if not p.is_dir():
            raise RunError(f"{p}: run folder not found")
        missing = [f for f in FILES if not (p / f).exists()]
        if missing:
            raise RunError(f"{p}: not a finished run (missing {', '.join(missing)})")
        manifest = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
        return cls(pq.read_table(p / "negatives.parquet"), pq.read_table(p / "candidates.parquet"), manifest, p)

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write the three files into a staging folder, then move it into place in one rename."""
        out = Path(out)
        staging = out.with_name(f".{out.name}.partial")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        pq.write_table(self.candidates, staging / "candidates.parquet", compression="zstd")
        pq.write_table(self.negatives, staging / "negatives.parquet", compression="zstd")
        write_json(staging / "manifest.json", self.manifest)
        for f in FILES:
            with open(staging / f, "rb") as fh:
                os.fsync(fh.fileno())
        try:
            publish_dir(staging, out, overwrite)
        except FileExistsError:
            shutil.rmtree(staging)
            raise RunError(f"{out}: a different run is already there (use --overwrite to replace it)") from None
        self.path = out
        return out

    def collection(self) -> Collection:
        """The collection this run was mined from, reloaded from the manifest and checked."""
        if self._collection is None:
            cfg = self.manifest["config"]
            col = load(cfg["dataset"], cfg["split"], cfg.get("corpus"), cfg.get("query_column"),
                       cfg.get("positive_column"), strict=cfg.get("strict", False))
            want = self.manifest["data"].get("checksums")
            if want and col.source.get("checksums") != want:
                raise RunError(f"{cfg['dataset']}: the data changed since this run was mined (checksums differ)")
            if self.manifest["data"].get("slice"):
                col = col.slice(**self.manifest["data"]["slice"])
            if self.manifest["data"].get("holdout"):
                col = col.holdout(**self.manifest["data"]["holdout"])
            if col.corpus_fingerprint() != self.manifest["data"]["corpus_fingerprint"]:
                raise RunError(f"{cfg['dataset']}: the corpus differs from the one this run was mined on")
            self._collection = col
        return self._collection

    @property
    def coverage(self) -> float:
        return float(self.manifest["counts"]["coverage"])


def existing_run(out: Path, fingerprint: str) -> Run | None:
    """A finished run at ``out`` made with the same settings and data, else None.
    Raises if a finished run with other settings is there (the caller decides on overwrite)."""
    if not (out / "manifest.json").exists():
        return None
    run = Run.load(out)
    if run.manifest.get("config_fingerprint") == fingerprint:
        return run
    return None
