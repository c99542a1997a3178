"""Negatives refreshed by the student (``--remine-every N``): every N optimiser steps the corpus is
re-encoded with the model being trained and the negatives are mined again, with the run's own
settings, so that later steps train on what the current student finds hard.

This is the asynchronous-index idea of ANCE (Xiong et al., "Approximate Nearest Neighbor Negative
Contrastive Learning for Dense Text Retrieval", ICLR 2021, arXiv:2007.00808), done synchronously: the
trainer pauses, the student is saved, :func:`hardneg.mine` runs with the student as the dense teacher
and the SAME :class:`~hardneg.config.MineConfig` the run was mined with (filters, judges, sampler,
depth, ``num_negatives``, seed, encoder) over the run's collection snapshot, and training resumes on
the new negatives. The (query, positive) rows never change; only the negative columns do. Zhan et al.
("Optimizing Dense Retrieval Model Training with Hard Negatives", SIGIR 2021, arXiv:2104.08051) show
that such dynamic negatives beat static ones; their ADORE mode is :mod:`hardneg.training.adore`.

How it fits the sentence-transformers trainer. The data loader fetches a batch ahead of the step that
trains on it, so swapping the dataset's negative columns after step N would leave step N+1 on the old
ones. Instead the dataset carries each row's index in a ``label`` column (the NO_DUPLICATES sampler
ignores labels, and the negative columns of the first mining stay, so batches are the ones a plain run
draws) and :class:`RefreshedNegativesLoss` wraps the chosen loss: once a refresh has happened it looks
up the rows' current negatives, tokenises them with the student and hands the loss (anchor, positive,
negative_1..k). The optimiser, the scheduler and the data order are untouched; :class:`RemineCallback`
refreshes at the end of steps N, 2N, ... (not after the last one).

Embeddings of the student are never served from, nor written to, the shared cache: each refresh saves
the student into a fresh folder (its weights fingerprint the encoder) and mines with a cache folder of
its own that is deleted afterwards. Random states (torch, numpy, Python) are restored after a refresh,
so a refresh that finds the same negatives leaves training exactly as without it.

Inputs: a run mined with a dense teacher, or a hybrid with exactly one dense member (that member is
replaced by the student; BM25 members stay); a loss that takes (anchor, positive, negative_1..n) without
labels: ``mnrl-hn``, ``cached-mnrl`` or ``gist``. A query the new mining leaves short of k negatives keeps
negatives from its previous list in the empty slots. After a refresh the sampler's duplicate check has
seen the old negatives only, so a new negative may also be another row's positive in the same batch.

Each refresh is recorded in the model's ``hardneg_train.json`` under ``refreshes``: step, seconds, the
share of negatives that changed since the previous list and since the first mining, the rows left
short, and the encoder ``encoder: auto`` chose for the student's folder. Where that differs from the
run's encoder (e.g. the run was mined with ``--encoder torch``), the first refresh also counts encoder
noise: before the exported encoders read sentence-transformers 6 folders, OpenVINO against torch bf16
gave about 1 query in 6 another negative with MiniLM unchanged, on a 30-query SciFact slice.

Example::

    import hardneg

    run = hardneg.mine("scifact", teacher="dense", num_negatives=4, out="runs/scifact-dense")
    hardneg.train(run, "models/ance", loss="mnrl-hn", remine_every=50, max_steps=200)
    # CLI: hardneg train --run runs/scifact-dense --out models/ance --remine-every 50
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import TrainerCallback

from ..config import TeacherSpec
from ..errors import ConfigError
from ..export import _flat
from ..runs.run import Run

REFRESHABLE_LOSSES = ("mnrl-hn", "cached-mnrl", "gist")
# MineConfig fields that say where the data comes from or where output goes: the refresh mines the
# run's collection snapshot in memory, with a cache of its own.
_NOT_REUSED = ("dataset", "split", "corpus", "query_column", "positive_column", "out", "cache_dir")


def check_refreshable(run: Run | None, loss: str) -> None:
    """Raise a one-line ConfigError unless ``run`` can be re-mined with the student for ``loss``."""
    if run is None:
        raise ConfigError("remine_every needs a hardneg run (the rows of another table cannot be re-mined)")
    if loss not in REFRESHABLE_LOSSES:
        raise ConfigError(f"remine_every: loss '{loss}' cannot take refreshed negatives "
                          f"(use {', '.join(REFRESHABLE_LOSSES)})")
    refresh_options(run.manifest["config"], "<student>")


def refresh_options(run_config: dict[str, Any], student_dir: str) -> dict[str, Any]:
    """The run's mining settings (``manifest["config"]``) with the student folder as its dense
    teacher: the dense teacher itself, or the one dense member of a hybrid."""
    spec = TeacherSpec.parse(str(run_config["teacher"]))
    dense = [i for i, (kind, _) in enumerate(spec.members) if kind == "dense"]
    if len(dense) != 1:
        raise ConfigError(f"remine_every: the run was mined with teacher '{spec}'; only a dense teacher (or a hybrid "
                          "with one dense member) can be refreshed by the student")
    members = list(spec.members)
    members[dense[0]] = ("dense", student_dir)
    options = {k: v for k, v in run_config.items() if k not in _NOT_REUSED}
    return options | {"teacher": TeacherSpec(spec.kind, tuple(members))}


def ntuple_rows(run: Run, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The training rows of the n-tuple table (:func:`hardneg.export.st_table`, same order): the
    collection query index of each row and its first ``k`` negatives as document indices."""
    col, neg = run.collection(), run.negatives
    n = int(run.manifest["config"]["num_negatives"])
    qids = neg.column("query_id").to_numpy(zero_copy_only=False)
    _, pos_par = _flat(neg, "positive_ids")
    neg_ids, neg_par = _flat(neg, "negative_ids")
    full = np.bincount(neg_par, minlength=len(qids)) == n
    matrix = col.doc_index(neg_ids[np.isin(neg_par, np.nonzero(full)[0])]).reshape(-1, n)
    keep = full[pos_par]
    rows = (np.cumsum(full) - 1)[pos_par[keep]]
    return col.query_index(qids[pos_par[keep]]), matrix[rows, :k]


def negatives_per_query(run: Run, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(collection query index of each of the run's queries, their negatives as document indices,
    ``width`` columns padded with -1)."""
    col, neg = run.collection(), run.negatives
    q_idx = col.query_index(neg.column("query_id").to_numpy(zero_copy_only=False))
    neg_ids, neg_par = _flat(neg, "negative_ids")
    start = np.concatenate([[0], np.cumsum(np.bincount(neg_par, minlength=q_idx.size))])[neg_par]
    slot = np.arange(neg_par.size) - start
    out = np.full((q_idx.size, width), -1, dtype=np.int64)
    fits = slot < width
    out[neg_par[fits], slot[fits]] = col.doc_index(neg_ids[fits])
    return q_idx, out


def fill_short(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Each row's new negatives (-1 = none found), its empty slots filled, in order, with the old
    negatives the new list does not hold. ``old`` rows hold distinct valid ids, so every row fills."""
    k = old.shape[1]
    cand = np.concatenate([new, old], axis=1)
    drop = cand < 0
    drop[:, k:] |= (old[:, :, None] == new[:, None, :]).any(axis=2)
    order = np.argsort(drop, axis=1, kind="stable")
    return np.take_along_axis(cand, order, axis=1)[:, :k]


def changed_share(new: np.ndarray, old: np.ndarray) -> float:
    """Share of the (row, slot) negatives in ``new`` that the same row of ``old`` does not hold."""
    if new.size == 0:
        return 0.0
    return float(1.0 - (new[:, :, None] == old[:, None, :]).any(axis=2).mean())


def remine(run: Run, student: Any, folder: Path) -> Run:
    """Mine the run's collection again with ``student`` (saved into ``folder``) as its dense teacher and
    the run's settings; the embeddings and searches go to ``folder``'s own cache. Returns the new run
    (in memory)."""
    from ..mine import mine

    model_dir = folder / "student"
    student.save(str(model_dir), create_model_card=False)
    options = refresh_options(run.manifest["config"], str(model_dir))
    return mine(run.collection(), cache_dir=str(folder / "cache"), **options)


class RefreshedNegativesLoss(nn.Module):
    """Wraps a loss over (anchor, positive, negative_1..k): the ``label`` the collator passes is each
    row's index; once :meth:`set_negatives` has been called, the negative columns the collator built
    are replaced by the rows' current negatives, tokenised with the student. The wrapped loss gets no
    labels."""

    def __init__(self, model: Any, loss: nn.Module, doc_texts: list[str], negatives: np.ndarray):
        super().__init__()
        self.model, self.loss, self.doc_texts = model, loss, doc_texts
        self.first = negatives
        self.negatives = negatives
        self.refreshed = False

    def set_negatives(self, negatives: np.ndarray) -> None:
        if negatives.shape != self.first.shape:
            raise ValueError(f"refreshed negatives {negatives.shape} do not match the table {self.first.shape}")
        self.negatives, self.refreshed = negatives, True

    def resume_state(self) -> dict[str, Any]:
        """The rows' current negatives, for a checkpoint (:mod:`hardneg.training.checkpoints`)."""
        return {"negatives": self.negatives, "refreshed": self.refreshed}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        if state["refreshed"]:
            self.set_negatives(state["negatives"])

    def negative_features(self, rows: np.ndarray, device: Any) -> list[dict[str, Tensor]]:
        """The current negatives of ``rows``, one feature dict per negative column."""
        from sentence_transformers.util import batch_to_device

        ids = self.negatives[rows]
        return [batch_to_device(self.model.preprocess([self.doc_texts[i] for i in ids[:, j]]), device)
                for j in range(ids.shape[1])]

    def forward(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise ValueError("RefreshedNegativesLoss needs the row index of every example as its label")
        feats = list(sentence_features)
        if self.refreshed:
            device = next(iter(feats[0].values())).device
            feats = feats[:2] + self.negative_features(labels.long().cpu().numpy(), device)
        return self.loss(feats, None)

    def get_config_dict(self) -> dict[str, Any]:
        """The wrapped loss's settings (for the model card)."""
        get = getattr(self.loss, "get_config_dict", None)
        inner: dict[str, Any] = get() if callable(get) else {}
        return {"wraps": type(self.loss).__name__, **inner}

    @property
    def citation(self) -> str:
        return "ANCE: Xiong et al., ICLR 2021, arXiv:2007.00808"


class RemineCallback(TrainerCallback):
    """Re-mines with the student at the end of every ``every``-th optimiser step (not the last) and
    hands the new negatives to the loss; ``records`` is what the manifest keeps."""

    def __init__(self, run: Run, student: Any, loss: RefreshedNegativesLoss, query_idx: np.ndarray,
                 every: int, workdir: Path, full_length: int | None = None):
        self.run, self.student, self.loss, self.every, self.workdir = run, student, loss, every, workdir
        self.query_idx, self.full_length = query_idx, full_length
        self.records: list[dict[str, Any]] = []

    def resume_state(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        self.records = list(state["records"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        step = int(state.global_step)
        if step % self.every == 0 and step < state.max_steps:
            self.refresh(step)
        return control

    def refresh(self, step: int) -> None:
        t0 = time.perf_counter()
        states = _rng_states()
        folder = self.workdir / f"step-{step}"
        train_length = None
        if self.full_length is not None:  # mine at the model's own length, as the run did
            train_length, self.student.max_seq_length = self.student.max_seq_length, self.full_length
        try:
            new_run = remine(self.run, self.student, folder)
        finally:
            if train_length is not None:
                self.student.max_seq_length = train_length
            shutil.rmtree(folder, ignore_errors=True)
            _set_rng_states(states)
        old = self.loss.negatives
        k = old.shape[1]
        q_idx, per_query = negatives_per_query(new_run, k)
        order = np.argsort(q_idx)
        new = per_query[order[np.searchsorted(q_idx[order], self.query_idx)]]
        short = int((new < 0).any(axis=1).sum())
        new = fill_short(new, old)
        self.loss.set_negatives(new)
        self.records.append({"step": step, "seconds": round(time.perf_counter() - t0, 2),
                             "changed": round(changed_share(new, old), 4),
                             "changed_from_first": round(changed_share(new, self.loss.first), 4),
                             "rows_short": short, "encoder": _dense_encoder(new_run)})


def _dense_encoder(run: Run) -> str:
    """The encoder the run's dense teacher resolved to (``auto`` is decided per model folder)."""
    resolved = run.manifest.get("encoder", {}).get("resolved", {})
    return ",".join(sorted(set(resolved.values())))


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.random.get_rng_state(), "numpy": np.random.get_state(),
                              "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.random.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def attach_refresh(run: Run, table: Any, student: Any, loss: nn.Module, every: int, k: int, workdir: Path,
                   full_length: int | None) -> tuple[Any, RefreshedNegativesLoss, RemineCallback]:
    """The training table with a ``label`` column of row indices, the wrapped loss and the callback."""
    import pyarrow as pa

    query_idx, negatives = ntuple_rows(run, k)
    if query_idx.size != table.num_rows:
        raise ConfigError(f"remine_every: {query_idx.size} id rows for a table of {table.num_rows}")
    wrapped = RefreshedNegativesLoss(student, loss, run.collection().doc_texts, negatives)
    callback = RemineCallback(run, student, wrapped, query_idx, every, workdir, full_length)
    return table.append_column("label", pa.array(np.arange(table.num_rows, dtype=np.int64))), wrapped, callback
