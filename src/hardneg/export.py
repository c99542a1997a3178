"""Exporters: a run's ids become the training formats of sentence-transformers, FlagEmbedding and
Tevatron. Texts are joined here, and only here, from the run's collection snapshot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .collection import Collection
from .errors import ConfigError
from .runs.columns import flat as _flat
from .runs.files import atomic_write, staged_dir
from .runs.run import Run

ST_FORMATS = ("pair", "triplet", "n-tuple", "labeled-pair", "labeled-list")
FORMATS = (*ST_FORMATS, "flagembedding", "tevatron")


def _ragged_cross(count_a: np.ndarray, count_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (a, b) index pairs per group, where group g owns count_a[g] a's and count_b[g] b's."""
    off_b = np.concatenate([[0], np.cumsum(count_b)])
    group_of_a = np.repeat(np.arange(count_a.size), count_a)
    reps = count_b[group_of_a]
    a = np.repeat(np.arange(group_of_a.size), reps)
    start = np.repeat(np.cumsum(reps) - reps, reps)
    b = np.arange(reps.sum()) - start + np.repeat(off_b[group_of_a], reps)
    return a, b


class _Texts:
    def __init__(self, col: Collection):
        self.col = col

    def docs(self, ids: np.ndarray) -> list[str]:
        idx = self.col.doc_index(ids)
        return [self.col.doc_texts[i] for i in idx]

    def queries(self, ids: np.ndarray) -> list[str]:
        idx = self.col.query_index(ids)
        return [self.col.query_texts[i] for i in idx]


def with_relabelled(run: Run) -> Run:
    """The run with its relabelled candidates (judged relevant with ``--relabel``) appended to each
    query's positives, grade 1 and the filter teacher's score, so that every exporter trains on
    them as positives. A run without relabelled candidates comes back unchanged."""
    cand, neg = run.candidates, run.negatives
    rel = cand.filter(pc.equal(pc.cast(cand.column("reason"), pa.string()), "relabelled"))
    if rel.num_rows == 0:
        return run
    qids = neg.column("query_id").to_numpy(zero_copy_only=False)
    order = np.argsort(qids)
    rel_row = order[np.searchsorted(qids[order], rel.column("query_id").to_numpy(zero_copy_only=False))]
    old = {c: _flat(neg, c)[0] for c in ("positive_ids", "positive_grades", "positive_scores")}
    _, old_row = _flat(neg, "positive_ids")
    row = np.concatenate([old_row, rel_row])
    merged = {"positive_ids": np.concatenate([old["positive_ids"], rel.column("doc_id").to_numpy(zero_copy_only=False)]),
              "positive_grades": np.concatenate([old["positive_grades"], np.ones(rel.num_rows, dtype=np.int32)]),
              "positive_scores": np.concatenate([old["positive_scores"],
                                                 rel.column(f"score_{run.manifest['filter_on']}").to_numpy()])}
    keep = np.argsort(row, kind="stable")  # each query's known positives first, then the relabelled ones
    offsets = pa.array(np.concatenate([[0], np.cumsum(np.bincount(row, minlength=len(qids)))]), pa.int32())
    for name, values in merged.items():
        typ = neg.schema.field(name).type.value_type
        i = neg.schema.get_field_index(name)
        neg = neg.set_column(i, name, pa.ListArray.from_arrays(offsets, pa.array(values[keep], typ)))
    return Run(neg, cand, {**run.manifest, "relabelled_as_positives": int(rel.num_rows)},
               collection=run._collection)


def st_table(run: Run, fmt: str, with_scores: bool = False, collection: Collection | None = None,
             score_teachers: Sequence[str] = ()) -> pa.Table:
    """A sentence-transformers training table. ``n-tuple`` keeps only queries with the full number
    of negatives (columns negative_1..n); the others keep every negative that was mined.
    ``score_teachers`` (n-tuple only) adds a ``score_<name>`` list column per teacher, [positive,
    negatives...], from the run's ``positive_scores_<name>`` / ``negative_scores_<name>`` columns
    (``--score-with``, :mod:`hardneg.candidates.teacher_scores`)."""
    missing = [t for t in score_teachers if f"negative_scores_{t}" not in run.negatives.column_names]
    if missing:
        have = sorted(c[len("negative_scores_"):] for c in run.negatives.column_names if c.startswith("negative_scores_"))
        raise ConfigError(f"teacher_scores: the run has no scores of {', '.join(missing)} "
                          f"(it has: {', '.join(have) or 'none; mine with --score-with'})")
    if score_teachers and fmt != "n-tuple":
        raise ConfigError(f"teacher_scores: only the n-tuple format carries per-teacher scores, not {fmt}")
    if fmt not in ST_FORMATS:
        raise ConfigError(f"unknown sentence-transformers format '{fmt}' ({', '.join(ST_FORMATS)})")
    neg = run.negatives
    texts = _Texts(collection or run.collection())
    qids = neg.column("query_id").to_numpy(zero_copy_only=False)
    pos_ids, pos_par = _flat(neg, "positive_ids")
    pos_sc, _ = _flat(neg, "positive_scores")
    neg_ids, neg_par = _flat(neg, "negative_ids")
    neg_sc, _ = _flat(neg, "negative_scores")
    n_pos = np.bincount(pos_par, minlength=len(qids))
    n_neg = np.bincount(neg_par, minlength=len(qids))
    anchors_all = np.asarray(texts.queries(qids), dtype=object)
    cols: dict[str, Any]
    if fmt == "pair":  # (anchor, positive) for in-batch-only training
        cols = {"anchor": list(anchors_all[pos_par]), "positive": texts.docs(pos_ids)}
        if with_scores:
            cols["score"] = pos_sc
        return pa.table(cols)
    if fmt == "triplet":
        a, b = _ragged_cross(n_pos, n_neg)
        cols = {"anchor": anchors_all[pos_par[a]], "positive": texts.docs(pos_ids[a]), "negative": texts.docs(neg_ids[b])}
        if with_scores:
            cols["score"] = np.stack([pos_sc[a], neg_sc[b]], axis=1).tolist()
        return pa.table({k: list(v) if isinstance(v, np.ndarray) else v for k, v in cols.items()})
    if fmt == "n-tuple":
        n = int(run.manifest["config"]["num_negatives"])
        full = n_neg == n
        keep_pos = full[pos_par]
        neg_matrix = neg_ids[np.isin(neg_par, np.nonzero(full)[0])].reshape(-1, n)
        neg_scores = neg_sc[np.isin(neg_par, np.nonzero(full)[0])].reshape(-1, n)
        row_of_query = np.cumsum(full) - 1
        rows = row_of_query[pos_par[keep_pos]]
        cols = {"anchor": list(anchors_all[pos_par[keep_pos]]), "positive": texts.docs(pos_ids[keep_pos])}
        for j in range(n):
            cols[f"negative_{j + 1}"] = texts.docs(neg_matrix[rows, j])
        if with_scores:
            cols["score"] = np.concatenate([pos_sc[keep_pos][:, None], neg_scores[rows]], axis=1).tolist()
        for name in score_teachers:  # [positive, negative_1..n] scores of each named teacher
            t_pos, _ = _flat(neg, f"positive_scores_{name}")
            t_neg = _flat(neg, f"negative_scores_{name}")[0][np.isin(neg_par, np.nonzero(full)[0])].reshape(-1, n)
            cols[f"score_{name}"] = np.concatenate([t_pos[keep_pos][:, None], t_neg[rows]], axis=1).tolist()
        return pa.table(cols)
    if fmt == "labeled-pair":
        parent = np.concatenate([pos_par, neg_par])
        order = np.argsort(parent, kind="stable")
        ids = np.concatenate([pos_ids, neg_ids])[order]
        cols = {"anchor": list(anchors_all[parent[order]]), "text": texts.docs(ids),
                "label": np.concatenate([np.ones(pos_ids.size, np.int64), np.zeros(neg_ids.size, np.int64)])[order]}
        if with_scores:
            cols["score"] = np.concatenate([pos_sc, neg_sc])[order]
        return pa.table(cols)
    # labeled-list: one row per query, its positives then its negatives.
    pos_text = texts.docs(pos_ids)
    neg_text = texts.docs(neg_ids)
    p_off = np.concatenate([[0], np.cumsum(n_pos)])
    n_off = np.concatenate([[0], np.cumsum(n_neg)])
    docs, labels, scores = [], [], []
    for q in range(len(qids)):  # building Python lists of texts: export only, not a hot path
        docs.append(pos_text[p_off[q]:p_off[q + 1]] + neg_text[n_off[q]:n_off[q + 1]])
        labels.append([1] * int(n_pos[q]) + [0] * int(n_neg[q]))
        scores.append(pos_sc[p_off[q]:p_off[q + 1]].tolist() + neg_sc[n_off[q]:n_off[q + 1]].tolist())
    cols = {"anchor": list(anchors_all), "docs": docs, "labels": labels}
    if with_scores:
        cols["scores"] = scores
    return pa.table(cols)


def to_dataset(run: Run, fmt: str = "n-tuple", with_scores: bool = False, relabelled: bool = False) -> Any:
    """The run as a ``datasets.Dataset`` in a sentence-transformers format.

    Args:
        run: a mining result; texts come from its collection snapshot.
        fmt: ``pair``, ``triplet``, ``n-tuple``, ``labeled-pair`` or ``labeled-list``.
        with_scores: add the teacher's scores (a ``score`` column, for distillation).
        relabelled: train on relabelled candidates as positives (:func:`with_relabelled`).

    Example::

        ds = hardneg.to_dataset(hardneg.Run.load("runs/scifact"), "triplet")
    """
    import datasets

    return datasets.Dataset(st_table(with_relabelled(run) if relabelled else run, fmt, with_scores))


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def flagembedding_rows(run: Run, collection: Collection | None = None) -> list[dict[str, Any]]:
    """FlagEmbedding fine-tuning rows: ``query``, ``pos``, ``neg``, ``pos_scores``, ``neg_scores``."""
    texts = _Texts(collection or run.collection())
    out = []
    for r in run.negatives.to_pylist():
        out.append({"query": texts.queries(np.array([r["query_id"]], dtype=object))[0],
                    "pos": texts.docs(np.asarray(r["positive_ids"], dtype=object)),
                    "neg": texts.docs(np.asarray(r["negative_ids"], dtype=object)),
                    "pos_scores": r["positive_scores"], "neg_scores": r["negative_scores"]})
    return out


def export(run: Run | str | Path, fmt: str, out: str | Path, with_scores: bool = False,
           overwrite: bool = False, relabelled: bool = False) -> Path:
    """Write a run in a training format, atomically. Texts come from the run's collection snapshot
    (:meth:`Run.collection`), so a run exports even when the data it was mined from is gone.

    Args:
        run: a run folder or a loaded :class:`Run`.
        fmt: an ST format (``pair``, ``triplet``, ``n-tuple``, ``labeled-pair``, ``labeled-list``)
            written to .parquet or .jsonl by ``out``'s suffix; ``flagembedding`` to a .jsonl file;
            ``tevatron`` to a folder (train.jsonl + corpus.jsonl).
        out: the file or folder to write.
        with_scores: add the teacher's scores (for distillation).
        overwrite: replace an existing ``out``.
        relabelled: train on relabelled candidates as positives (:func:`with_relabelled`).

    Example::

        hardneg.export("runs/scifact", "triplet", "train.parquet")
    """
    if not isinstance(run, Run):
        run = Run.load(run)
    if relabelled:
        run = with_relabelled(run)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists (use --overwrite)")
    if fmt in ST_FORMATS:
        table = st_table(run, fmt, with_scores)
        if out.suffix == ".jsonl":
            return atomic_write(out, lambda t: t.write_text(_jsonl(table.to_pylist()), encoding="utf-8"))
        return atomic_write(out, lambda t: pq.write_table(table, t))
    if fmt == "flagembedding":
        rows = flagembedding_rows(run)
        return atomic_write(out, lambda t: t.write_text(_jsonl(rows), encoding="utf-8"))
    # Tevatron: id-based training file plus the corpus it refers to.
    col = run.collection()
    texts = _Texts(col)
    train = [{"query_id": r["query_id"], "query_text": texts.queries(np.array([r["query_id"]], dtype=object))[0],
              "positive_document_ids": r["positive_ids"], "negative_document_ids": r["negative_ids"]}
             for r in run.negatives.to_pylist()]
    corpus = [{"docid": d, "title": "", "text": t} for d, t in zip(col.doc_ids.tolist(), col.doc_texts)]
    with staged_dir(out, overwrite) as staging:
        (staging / "train.jsonl").write_text(_jsonl(train), encoding="utf-8")
        (staging / "corpus.jsonl").write_text(_jsonl(corpus), encoding="utf-8")
    return out
