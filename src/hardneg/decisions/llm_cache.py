"""Where an LLM judge's answers are kept: a persistent SQLite cache of P(yes) per prompt, in a file
named by the judge's identity: a hash of everything that decides its answers (the endpoint without
credentials, the model the server reports, the API, the prompt template; for a GGUF file its content
hash). Credentials never reach an identity, a log or the manifest."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from ..runs.fingerprint import file_fingerprint


def split_credentials(url: str) -> tuple[str, str | None]:
    """``http://user:pass@host/v1`` -> (``http://host/v1``, ``user:pass``): the URL that may be shown,
    logged and used as a cache key, and the credentials that may not."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), urllib.parse.unquote(userinfo)


def answer_identity(**parts: Any) -> str:
    """The cache identity of a judge: a hash of everything that decides its answers."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def http_identity(endpoint: str, model: str, api: str, prompt: str) -> str:
    """An HTTP judge's identity: the endpoint without credentials, the model the server reports, the API
    and the prompt template (never an API key)."""
    return answer_identity(backend="http", endpoint=split_credentials(endpoint)[0].rstrip("/"), model=model,
                           api=api, prompt=prompt)


def gguf_identity(path: str | Path, prompt: str, memo_dir: str | Path | None = None) -> str:
    """A local model's identity: the file's content hash (memoised by path, size and mtime) and the
    prompt template. Two files with one name differ; one file moved elsewhere stays the same."""
    return answer_identity(backend="gguf", sha256=file_fingerprint(path, memo_dir), prompt=prompt)


class AnswerCache:
    """(key -> probability) in SQLite; safe across threads and reruns."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, p REAL NOT NULL)")
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        with self._lock:
            for s in range(0, len(keys), 500):
                chunk = keys[s:s + 500]
                rows = self._db.execute(f"SELECT key, p FROM answers WHERE key IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall()
                out.update(dict(rows))
        return out

    def put(self, key: str, p: float) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, p))
