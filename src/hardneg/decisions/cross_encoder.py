"""Cross-encoder judge: train one on labelled pairs plus mined negatives, calibrate it on held-out
queries, and use it to rescore the top of a candidate pool (RocketQA-style denoising).

No reranker ships offline, so the default starts from the packaged MiniLM backbone with a fresh
one-logit head; untrained scores would be meaningless. Calibration is Platt scaling on dev pairs:
``p = sigmoid(a * logit + b)``, so a threshold on ``p`` means the same thing for every judge."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..collection import Collection
from ..errors import ConfigError, RunError
from ..runs.files import staged_dir, write_json
from ..runs.fingerprint import resolve_model
from ..runs.run import Run

MANIFEST = "hardneg_judge.json"


def _pairs(col: Collection, run: Run) -> tuple[list[list[str]], np.ndarray]:
    """(query, document) texts and 1/0 labels: every positive of ``col`` and every mined negative
    of its queries."""
    import pyarrow.compute as pc

    pos = col.positives()
    neg = run.negatives.filter(pc.is_in(run.negatives.column("query_id"),
                                        value_set=pa.array(col.query_ids[col.judged_queries()].tolist())))
    lists = neg.column("negative_ids").combine_chunks()
    nq = col.query_index(neg.column("query_id").to_pylist())[pc.list_parent_indices(lists).to_numpy()]
    nd = col.doc_index(pc.list_flatten(lists).to_pylist())
    q = np.concatenate([pos.query_idx, nq]).astype(np.int64)
    d = np.concatenate([pos.doc_idx, nd]).astype(np.int64)
    texts = [[col.query_texts[a], col.doc_texts[b]] for a, b in zip(q, d)]
    return texts, np.r_[np.ones(len(pos)), np.zeros(nd.size)]


def platt(logits: np.ndarray, labels: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """Fit ``sigmoid(a * x + b)`` to 0/1 labels by Newton's method (Platt scaling)."""
    a, b = 1.0, 0.0
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        g = np.array([((p - y) * x).sum(), (p - y).sum()])
        w = p * (1 - p) + 1e-9
        h = np.array([[(w * x * x).sum(), (w * x).sum()], [(w * x).sum(), w.sum()]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), float(b)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half)."""
    from scipy.stats import rankdata

    pos = labels > 0
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def train_judge(run: str | Path | Run, out: str | Path, model: str | None = None, dev_queries: int = 50,
                seed: int = 0, epochs: float = 1.0, max_steps: int = -1, batch_size: int = 16,
                learning_rate: float = 2e-5, max_length: int = 256, overwrite: bool = False,
                progress: bool = True) -> Path:
    """Train a cross-encoder on a run's positives and negatives, holding out ``dev_queries`` queries
    for calibration, and save a CrossEncoder folder plus ``hardneg_judge.json`` (calibration, dev AUC).

    Args:
        run: a run folder from ``hardneg mine``, or a loaded :class:`Run`; its collection snapshot
            gives the texts and the labelled pairs.
        out: folder for the judge. The other arguments are the training's settings.

    Example::

        train_judge("runs/scifact", "judges/ce", dev_queries=50, epochs=1)
    """
    import datasets
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    out = Path(out)
    if (out / MANIFEST).exists() and not overwrite:
        raise RunError(f"{out}: a judge is already there (use --overwrite)")
    run = run if isinstance(run, Run) else Run.load(run)
    col = run.collection()
    fit, dev = col.holdout(dev_queries, seed, "fit"), col.holdout(dev_queries, seed, "dev")
    train_texts, train_labels = _pairs(fit, run)
    dev_texts, dev_labels = _pairs(dev, run)
    t0 = time.perf_counter()
    base = resolve_model(model)
    ce = CrossEncoder(base, num_labels=1, max_length=max_length)
    with staged_dir(out, overwrite=True) as staging:
        args = CrossEncoderTrainingArguments(
            output_dir=str(staging / "_trainer"), num_train_epochs=epochs, max_steps=max_steps,
            per_device_train_batch_size=batch_size, learning_rate=learning_rate, warmup_steps=0.1, seed=seed,
            data_seed=seed, save_strategy="no", report_to="none", logging_steps=10, disable_tqdm=not progress)
        ds = datasets.Dataset.from_dict({"query": [t[0] for t in train_texts], "document": [t[1] for t in train_texts],
                                         "label": train_labels.astype(np.float32)})
        pos_weight = float((train_labels == 0).sum() / max((train_labels == 1).sum(), 1))
        import torch

        loss = BinaryCrossEntropyLoss(ce, pos_weight=torch.tensor(pos_weight))
        result = CrossEncoderTrainer(model=ce, args=args, train_dataset=ds, loss=loss).train()
        shutil.rmtree(staging / "_trainer", ignore_errors=True)
        logits = np.asarray(ce.predict(dev_texts, batch_size=32, activation_fn=torch.nn.Identity(),
                                       show_progress_bar=progress), dtype=np.float64)
        a, b = platt(logits, dev_labels)
        ce.save(str(staging))
        write_json(staging / MANIFEST, {
            "kind": "cross-encoder", "base_model": base, "run": str(run.path) if run.path else None,
            "run_fingerprint": run.manifest["config_fingerprint"], "dev_queries": dev_queries, "seed": seed,
            "train_pairs": int(train_labels.size), "train_positives": int(train_labels.sum()),
            "dev_pairs": int(dev_labels.size), "dev_auc": round(auc(logits, dev_labels), 6),
            "calibration": {"a": a, "b": b, "method": "Platt scaling on dev pairs"},
            "steps": int(result.global_step), "train_loss": float(result.training_loss),
            "max_length": max_length, "seconds": round(time.perf_counter() - t0, 1),
        })
    return out


class CrossEncoderJudge:
    """A trained judge folder: calibrated relevance probabilities for (query, document) pairs."""

    def __init__(self, path: str | Path, batch_size: int = 32, device: str | None = None):
        self.path = Path(path)
        meta = self.path / MANIFEST
        if not meta.exists():
            raise ConfigError(f"{self.path}: not a hardneg judge folder (no {MANIFEST}; train one with "
                              "`hardneg train-judge`)")
        try:
            self.meta = json.loads(meta.read_text(encoding="utf-8"))
            c = self.meta["calibration"]
            float(c["a"]), float(c["b"])
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{meta}: not a readable judge manifest ({type(exc).__name__}: {exc}); train the "
                              "judge again with `hardneg train-judge`") from None
        self.batch_size, self.device = batch_size, device
        self._model: Any = None

    def check(self) -> None:
        """Load the model and score one pair, so that a broken judge folder (missing or corrupt weights,
        a tokenizer that does not load) fails before any mining work, naming the folder."""
        try:
            p = self.probabilities(["what is water"], ["Water is a liquid."])
        except Exception as exc:  # noqa: BLE001 - transformers, tokenizers and safetensors raise many types
            raise ConfigError(f"{self.path}: the cross-encoder judge does not load or score "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
        if not np.isfinite(p).all():
            raise ConfigError(f"{self.path}: the cross-encoder judge scores NaN")

    def describe(self) -> dict[str, Any]:
        return {"kind": "cross-encoder", "path": str(self.path), "dev_auc": self.meta.get("dev_auc"),
                "calibration": self.meta["calibration"]}

    def probabilities(self, queries: list[str], docs: list[str], progress: bool = False) -> np.ndarray:
        """Calibrated P(relevant) for each (query, doc) pair, in batches."""
        import torch
        from sentence_transformers.cross_encoder import CrossEncoder

        if not queries:
            return np.empty(0)
        if self._model is None:
            self._model = CrossEncoder(str(self.path), device=self.device)
        logits = np.asarray(self._model.predict(list(zip(queries, docs)), batch_size=self.batch_size,
                                                activation_fn=torch.nn.Identity(), show_progress_bar=progress),
                            dtype=np.float64)
        c = self.meta["calibration"]
        return 1.0 / (1.0 + np.exp(-(c["a"] * logits + c["b"])))
