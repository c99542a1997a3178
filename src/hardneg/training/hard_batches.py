"""Hard batches (NGAME): mini-batches built from clusters of similar queries, so that the other
rows of a batch are hard in-batch negatives for each query.

The queries (the distinct texts of the first text column, ``anchor``) are embedded and split into
clusters of ``cluster_size`` queries by recursive balanced 2-means (each node split by faiss
k-means, seeded, then balanced: cut at a multiple of ``cluster_size`` by which centroid the queries
lean to), so every cluster holds exactly ``cluster_size`` queries except one. Each pass over the
table serves whole clusters, in a seeded random order that changes with the epoch. A query with
several positives has one row per positive: its rows get times spread evenly over the pass and the
pass is cut into windows of about one row per query; a window's rows, in the clustering tree's leaf
order (neighbours are alike), are cut into units of ``cluster_size`` rows, so a query's rows are far
apart. With one row per query, no text shared by two rows and ``batch_size`` a multiple of
``cluster_size``, every batch is a union of whole clusters.

As with sentence-transformers' ``NO_DUPLICATES`` sampler, a batch never holds the same text twice
(any text column: query, positive or negative). A row whose text is already in its unit waits for
the next unit of its window (its neighbour in the tree); a row whose text is already in the batch is
deferred to the next batch, which takes it first. A batch is filled with the next whole unit that
fits (else the largest of the next few, else a split unit), so batches are full except at the end of
a pass, and a batch is short only when every row left clashes with it. On real data similar queries
often share positives and mined negatives, and this rule keeps exactly those apart.

With ``recluster_every`` = N > 0 the queries with rows left in the pass are embedded again with the
current model (the student being trained) every N batches served, and those rows are re-clustered
and re-ordered, as NGAME refreshes its clusters from the encoder being trained. The loader draws a
batch ahead of the step that uses it, so a refresh sees the model about one step earlier. With 0 the
queries are embedded and clustered once, with the model before its first step. k-means runs on one
thread (the nodes are small), so the clusters do not depend on the machine's thread count.

Paper: K. Dahiya, N. Gupta, D. Saini, A. Soni, Y. Wang, K. Dave, J. Jiao, Gururaj K, P. Dey,
A. Singh, D. Hada, V. Jain, B. Paliwal, A. Mittal, S. Mehta, R. Ramjee, S. Agarwal, P. Kar, M. Varma.
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


def balanced_clusters(emb: np.ndarray, cluster_size: int, seed: int = 0, iterations: int = 10) -> np.ndarray:
    """A cluster number per row of ``emb``: recursive balanced 2-means. Each node is split in two by
    faiss k-means (seeded, spherical), then refined by balanced 2-means: the rows sorted by (similarity
    to centroid 1 - similarity to centroid 0) are cut at a multiple of ``cluster_size``, the centroids
    become the two halves' means, until the cut is stable. Every cluster holds exactly
    ``cluster_size`` rows but one (the remainder, numbered last); clusters are numbered in the tree's
    leaf order, so neighbouring numbers are neighbouring clusters."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # small nodes: one thread is faster, and the result cannot depend on it
    try:
        return _bisect(np.ascontiguousarray(emb, dtype=np.float32), cluster_size, seed, iterations)
    finally:
        faiss.omp_set_num_threads(threads)


def _bisect(x: np.ndarray, cluster_size: int, seed: int, iterations: int) -> np.ndarray:
    import faiss

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
        centroids, left, cut = np.asarray(km.centroids), (m // 2) * cluster_size, None
        for _ in range(iterations):
            s = x[idx] @ centroids.T
            order = np.argsort(s[:, 1] - s[:, 0], kind="stable")
            side = np.zeros(idx.size, dtype=bool)
            side[order[left:]] = True
            if cut is not None and np.array_equal(side, cut):
                break
            cut = side
            centroids = np.stack([x[idx[~side]].mean(axis=0), x[idx[side]].mean(axis=0)])
        stack += [idx[order[left:]], idx[order[:left]]]
    return labels


def take_fitting(rows: list[int], batch: list[int], seen: set[int], codes: list[list[int]], batch_size: int) -> list[int]:
    """Append to ``batch`` the ``rows``, in order, that fit: while it has room, each row none of whose text
    codes is in ``seen`` (the batch's codes, updated). Returns the rows left, in order: those that clashed,
    then those not reached once the batch was full."""
    left: list[int] = []
    for i, r in enumerate(rows):
        if len(batch) == batch_size:
            return left + rows[i:]
        if seen.isdisjoint(codes[r]):
            batch.append(r)
            seen.update(codes[r])
        else:
            left.append(r)
    return left


def text_codes(dataset: Any, columns: list[str]) -> np.ndarray:
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
        self.codes = text_codes(dataset, self.text_columns)
        self._code_lists = self.codes.tolist()
        first, self.query_of_row = np.unique(self.codes[:, 0], return_index=True, return_inverse=True)[1:]
        self.query_texts = [str(t) for t in dataset.select(first)[self.text_columns[0]]]
        self.cluster_of_query = np.full(len(first), -1, dtype=np.int64)
        self.tree_position = np.full(len(first), -1, dtype=np.int64)
        self.served = 0  # batches handed out, over all passes
        self.refreshes = 0  # times the queries were embedded and clustered
        self._refreshed_at = -1
        self._partial = True  # the clusters cover only some queries (or none yet)

    def _recluster(self, queries: np.ndarray) -> None:
        """Embed ``queries`` with the model as it is now and cluster them; ``tree_position`` is each
        query's place in the clustering tree's leaf order (neighbours are alike)."""
        emb = np.asarray(self.embed([self.query_texts[i] for i in queries]), dtype=np.float32)
        labels = balanced_clusters(emb, self.cluster_size, self.seed)
        self.cluster_of_query[:] = -1
        self.cluster_of_query[queries] = labels
        self.tree_position[:] = -1
        self.tree_position[queries[np.argsort(labels, kind="stable")]] = np.arange(queries.size)
        self._partial = queries.size < self.cluster_of_query.size
        self.refreshes += 1
        self._refreshed_at = self.served

    def units(self, rows: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
        """``rows`` as units in serving order. Each query's rows get times spread evenly over the pass
        (its j-th row, in a random order, at (j + u) / m for m rows, u uniform), and the pass is cut into
        windows of about one row per query. A window's rows, in the clustering tree's leaf order, are
        cut into units of ``cluster_size`` rows that share no text (:meth:`_cut_all`). With one row per
        query there is one window and, without shared texts, its units are the clusters. The units of
        a window are served in a random order; the rows of a unit are shuffled."""
        q = self.query_of_row[rows]
        tie = rng.permutation(rows.size)
        by_query = np.lexsort((tie, q))
        qs = q[by_query]
        first = np.r_[True, qs[1:] != qs[:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(rows.size), 0))
        rank = np.empty(rows.size, dtype=np.int64)
        rank[by_query] = np.arange(rows.size) - start
        count = np.bincount(q, minlength=self.query_of_row.max() + 1)
        time = (rank + rng.random(count.size)[q]) / count[q]
        windows = max(1, round(rows.size / int(first.sum())))
        window = np.minimum((time * windows).astype(np.int64), windows - 1)
        key = np.column_stack([self.tree_position[q], tie])  # tree order, then the shuffle
        by_window = np.argsort(window, kind="stable")
        bounds = np.searchsorted(window[by_window], np.arange(windows + 1))
        units: list[list[int]] = []
        for w in range(windows):  # one iteration per window (~ rows per query)
            cut = self._cut_all(rows, by_window[bounds[w]:bounds[w + 1]], key)
            units += [cut[i] for i in rng.permutation(len(cut))]
        return [[u[i] for i in rng.permutation(len(u))] for u in units]

    def _cut_all(self, rows: np.ndarray, members: np.ndarray, key: np.ndarray) -> list[list[int]]:
        """``rows[members]`` in ``key`` order cut by :meth:`_cut`, again on the rows left waiting,
        until every row is in a unit."""
        units: list[list[int]] = []
        while members.size:
            cut, waiting = self._cut(rows[members[np.lexsort(key[members].T[::-1])]].tolist())
            units += cut
            members = members[np.isin(rows[members], waiting)]
        return units

    def _cut(self, ordered: list[int]) -> tuple[list[list[int]], list[int]]:
        """``ordered`` rows cut into consecutive units of ``cluster_size`` that share no text. A row whose
        text is already in its unit waits for the next unit (its neighbour in the order), tried first
        there; the rows still waiting at the end are returned as moved."""
        units: list[list[int]] = []
        unit: list[int] = []
        seen: set[int] = set()
        held: list[int] = []
        for r in ordered:
            if len(unit) == self.cluster_size:
                units.append(unit)
                unit, seen, waiting, held = [], set(), held, []
                for w in waiting:
                    if len(unit) < self.cluster_size and seen.isdisjoint(self._code_lists[w]):
                        unit.append(w)
                        seen.update(self._code_lists[w])
                    else:
                        held.append(w)
                if len(unit) == self.cluster_size:  # the held rows filled it: hold this row in turn
                    held.append(r)
                    continue
            if seen.isdisjoint(self._code_lists[r]):
                unit.append(r)
                seen.update(self._code_lists[r])
            else:
                held.append(r)
        return [u for u in [*units, unit] if u], held

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        rows = np.arange(len(self.dataset), dtype=np.int64)
        if rows.size == 0:
            return
        if self._partial:
            self._recluster(np.unique(self.query_of_row))
        queue = deque(self.units(rows, rng))
        pool: list[int] = []  # rows deferred from a batch that held one of their texts
        codes = self._code_lists
        while queue or pool:
            due = self.recluster_every and self.served % self.recluster_every == 0
            if due and self._refreshed_at != self.served:
                remaining = np.array(pool + [r for u in queue for r in u], dtype=np.int64)
                self._recluster(np.unique(self.query_of_row[remaining]))
                queue, pool = deque(self.units(remaining, rng)), []
            batch = self._fill(queue, pool, codes)
            if len(batch) < self.batch_size and self.drop_last:
                continue
            self.served += 1
            yield batch

    def _fill(self, queue: deque[list[int]], pool: list[int], codes: list[list[int]]) -> list[int]:
        """One batch: first the rows deferred from earlier batches (those that fit), then the units in
        order: the next unit if it fits, else the largest of the next ``LOOK_AHEAD`` that fits, else the
        next unit split (its rest stays first in the queue). A row with a text already in the batch is
        deferred. ``queue`` and ``pool`` (the deferred rows) are updated in place."""
        batch: list[int] = []
        seen: set[int] = set()
        clash: list[int] = []

        def take(rows: list[int]) -> None:
            clash.extend(take_fitting(rows, batch, seen, codes, self.batch_size))

        waiting = pool[:]
        pool.clear()
        take(waiting)
        while len(batch) < self.batch_size and queue:
            space = self.batch_size - len(batch)
            fits = [(len(u), -j) for j, u in enumerate(itertools.islice(queue, LOOK_AHEAD)) if len(u) <= space]
            if len(queue[0]) <= space or fits:
                j = 0 if len(queue[0]) <= space else -max(fits)[1]
                unit = queue[j]
                del queue[j]
                take(unit)
            else:  # split the next unit; its rest waits at the end of the look-ahead, a filler for a later gap
                unit = queue.popleft()
                queue.insert(min(len(queue), LOOK_AHEAD - 1), unit[space:])
                take(unit[:space])
        pool += clash
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
