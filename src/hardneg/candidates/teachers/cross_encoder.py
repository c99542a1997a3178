"""A cross-encoder as a scoring-only teacher: GPL's pseudo-labels (Wang et al., "GPL: Generative Pseudo
Labeling for Unsupervised Domain Adaptation of Dense Retrieval", NAACL 2022, arXiv:2112.07577).

GPL writes queries for an unlabelled corpus, mines negatives for them with a retriever, lets a
cross-encoder score every (query, positive) and (query, negative) pair, and trains the bi-encoder with
MarginMSE on the cross-encoder's margins. With ``--score-with cross-encoder:MODEL`` a run's candidates,
positives and negatives get the cross-encoder's scores (``score_<name>``, ``positive_scores_<name>``,
``negative_scores_<name>``, name ``cross-encoder_<model folder name>``), which ``hardneg train --loss
margin-mse --teacher-scores <name>`` (or ``kl``) reads as soft labels.

MODEL is any sentence-transformers ``CrossEncoder`` with one output: a folder (a hardneg judge from
``hardneg train-judge`` is one) or a hub id. Scores are its raw logits (``predict`` with an identity
activation, as GPL's labels; a judge's calibration is not applied). It only scores: it never searches
or filters. Each distinct (query, document) pair is scored once per run (the negatives are candidates
too), and the scores of each call are cached under the model folder's fingerprint and the pairs'
texts, so a rerun scores nothing again. Cost: one forward pass per candidate; lower ``--depth`` to
score fewer.

Example::

    hardneg mine --dataset data/scifact-gen --teacher bm25 --score-with cross-encoder:judges/ce --out runs/gpl
    hardneg train --run runs/gpl --loss margin-mse --teacher-scores cross-encoder_ce --out models/gpl
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...collection import Collection
from ...errors import ConfigError
from ...progress import SILENT, Reporter
from ...runs.cache import Cache
from ...runs.files import sha256_texts
from ...runs.fingerprint import folder_fingerprint, resolve_model, settings_key
from .base import Teacher

KIND = "cross-encoder"


class CrossEncoderTeacher(Teacher):
    """Raw cross-encoder logits for (query, document) pairs of one collection; scoring only.

    Args:
        model: a CrossEncoder folder or hub id (one output).
        batch_size: pairs per forward pass.
        device: torch device (default: the model's choice).
        name: the teacher's name in the run's columns.

    Example::

        teacher = CrossEncoderTeacher("judges/ce", name="cross-encoder_ce")
        teacher.check()
        teacher.prepare(collection, collection.judged_queries(), Cache("~/.cache/hardneg"))
        scores = teacher.pair_scores(np.array([0, 0]), np.array([3, 7]))
    """

    def __init__(self, model: str, batch_size: int = 32, device: str | None = None, name: str = KIND):
        self.model, self.batch_size, self.device, self.name = model, batch_size, device, name
        self.path: str | None = None
        self._fp: str | None = None
        self._ce: Any = None
        self._col: Collection | None = None
        self._cache: Cache | None = None
        self._reporter: Reporter = SILENT
        self._codes = np.zeros(0, dtype=np.int64)  # pairs scored in this run (q * num_docs + d), sorted
        self._scores = np.zeros(0, dtype=np.float64)

    def check(self, cache_root: str | None = None) -> None:
        """Find the model, hash its folder and score one pair, so that a missing or broken model stops the
        run before any mining, naming it."""
        if self._fp is not None:
            return
        self.path = resolve_model(self.model)
        try:
            from sentence_transformers.cross_encoder import CrossEncoder

            self._ce = CrossEncoder(self.path, device=self.device)
            if self._ce.num_labels != 1:
                raise ValueError(f"it has {self._ce.num_labels} outputs, not one score")
            probe = self._predict(["what is water"], ["Water is a liquid."])
        except Exception as exc:  # noqa: BLE001 - transformers, tokenizers and safetensors raise many types
            raise ConfigError(f"score_with: cross-encoder '{self.model}' does not load or score "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
        if not np.isfinite(probe).all():
            raise ConfigError(f"score_with: cross-encoder '{self.model}' scores NaN")
        self._fp = folder_fingerprint(self.path, cache_root)

    def _predict(self, queries: list[str], docs: list[str], progress: bool = False) -> np.ndarray:
        import torch

        return np.asarray(self._ce.predict(list(zip(queries, docs)), batch_size=self.batch_size,
                                           activation_fn=torch.nn.Identity(), show_progress_bar=progress),
                          dtype=np.float64).reshape(-1)

    def prepare(self, collection: Collection, query_idx: np.ndarray, cache: Cache,
                reporter: Reporter = SILENT) -> None:
        self.check(str(cache.root))
        self._col, self._cache, self._reporter = collection, cache, reporter

    def fingerprint(self) -> str:
        if self._fp is None:
            raise ConfigError(f"cross-encoder '{self.model}': not checked yet")
        return settings_key(KIND, self._fp, "identity activation")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model, "path": self.path, "scores": "raw logits"}

    def pair_scores(self, query_idx: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
        """The cross-encoder's logits of these pairs: each distinct pair scored once per run, and each
        call's answer cached by the model's fingerprint and the pairs' texts."""
        col, cache = self._col, self._cache
        if col is None or cache is None:
            raise ConfigError(f"cross-encoder '{self.model}': prepare() it before scoring")
        q = np.asarray(query_idx, dtype=np.int64)
        d = np.asarray(doc_idx, dtype=np.int64)
        if q.size == 0:
            return np.zeros(0, dtype=np.float64)
        queries = [col.query_texts[i] for i in q.tolist()]
        docs = [col.doc_texts[i] for i in d.tolist()]
        key = settings_key(KIND, self.fingerprint(), sha256_texts(queries, docs))
        hit = cache.load_arrays("cross-encoder-scores", key)
        if hit is not None:
            return hit["score"]
        codes = q * col.num_docs + d
        new = np.setdiff1d(codes, self._codes)  # sorted, distinct: the pairs not scored yet in this run
        if new.size:
            nq, nd = np.divmod(new, col.num_docs)
            scores = self._predict([col.query_texts[i] for i in nq.tolist()], [col.doc_texts[i] for i in nd.tolist()],
                                   self._reporter.enabled)
            codes_all = np.concatenate([self._codes, new])
            order = np.argsort(codes_all, kind="stable")
            self._codes, self._scores = codes_all[order], np.concatenate([self._scores, scores])[order]
        out = self._scores[np.searchsorted(self._codes, codes)]
        cache.save_arrays("cross-encoder-scores", key, score=out)
        return out

    def search(self, query_idx: np.ndarray, k: int, reporter: Reporter = SILENT) -> tuple[np.ndarray, np.ndarray]:
        raise ConfigError("a cross-encoder only scores (--score-with cross-encoder:MODEL); it cannot search")
