"""The run folder: candidates.parquet, negatives.parquet and manifest.json, published atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..collection import Collection, load
from ..errors import RunError
from .files import staged_dir, write_json
from .fingerprint import env_cache_dir
from .snapshot import read_snapshot, write_snapshot

FILES = ("candidates.parquet", "negatives.parquet", "manifest.json")


class Run:
    """The result of one mining (not an IR "run", which is a ranking): ``negatives`` (one row per
    query: its positives and the negatives chosen for it), ``candidates`` (one row per considered
    document, with per-teacher scores and the reason it was kept or dropped) and ``manifest``
    (settings, fingerprints, counts). On disk it is a folder with those three files; the texts and
    qrels it was mined from are kept in the cache under their fingerprint (:mod:`.snapshot`).

    Example::

        run = hardneg.Run.load("runs/scifact")
        run.negatives.num_rows, run.collection().num_docs
    """

    def __init__(self, negatives: pa.Table, candidates: pa.Table, manifest: dict[str, Any],
                 path: Path | None = None, collection: Collection | None = None):
        self.negatives, self.candidates, self.manifest = negatives, candidates, manifest
        self.path = path
        self._collection = collection

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """Read a finished run folder (its collection is read, and checked, when first needed)."""
        p = Path(path)
        if not p.is_dir():
            raise RunError(f"{p}: run folder not found")
        missing = [f for f in FILES if not (p / f).exists()]
        if missing:
            raise RunError(f"{p}: not a finished run (missing {', '.join(missing)})")
        manifest = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
        return cls(pq.read_table(p / "negatives.parquet"), pq.read_table(p / "candidates.parquet"), manifest, p)

    def save(self, out: str | Path, overwrite: bool = False, cache_dir: str | Path | None = None) -> Path:
        """Write the three files into a staging folder, then move it into place in one rename. The
        collection it was mined from is kept in the cache (``cache_dir``, else the one in the
        manifest's config), content-addressed, and named in ``manifest["data"]["snapshot"]``."""
        out = Path(out)
        if self._collection is not None:
            cache = env_cache_dir(cache_dir or self.manifest.get("config", {}).get("cache_dir"))
            self.manifest["data"]["snapshot"] = write_snapshot(self._collection, cache)
        try:
            with staged_dir(out, overwrite) as staging:
                pq.write_table(self.candidates, staging / "candidates.parquet", compression="zstd")
                pq.write_table(self.negatives, staging / "negatives.parquet", compression="zstd")
                write_json(staging / "manifest.json", self.manifest)
        except FileExistsError:
            raise RunError(f"{out}: a different run is already there (use --overwrite to replace it)") from None
        self.path = out
        return out

    def collection(self) -> Collection:
        """The collection this run was mined from: its snapshot in the cache, checked against the
        manifest's fingerprints. Runs saved before snapshots existed reload the dataset path
        recorded in the manifest."""
        if self._collection is None:
            if "snapshot" in self.manifest["data"]:
                self._collection = read_snapshot(self.manifest["data"])
            else:
                self._collection = self._reload()
        return self._collection

    def _reload(self) -> Collection:
        """The collection reloaded from the dataset path in the manifest (runs without a snapshot)."""
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
        return col

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
