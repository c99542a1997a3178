"""The round-trip filter: a generated query is kept only if a retriever, searching the whole corpus
with it, ranks the query's source document in its top ``k`` (Promptagator's round-trip consistency,
Dai et al., ICLR 2023, arXiv:2209.11755; InPars-v2, Jeronymo et al., 2023, arXiv:2301.01820, filters
with a reranker instead). A query too vague or off-topic to find its own document is a poor training
query: its "positive" is one of many, or none.

Any hardneg teacher searches (``bm25`` by default: cheap, and independent of the dense model being
trained; ``dense[:MODEL]``, ``hybrid`` ...). A rank is 1 + the number of other documents scoring at least as high as the source
(ties count against the query: a query that matches no word of any document ties everywhere and is
dropped); 0 means the source is not in the top ``k``.

The default depth of ``hardneg generate queries`` is ``k = 3`` with ``bm25`` over the whole corpus: strict
enough to drop queries that copy the prompt's examples or drift off the document, loose enough for the
short questions a small model writes about long abstracts (on 20 SciFact abstracts, 26 of the packaged
Gemma-3-270m's 40 queries passed). With a strong generator or a dense teacher, ``k = 1`` is the strictest
choice.

Example::

    rank, score = roundtrip_ranks(corpus, ["what starts the great fire"], np.array([3]), "bm25", k=3,
                                  cache_dir="~/.cache/hardneg")
    kept = (rank >= 1)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..candidates.build import build_teacher
from ..collection import Collection, Qrels
from ..config import MineConfig
from ..progress import SILENT, Reporter
from ..runs.cache import Cache


def roundtrip_ranks(corpus: Collection, queries: list[str], source: np.ndarray, teacher: str, k: int,
                    cache_dir: str | Path, reporter: Reporter = SILENT) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the rank (1..k, or 0 beyond ``k``) of its source document (a row of ``corpus``) and
    the teacher's score for the pair.

    Args:
        corpus: the documents searched (its queries and qrels are not used).
        queries: the generated query texts.
        source: per query, the row in ``corpus`` of the document it was written for.
        teacher: a teacher spec, as ``mine --teacher`` takes it.
        k: the depth searched.
        cache_dir: where a dense teacher's embeddings are cached.
        reporter: progress bars.
    """
    n = len(queries)
    if n == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float64)
    ids = np.array([f"{i:09d}" for i in range(n)], dtype=object)
    empty = np.zeros(0, dtype=np.int64)
    col = Collection(corpus.doc_ids, corpus.doc_texts, ids, list(queries),
                     Qrels(empty, empty, np.zeros(0, dtype=np.int32)), {"kind": "generated"})
    t = build_teacher(MineConfig(dataset="generated", teacher=teacher))
    qidx = np.arange(n, dtype=np.int64)
    t.prepare(col, qidx, Cache(cache_dir), reporter)
    src = np.asarray(source, dtype=np.int64)
    top, top_scores = t.search(qidx, k + 1, reporter)  # one deeper: a tie at the k-th place shows
    score = t.pair_scores(qidx, src)
    found = (top == src[:, None]).any(axis=1)
    ties = ((top_scores >= score[:, None]) & (top != src[:, None]) & (top >= 0)).sum(axis=1)
    rank = np.where(found & (ties + 1 <= k), ties + 1, 0).astype(np.int32)
    return rank, score
