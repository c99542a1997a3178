"""Training on LLM-written negatives: the n-tuple table of a mined run whose negative slots hold the
passages ``hardneg generate negatives`` wrote for each query, instead of the mined ones or beside them
("Don't Retrieve, Generate", arXiv:2504.21015, 2025, compares the two; measure before relying on them).

``negatives`` (a :class:`~hardneg.training.config.TrainConfig` field, ``--negatives``):

- ``mined`` (the default): the run's mined negatives, as always.
- ``generated``: ``anchor, positive, negative_1..k`` with the query's generated passages in slot order
  (``gen-neg:<qid>:0``, ``:1``, ...); ``k`` = ``num_negatives``, else the folder's ``per_query``. A query
  with fewer than ``k`` kept passages (the judge or the output check dropped some) is left out, as the
  n-tuple format leaves out a query with fewer mined negatives than the run's number.
- ``both``: the mined slots first (``k`` = ``num_negatives`` or all the run mined), then every one of
  the query's ``per_query`` generated passages: ``k + per_query`` negative columns. A query needs all
  of both.
- ``generated-else-mined``: as ``generated``, but a slot whose passage the judge or ``--filter`` dropped
  holds the query's mined negative of the same slot instead: every query of the run trains, so the rows
  are those of ``mined`` (an equal-query comparison of filtered LLM negatives). A warning counts the
  slots that fell back.

The passages are matched to the run's queries by id; a query's text must be the one the passage was
written for (else the folder came from other data, and training stops). Queries of the run the folder
has nothing for are left out of ``generated`` and ``both`` rows (a warning counts every query left out).
A generated passage belongs to its own query only: it is never another row's negative, and in-batch
it is one more text of the batch, as any negative is. The losses that take texts only train on it:
:data:`GENERATED_LOSSES` (the distillation losses need teacher scores the passages do not have).

Example::

    hardneg generate negatives --dataset data/scifact --llm http://localhost:8000/v1 --with-positive \\
        --judge cross-encoder:judges/ce --out data/scifact-negs
    hardneg train --run runs/scifact --negatives both --generated data/scifact-negs --out models/both
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, HardnegWarning
from ..runs.columns import flat
from ..runs.run import Run

NEGATIVE_SOURCES = ("mined", "generated", "both", "generated-else-mined")
GENERATED_LOSSES = ("mnrl-hn", "cached-mnrl", "gist", "mochi")


def check_negative_source(negatives: str, generated: str | None, loss: str, remine_every: int,
                          run: Run | None) -> None:
    """``negatives`` and ``generated`` go together, with a loss that trains on texts and a run to match."""
    if negatives not in NEGATIVE_SOURCES:
        raise ConfigError(f"negatives: unknown source '{negatives}' (use {', '.join(NEGATIVE_SOURCES)})")
    if negatives == "mined":
        if generated is not None:
            raise ConfigError("generated: only with --negatives generated or both (the default, mined, does not "
                              "read it)")
        return
    if generated is None:
        raise ConfigError(f"negatives '{negatives}': give --generated DIR (a folder from `hardneg generate negatives`)")
    if loss not in GENERATED_LOSSES:
        raise ConfigError(f"negatives '{negatives}': loss '{loss}' needs what generated passages do not have "
                          f"(teacher scores, ids or a corpus to retrieve from); use {', '.join(GENERATED_LOSSES)}")
    if remine_every:
        raise ConfigError(f"negatives '{negatives}': remine_every mines the negatives again; it takes mined ones only")
    if run is None:
        raise ConfigError(f"negatives '{negatives}': train on a hardneg run (its query ids match the passages)")


def generated_source(path: str) -> dict[str, Any]:
    """What the training manifest records of a generated-negatives folder (its fingerprint enters the
    model's settings key)."""
    from ..generation.negatives import GeneratedNegatives

    g = GeneratedNegatives.load(path)
    m = g.manifest
    return {"path": str(g.path.resolve()), "fingerprint": m["fingerprint"], "per_query": m["config"]["per_query"],
            "kept": m["counts"]["kept"], "generator": m["generator"], "prompt_id": m["prompt"]["prompt_id"],
            "judges": {k: v and {"kind": v.get("kind"), "threshold": v.get("threshold")} for k, v in m["judges"].items()}}


def _by_row(row: np.ndarray, values: np.ndarray, rows: int, width: int) -> np.ndarray:
    """(rows, width) of each row's first ``width`` values in the given order (``row`` sorted); -1 where short."""
    start = np.searchsorted(row, np.arange(rows))
    rank = np.arange(row.size) - start[row]
    keep = rank < width
    out = np.full((rows, width), -1, dtype=np.int64)
    out[row[keep], rank[keep]] = values[keep]
    return out


def generated_table(run: Run, generated: str, negatives: str, num_negatives: int | None = None) -> pa.Table:
    """The n-tuple table of ``run`` with generated negatives (see the module's docstring).

    Args:
        run: a mined run; its collection snapshot gives the query and document texts.
        generated: a folder from ``hardneg generate negatives``.
        negatives: ``generated``, ``both`` or ``generated-else-mined``.
        num_negatives: generated (and generated-else-mined): the slots (default the folder's per_query);
            both: the mined slots (default all the run mined).

    Returns:
        ``anchor, positive, negative_1..n``: one row per (query, positive).
    """
    from ..generation.negatives import GeneratedNegatives

    g = GeneratedNegatives.load(generated)
    per = int(g.manifest["config"]["per_query"])
    kept = g.kept()
    neg, col = run.negatives, run.collection()
    qids = neg.column("query_id").to_numpy(zero_copy_only=False).astype(object)
    nq = qids.size
    order = np.argsort(qids)
    gq = kept.column("query_id").to_numpy(zero_copy_only=False).astype(object)
    at = np.searchsorted(qids[order], gq)
    found = (at < nq) & (qids[order][np.minimum(at, nq - 1)] == gq)  # a run has at least one query
    g_row = order[at[found]]
    g_text = np.asarray(kept.column("text").to_pylist(), dtype=object)[found]
    g_query = np.asarray(kept.column("query").to_pylist(), dtype=object)[found]
    run_query = np.asarray([col.query_texts[i] for i in col.query_index(qids[g_row])], dtype=object)
    differ = np.nonzero(g_query != run_query)[0]
    if differ.size:
        i = int(differ[0])
        raise ConfigError(f"generated: {g.path}: query '{qids[g_row[i]]}' was '{g_query[i]}' there and is "
                          f"'{run_query[i]}' in the run: the negatives were written for other data")
    g_sample = kept.column("sample").to_numpy()[found]
    by = np.lexsort((g_sample, g_row))
    gen = _by_row(g_row[by], by, nq, per)  # (queries, per): index into g_text, -1 where none kept

    pos_ids, pos_par = flat(neg, "positive_ids")
    neg_ids, neg_par = flat(neg, "negative_ids")
    n_mined = int(run.manifest["config"]["num_negatives"])
    fallback = None  # generated-else-mined: (queries, k) document index of the mined negative, -1 where none
    if negatives in ("generated", "generated-else-mined"):
        k_g = num_negatives or per
        if k_g > per:
            raise ConfigError(f"num_negatives: {k_g} generated slots, but {g.path} has {per} negatives per query")
        k_m = 0
        if negatives == "generated-else-mined":
            if k_g > n_mined:
                raise ConfigError(f"negatives '{negatives}': {k_g} slots, but the run mined {n_mined} per query to "
                                  "fall back on")
            fallback = _by_row(neg_par, col.doc_index(neg_ids), nq, k_g)
            gen = gen[:, :k_g]
            full = np.asarray(((gen >= 0) | (fallback >= 0)).all(axis=1))
        else:
            full = np.asarray((gen[:, :k_g] >= 0).all(axis=1))
    elif negatives == "both":
        k_g, k_m = per, min(num_negatives or n_mined, n_mined)
        full = np.asarray((gen >= 0).all(axis=1) & (np.bincount(neg_par, minlength=nq) == n_mined))
    else:
        raise ConfigError(f"negatives: '{negatives}' has no generated table (use "
                          f"{', '.join(NEGATIVE_SOURCES[1:])})")
    left_out = int(nq - full.sum())
    if left_out:
        short = (f"fewer than {k_g} slots with a kept generated or a mined negative" if fallback is not None
                 else f"fewer than {k_g} kept generated negatives" + (f" or {n_mined} mined" if k_m else ""))
        warnings.warn(f"negatives '{negatives}': {left_out} of the run's {nq} queries left out of training: {short}",
                      HardnegWarning, stacklevel=2)
    if fallback is not None:
        fell = int((gen[full] < 0).sum())
        if fell:
            warnings.warn(f"negatives '{negatives}': {fell} of {int(full.sum()) * k_g} slots hold the mined negative "
                          "(no kept generated passage)", HardnegWarning, stacklevel=2)
    keep = full[pos_par]
    rows = pos_par[keep]
    if rows.size < 2:
        raise ConfigError(f"negatives '{negatives}': only {rows.size} training rows have all their negatives "
                          f"({g.path} kept {kept.num_rows} passages for {nq} queries of the run)")
    cols: dict[str, Any] = {"anchor": [col.query_texts[i] for i in col.query_index(qids[rows])],
                            "positive": [col.doc_texts[i] for i in col.doc_index(pos_ids[keep])]}
    if k_m:
        mined = _by_row(neg_par, col.doc_index(neg_ids), nq, n_mined)[rows, :k_m]
        for j in range(k_m):
            cols[f"negative_{j + 1}"] = [col.doc_texts[i] for i in mined[:, j]]
    for j in range(k_g):
        slot = gen[rows, j]
        texts = g_text[slot].astype(object)
        if fallback is not None:
            mined_doc = fallback[rows, j]
            texts[slot < 0] = [col.doc_texts[i] for i in mined_doc[slot < 0]]
        cols[f"negative_{k_m + j + 1}"] = texts.tolist()
    return pa.table(cols)
