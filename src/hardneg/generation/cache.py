"""Where generated texts are kept: a persistent SQLite cache of completions, one file per generator
identity (endpoint without credentials + served model + API, or a GGUF file's sha256), one row per
request keyed by a hash of the rendered prompt (template, examples and document), the sampling
settings and the seed. A killed run finds its finished completions here and asks only for the rest;
bad completions are kept too, so a rerun does not ask their attempts again."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .completion import Completion


def request_key(prompt: str, sampling: dict[str, Any], seed: int) -> str:
    """The cache key of one request: everything besides the generator that decides its completion."""
    blob = json.dumps({"prompt": prompt, "sampling": sampling, "seed": seed}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class CompletionCache:
    """(request key -> :class:`Completion`) in SQLite; safe across threads and reruns."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                         "finish TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)")
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        out: dict[str, Completion] = {}
        with self._lock:
            for s in range(0, len(keys), 500):
                chunk = keys[s:s + 500]
                rows = self._db.execute("SELECT key, text, finish, prompt_tokens, completion_tokens FROM completions "
                                        f"WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                out.update({r[0]: Completion(r[1], r[2], int(r[3]), int(r[4])) for r in rows})
        return out

    def put(self, key: str, c: Completion) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?)",
                             (key, c.text, c.finish, c.prompt_tokens, c.completion_tokens))
