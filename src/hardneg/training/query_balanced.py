"""Query-balanced batches: each pass over the table serves every query once, with one of its positives
drawn at random, as DPR, Tevatron and FlagEmbedding sample their training groups.

hardneg's training tables have one row per (query, positive). Sampled by row, as sentence-transformers'
samplers do, a query weighs as much as it has positives. On NFCorpus the train qrels give a median query
18 positives and the largest 1,363; a tenth of the queries hold 56% of the qrels, so a budget of a few
thousand rows trains mostly on a few broad queries and never shows the model most of the others. Here a
pass draws, for each query, one of its rows uniformly (seeded by ``seed`` and the epoch, so another epoch
draws other positives), shuffles the chosen rows and cuts them into batches. A pass has one row per
query, so an epoch is ``ceil(queries / batch_size)`` batches, and every query is equally likely to be in
a batch whatever its number of positives. On a table with one row per query (SciFact, nearly) it serves
the same rows as ``NO_DUPLICATES``, in another order.

As with ``NO_DUPLICATES``, a batch never holds the same text twice (any text column: query, positive or
negative): a row whose text is already in the batch waits for the next batch, which takes it first. Label
columns are carried along, not compared.

Papers: V. Karpukhin, B. Oguz, S. Min, P. Lewis, L. Wu, S. Edunov, D. Chen, W. Yih. "Dense Passage
Retrieval for Open-Domain Question Answering", EMNLP 2020, arXiv:2004.04906 (one positive per question
and batch). L. Gao, X. Ma, J. Lin, J. Callan. "Tevatron: An Efficient and Flexible Toolkit for Dense
Retrieval", arXiv:2203.05765 (training groups of one query, a positive drawn from its positives, and
its negatives).

Inputs: any sentence-transformers training table whose first text column is the query (pairs,
triplets, n-tuples), one row per (query, positive).

Example::

    from sentence_transformers import SentenceTransformerTrainingArguments
    from hardneg.training.query_balanced import QueryBalancedBatchSampler

    args = SentenceTransformerTrainingArguments(
        output_dir="out", per_device_train_batch_size=32, batch_sampler=QueryBalancedBatchSampler)

or, through hardneg: ``hardneg train --run runs/nfcorpus --out m --query-balanced``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

from .hard_batches import take_fitting, text_codes


class QueryBalancedBatchSampler(DefaultBatchSampler):
    """One random row per query per pass, in batches without a repeated text (see the module).

    Args:
        dataset: the training table (a ``datasets.Dataset``).
        batch_size, drop_last, valid_label_columns, generator, seed: as the trainer passes them
            (label columns are not compared; ``seed`` and the epoch seed the draw and the order).
    """

    def __init__(self, dataset: Any, batch_size: int, drop_last: bool, valid_label_columns: list[str] | None = None,
                 generator: torch.Generator | None = None, seed: int = 0) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        skip = set(valid_label_columns or ()) | {"dataset_name"}
        columns = [c for c in dataset.column_names if c not in skip]
        self.codes = text_codes(dataset, columns)
        self._code_lists = self.codes.tolist()
        self.query_of_row = np.unique(self.codes[:, 0], return_inverse=True)[1].reshape(-1)
        self.num_queries = int(self.query_of_row.max()) + 1 if len(self.query_of_row) else 0

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One row per query, chosen uniformly among its rows, in a random order."""
        order = rng.permutation(len(self.query_of_row))
        first = np.unique(self.query_of_row[order], return_index=True)[1]  # each query's first row in the order
        return rng.permutation(order[first])

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        pending = self.draw(rng).tolist()
        codes = self._code_lists
        while pending:
            batch: list[int] = []
            pending = take_fitting(pending, batch, set(), codes, self.batch_size)
            if len(batch) < self.batch_size and self.drop_last:
                continue
            yield batch

    def __len__(self) -> int:
        n = self.num_queries
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
