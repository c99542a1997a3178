"""Dense bi-encoder teacher: any sentence-transformers model, embeddings cached by fingerprint."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ...collection import Collection
from ...errors import HardnegWarning
from ...progress import SILENT, Reporter
from ...runs.cache import Cache
from ...runs.files import sha256_texts
from ...runs.fingerprint import folder_fingerprint, read_st_config, resolve_model, settings_key
from ...runs.store import DTYPES, EmbeddingMatrix
from ..encoders import load_encoder, resolve_encoder
from ..search import (
    POOL_PAD,
    BlockTopk,
    exact_rerank,
    faiss_pool,
    knn_block_topk,
    pair_dot,
    recall_at,
)
from .base import Teacher

SEARCH_KINDS = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf", "faiss-ivfsq", "faiss-ivfpq")
ANN_RECALL_WARN = 0.9  # recall@k against exact search below which a run warns
_LOADED: dict[tuple[Any, ...], Any] = {}  # the last model loaded in this process, for reuse


class DenseTeacher(Teacher):
    """Scores are dot products of the model's embeddings (cosine when the model normalises).

    The embedding cache key covers the model folder's files (weights, tokenizer, pooling,
    normalisation), the prompt, max length, normalisation and the texts: a new threshold reuses
    embeddings, a new model or prompt never does. The model itself is loaded only to encode."""

    def __init__(self, model: str | None = None, query_prompt: str | None = None,
                 doc_prompt: str | None = None, max_length: int | None = None,
                 normalize: bool | None = None, batch_size: int = 32, search: str = "exact",
                 device: str | None = None, name: str = "dense", seed: int = 0, encoder: str = "auto",
                 embedding_dtype: str = "fp32"):
        if search not in SEARCH_KINDS:
            raise ValueError(f"unknown search '{search}' (choose from {', '.join(SEARCH_KINDS)})")
        self.model_spec, self.query_prompt, self.doc_prompt = model, query_prompt, doc_prompt
        self.max_length, self.normalize, self.batch_size = max_length, normalize, batch_size
        self.search_kind, self.device, self.name, self.seed = search, device, name, seed
        self.encoder_spec = encoder
        self.encoder = resolve_encoder(encoder, device)  # refined by resolve(), which knows the model folder
        if embedding_dtype not in DTYPES:
            raise ValueError(f"unknown embedding dtype '{embedding_dtype}' (use {', '.join(DTYPES)})")
        self.embedding_dtype = embedding_dtype
        self.doc_chunk, self.query_chunk = 32768, 4096
        self.shard_encoder: Any = None  # set by the Ray backend: encodes many shards at once
        self._model: Any = None
        self._fp: str | None = None
        self.ann_recall: float | None = None

    # ------------------------------------------------------------------ identity
    def resolve(self, cache: Cache) -> None:
        """Find the model folder and settings, and fingerprint them, without loading the model."""
        if self._fp is not None:
            return
        self.model_path = resolve_model(self.model_spec)
        cfg = read_st_config(self.model_path)
        prompts = cfg["prompts"]
        if self.query_prompt is None:
            self.query_prompt = prompts.get("query", "")
        if self.doc_prompt is None:
            self.doc_prompt = prompts.get("document", prompts.get("passage", prompts.get("corpus", "")))
        if self.max_length is None:
            self.max_length = cfg["max_seq_length"]
        if self.normalize is None:
            self.normalize = bool(cfg["normalize_module"]) or cfg["similarity_fn_name"] in (None, "cosine")
        self.encoder = resolve_encoder(self.encoder_spec, self.device, self.model_path)
        self.model_fingerprint = folder_fingerprint(self.model_path, cache.root)
        # What an embedding depends on besides its text and prompt.
        self._encoder_fp = settings_key("dense", self.model_fingerprint, self.max_length, self.normalize,
                                        *([self.encoder] if self.encoder != "torch" else []),
                                        *([self.embedding_dtype] if self.embedding_dtype != "fp32" else []))
        self._export_dir = cache.root / "onnx" / self.model_fingerprint
        self._fp = settings_key(self._encoder_fp, self.query_prompt, self.doc_prompt)

    def fingerprint(self) -> str:
        if self._fp is None:
            raise RuntimeError("prepare() the teacher first")
        return self._fp

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model_spec or "default", "model_path": self.model_path,
                "model_fingerprint": self.model_fingerprint, "max_length": self.max_length,
                "normalize": self.normalize, "encoder": self.encoder, "embedding_dtype": self.embedding_dtype,
                "query_prompt": self.query_prompt,
                "doc_prompt": self.doc_prompt, "search": self.search_kind, "ann_recall": self.ann_recall}

    # ------------------------------------------------------------------ encoding
    def _load(self) -> Any:
        if self._model is None:
            key = (self.model_fingerprint, self.device, self.encoder, self.max_length, self.batch_size)
            if key not in _LOADED:
                _LOADED.clear()  # keep one model in memory
                _LOADED[key] = load_encoder(self.encoder, self.model_path, device=self.device,
                                            max_length=self.max_length, normalize=bool(self.normalize),
                                            batch_size=self.batch_size, export_dir=self._export_dir)
            self._model = _LOADED[key]
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}  # workers (Ray) load their own model

    def _encoder(self, prompt: str) -> Any:
        return lambda texts: self._load().encode(texts, prompt or "")

    def embed(self, texts: list[str], prompt: str, cache: Cache, what: str,
              reporter: Reporter = SILENT) -> EmbeddingMatrix:
        key = settings_key(self._encoder_fp, what, prompt, len(texts), sha256_texts(texts))
        meta = {"model": self.model_spec, "model_path": str(self.model_path), "prompt": prompt,
                "max_length": self.max_length, "normalize": self.normalize, "count": len(texts)}
        cached = cache.has_embeddings(key)
        with reporter.task(f"encode {what}{' (cached)' if cached else ''}", len(texts)) as adv:
            return cache.embeddings(key, texts, self._encoder(prompt), shard_size=max(self.batch_size * 32, 256),
                                    on_progress=adv, meta=meta, dtype=self.embedding_dtype,
                                    encode_shards=self.shard_encoder(prompt) if self.shard_encoder else None)

    def prepare(self, collection: Collection, query_idx: np.ndarray, cache: Cache,
                reporter: Reporter = SILENT) -> None:
        self.resolve(cache)
        self._docs = self.embed(collection.doc_texts, self.doc_prompt or "", cache, "documents", reporter)
        texts = [collection.query_texts[i] for i in query_idx]
        q = self.embed(texts, self.query_prompt or "", cache, "queries", reporter)
        # Only the queries asked for are encoded; map collection indices to rows.
        self._qrow = np.full(len(collection.query_texts), -1, dtype=np.int64)
        self._qrow[query_idx] = np.arange(len(query_idx))
        self._queries = np.asarray(q, dtype=np.float32)
        self._fp = settings_key(self._fp, collection.corpus_fingerprint())

    def doc_vectors(self) -> EmbeddingMatrix:
        """The corpus embeddings from prepare(), on disk (index it for float32 rows)."""
        return self._docs

    # ------------------------------------------------------------------ scoring
    def _num_docs(self) -> int:
        return int(self._docs.shape[0])

    def pair_scores(self, query_idx: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
        rows = self._qrow[query_idx]
        if np.any(rows < 0):
            raise KeyError("pair_scores() got a query that prepare() did not encode")
        return pair_dot(self._queries, self._docs, rows, doc_idx)

    def search(self, query_idx: np.ndarray, k: int, reporter: Reporter = SILENT,
               ) -> tuple[np.ndarray, np.ndarray]:
        if self.search_kind == "exact":  # corpus-chunked: faiss's exact knn per chunk, running top-k, rerank
            return super().search(query_idx, k, reporter)
        return self._search_faiss(query_idx, k, reporter)

    def _block_topk(self, query_idx: np.ndarray) -> BlockTopk:
        return knn_block_topk(self._queries[self._qrow[query_idx]], self._docs)

    def _search_faiss(self, query_idx: np.ndarray, k: int, reporter: Reporter) -> tuple[np.ndarray, np.ndarray]:
        kind = self.search_kind.split("-", 1)[1]
        n = self._num_docs()
        # Compressed codes misorder near neighbours: fetch a wider pool and let the exact rerank order it.
        pool_k = 4 * k + POOL_PAD if kind in ("ivfpq", "ivfsq") else k + POOL_PAD
        with reporter.task(f"search ({self.name}, faiss {kind})", 1) as adv:
            pool_i, pool_s = faiss_pool(self._docs, self._queries[self._qrow[query_idx]], pool_k, kind, self.seed)
            adv(1)
        ids, scores, self.exhaustive_queries = exact_rerank(
            pool_i, pool_s, k, lambda rows, d: self.pair_scores(query_idx[rows], d), n, verify=kind == "flat")
        if kind != "flat":
            self.ann_recall = self._measure_recall(query_idx, ids, k)
            if self.ann_recall < ANN_RECALL_WARN:
                warnings.warn(f"faiss {kind} found {self.ann_recall:.1%} of the exact top-{k} on a sample of "
                              f"queries (below {ANN_RECALL_WARN:.0%}); use --search exact or a larger index",
                              HardnegWarning, stacklevel=2)
        return ids, scores

    def _measure_recall(self, query_idx: np.ndarray, ann_ids: np.ndarray, k: int, sample: int = 200) -> float:
        """Recall@k of the ANN result against exact search on a seeded sample of queries."""
        rng = np.random.default_rng(self.seed)
        pick = np.sort(rng.choice(len(query_idx), size=min(sample, len(query_idx)), replace=False))
        exact_ids, _ = super().search(query_idx[pick], k, SILENT)
        return recall_at(ann_ids[pick], exact_ids)
