"""Hard batches (NGAME): mini-batches built from clusters of similar queries, so that the other
rows of a batch are hard in-batch negatives for each query.

The queries (the distinct texts of the first text column, ``anchor``) are embedded, split into
clusters of ``cluster_size`` queries by balanced recursive 2-means (faiss k-means, seeded: each
node's queries are split in two by which of the two centroids they lean to, in multiples of
``cluster_size``, so every cluster holds exactly ``cluster_size`` queries except one), and each pass
over the table serves whole clusters one after another in a seeded random order. A query with
several positives has one row per positive: its rows are dealt out in rounds (round r holds its r-th
row, in a seeded random order) and a cluster's rounds are spread evenly over the pass, so the rows of
one query are far apart. With one row per query and ``batch_size`` a multiple of ``cluster_size``,
every batch is a union of whole clusters.

As with sentence-transformers' ``NO_DUPLICATES`` sampler, a batch never holds the same text twice
(any text column: query, positive or negative): a row whose text is already in the batch is
deferred to the next batch, which takes the deferred rows first. Batches are full except at the end
of a pass, where only rows that clash with each other can be left.

With ``recluster_every`` = N > 0 the queries are embedded again with the current model (the
student being trained) every N batches served and the rows not yet served in the pass are
re-clustered and re-ordered, as NGAME refreshes its clusters from the encoder being trained. The
loader draws a batch ahead of the step that uses it, so the refresh sees the model about one step
earlier. With 0 the clusters are computed once, from the model before its first step.

Paper: K. Dahiya, N. Gupta, D. Saini, A. Soni, Y. Wang, K. Dave, J. Jiao, G. K, P. Dey, A. Singh,
D. Hada, V. Jain, B. Paliwal, A. Mittal, S. Mehta, R. Ramjee, S. Agarwal, P. Kar, M. Varma.
"NGAME: Negative Mining-aware Mini-batching for Extreme Classification", WSDM 2023,
arXiv:2207.04452.

Inputs: any sentence-transformers training table whose first text column is the query (pairs,
triplets, n-tuples); label columns are carried along, not compared.

Example::

    from sentence_transformers import SentenceTransformerTrainingArguments
    from hardneg.training.hard_batches import hard_batch_sampler

    args = SentenceTransformerTrainingArguments(
        output_dir="out", per_device_train_batch_size=32,
        batch_sampler=hard_batch_sampler(student, cluster_size=8, recluster_every=100))

or, through hardneg: ``hardneg train --run runs/scifact --out m --hard-batches --cluster-size 8``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

Embed = Callable[[list[str]], np.ndarray]
LOOK_AHEAD = 32  # units searched for one that fits the space left in a batch


def balanced_clusters(emb: np.ndarray, cluster_size: int, seed: int = 0) -> np.ndarray:
    """A cluster number per row of ``emb``: recursive 2-means (faiss, seeded), each split cut at a
    multiple of ``cluster_size`` in the order of (similarity to centroid 1 - similarity to centroid 0),
    so every cluster holds exactly ``cluster_size`` rows but one (the remainder)."""
    import faiss

    x = np.ascontiguousarray(emb, dtype=np.float32)
    labels = np.empty(len(x), dtype=np.int64)
    stack, next_label = [np.arange(len(x))], 0
    while stack:  # one iteration per tree node (~2 n / cluster_size), not per query
        idx = stack.pop()
        m = -(-idx.size // cluster_size)  # clusters this node must become
        if m <= 1:
            labels[idx] = next_label
            next_label += 1
            continue
        km = faiss.Kmeans(x.shape[1], 2, niter=10, seed=seed, min_points_per_centroid=1, spherical=True)
        km.train(x[idx])
        s = x[idx] @ km.centroids.T
        order = idx[np.argsort(s[:, 1] - s[:, 0], kind="stable")]
        left = (m // 2) * cluster_size
        stack += [order[left:], order[:left]]
    return labels


def _codes(dataset: Any, columns: list[str]) -> np.ndarray:
    """(rows, columns) integer codes: equal codes, equal texts (one dictionary over all columns)."""
    if getattr(dataset, "_indices", None) is not None:  # a selected / shuffled view: its rows, in order
        dataset = dataset.flatten_indices()
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    cols = [pc.cast(table.column(c), pa.string()) for c in columns]
    n = table.num_rows
    flat = pa.chunked_array([chunk for col in cols for chunk in col.chunks], pa.string())
    codes = pc.dictionary_encode(flat).combine_chunks().indices.to_numpy(zero_copy_only=False)
    return codes.astype(np.int64).reshape(len(columns), n).T


class HardBatchSampler(DefaultBatchSampler):
    """Batches of whole query clusters, refreshed every ``recluster_every`` batches (see the module).

    Args:
        dataset: the training table (a ``datasets.Dataset``).
        batch_size, drop_last, valid_label_columns, generator, seed: as the trainer passes them
            (label columns are not compared; ``seed`` and the epoch seed the order).
        embed: texts -> L2-normalised embeddings (the model the clusters come from).
        cluster_size: queries per cluster.
        recluster_every: re-embed and re-cluster every N batches served (0: once).
    """

    def __init__(self, dataset: Any, batch_size: int, drop_last: bool, valid_label_columns: list[str] | None = None,
                 generator: torch.Generator | None = None, seed: int = 0, *, embed: Embed, cluster_size: int = 8,
                 recluster_every: int = 0) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        if cluster_size < 1 or recluster_every < 0:
            raise ValueError("cluster_size must be >= 1 and recluster_every >= 0")
        self.dataset, self.embed = dataset, embed
        self.cluster_size, self.recluster_every = cluster_size, recluster_every
        skip = set(valid_label_columns or ()) | {"dataset_name"}
        self.text_columns = [c for c in dataset.column_names if c not in skip]
        self.codes = _codes(dataset, self.text_columns)
        first, self.query_of_row = np.unique(self.codes[:, 0], return_index=True, return_inverse=True)[1:]
        self.query_texts = [str(t) for t in dataset.select(first)[self.text_columns[0]]]
        self.cluster_of_query = np.full(len(first), -1, dtype=np.int64)
        self.served = 0  # batches handed out, over all passes
        self.refreshes = 0  # times the queries were embedded and clustered
        self._refreshed_at = -1
        self._partial = True  # the clusters cover only some queries (or none yet)

    def _recluster(self, queries: np.ndarray) -> None:
        emb = np.asarray(self.embed([self.query_texts[i] for i in queries]), dtype=np.float32)
        self.cluster_of_query[:] = -1
        self.cluster_of_query[queries] = balanced_clusters(emb, self.cluster_size, self.seed)
        self._partial = queries.size < self.cluster_of_query.size
        self.refreshes += 1
        self._refreshed_at = self.served

    def units(self, rows: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
        """``rows`` as units in serving order. A query's rows are dealt out in rounds (its r-th row, in
        a random order, in round r); a unit is one cluster's rows of one round (rows shuffled), and
        cluster c's R_c rounds are spread evenly over the pass (round r at time (r + u_c) / R_c, u_c
        uniform), so the rows of a query with many positives are far apart."""
        q = self.query_of_row[rows]
        cluster = self.cluster_of_query[q]
        tie = rng.permutation(rows.size)
        by_query = np.lexsort((tie, q))
        qs = q[by_query]
        first = np.r_[True, qs[1:] != qs[:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(rows.size), 0))
        rnd = np.empty(rows.size, dtype=np.int64)
        rnd[by_query] = np.arange(rows.size) - start
        rounds = np.zeros(self.cluster_of_query.max() + 1, dtype=np.int64)
        np.maximum.at(rounds, cluster, rnd + 1)
        time = (rnd + rng.random(rounds.size)[cluster]) / rounds[cluster]
        order = np.lexsort((tie, rnd, cluster, time))
        c, r = cluster[order], rnd[order]
        cuts = np.flatnonzero((c[1:] != c[:-1]) | (r[1:] != r[:-1])) + 1
        return [u.tolist() for u in np.split(rows[order], cuts)]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        rows = np.arange(len(self.dataset), dtype=np.int64)
        if rows.size == 0:
            return
        if self._partial:
            self._recluster(np.unique(self.query_of_row))
        queue, deferred = deque(self.units(rows, rng)), []
        codes = self.codes.tolist()
        while queue or deferred:
            due = self.recluster_every and self.served % self.recluster_every == 0
            if due and self._refreshed_at != self.served:
                remaining = np.array(deferred + [r for u in queue for r in u], dtype=np.int64)
                self._recluster(np.unique(self.query_of_row[remaining]))
                queue, deferred = deque(self.units(remaining, rng)), []
            batch = self._fill(queue, deferred, codes)
            if len(batch) < self.batch_size and self.drop_last:
                continue
            self.served += 1
            yield batch

    def _fill(self, queue: deque[list[int]], deferred: list[int], codes: list[list[int]]) -> list[int]:
        """One batch: the deferred rows first, then whole units (the largest that fits among the next
        ``LOOK_AHEAD``), a unit split only when none fits. A row with a text already in the batch is
        deferred to the next batch. ``queue`` and ``deferred`` are updated in place."""
        batch: list[int] = []
        seen: set[int] = set()
        skipped: list[int] = []

        def take(rows: list[int]) -> None:
            for r in rows:
                if seen.isdisjoint(codes[r]):
                    batch.append(r)
                    seen.update(codes[r])
                else:
                    skipped.append(r)

        waiting = deferred[:]
        deferred.clear()
        i = 0
        while i < len(waiting) and len(batch) < self.batch_size:
            take(waiting[i:i + 1])
            i += 1
        skipped += waiting[i:]
        while len(batch) < self.batch_size and queue:
            space = self.batch_size - len(batch)
            fits = [(len(u), -j) for j, u in enumerate(itertools.islice(queue, LOOK_AHEAD)) if len(u) <= space]
            if fits:
                j = -max(fits)[1]
                unit = queue[j]
                del queue[j]
                take(unit)
            else:
                unit = queue[0]
                queue[0] = unit[space:]
                take(unit[:space])
        deferred += skipped
        return batch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def model_embedder(model: Any, batch_size: int = 64) -> Embed:
    """Texts -> normalised embeddings with ``model`` as it is now (its train / eval mode kept)."""

    def embed(texts: list[str]) -> np.ndarray:
        training = model.training
        try:
            with torch.no_grad():
                return np.asarray(model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                               normalize_embeddings=True, show_progress_bar=False))
        finally:
            model.train(training)

    return embed


def hard_batch_sampler(model: Any, cluster_size: int = 8, recluster_every: int = 0) -> Callable[..., HardBatchSampler]:
    """What ``SentenceTransformerTrainingArguments(batch_sampler=...)`` takes: builds a
    :class:`HardBatchSampler` whose clusters come from ``model`` (the student, re-read at each refresh)."""
    return partial(HardBatchSampler, embed=model_embedder(model), cluster_size=cluster_size,
                   recluster_every=recluster_every)
