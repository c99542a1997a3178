"""A score rule of mining's on LLM-written negatives: the positive-aware check that mined negatives pass,
applied to generated ones before they are kept.

A dense teacher (the packaged all-MiniLM-L6-v2 unless another model is given) scores each passage with
the query it was written for, and the query with each of its real positives; the rule (``percpos:0.95``,
``margin:0.05``, ``maxscore:S``, ``minscore:S``, as in :mod:`hardneg.decisions.filters`, against the
query's lowest positive score) drops a passage the teacher finds as relevant as a positive. Why it is
needed: on SciFact, gemma-3-270m's passages were scored above the query's own positive 79% of the time by
the base MiniLM (``benchmarks/generated_negatives_stats.py``), and training on them unfiltered cost the
student ~25 points of nDCG@10 (docs/benchmarks.md, "Generate"). A mined negative never gets that far:
``percpos:0.95`` removes it at mining time. This is the cheap first check; a trained judge
(``--judge cross-encoder:PATH``) or an LLM judge reads the passages it keeps.

Embeddings go through the cache under the teacher's fingerprint, as mining's do.

Example::

    from hardneg.generation.negatives import generate_negatives

    res = generate_negatives(dataset="data/scifact", llm="gemma3-270m", filter="percpos:0.95",
                             out="data/scifact-negs")
    res.manifest["counts"]["dropped"]  # SciFact generated queries, gemma3-270m: {"percpos": 468}
"""

from __future__ import annotations

import numpy as np

from ..candidates.teachers.dense import DenseTeacher
from ..decisions.filters import SCORE_KINDS, FilterSpec, positive_reference, threshold_drops
from ..errors import ConfigError
from ..progress import SILENT, Reporter
from ..runs.cache import Cache


def parse_score_rule(text: str) -> FilterSpec:
    """One score rule with a number (``percpos:0.95``): the rules that compare a teacher score with the
    query's positives or with a bound. Similarity rules and ``auto`` need a corpus to work on; not here."""
    specs = FilterSpec.parse(text)
    if len(specs) != 1 or specs[0].kind not in SCORE_KINDS or specs[0].auto:
        raise ConfigError(f"filter '{text}': give one score rule with a number ({', '.join(k + ':X' for k in SCORE_KINDS)})")
    return specs[0]


def filter_teacher(model: str | None, cache: Cache) -> DenseTeacher:
    """The dense teacher, resolved (model folder found and fingerprinted) but not loaded: its
    ``fingerprint()`` enters the folder's key before anything is generated."""
    teacher = DenseTeacher(model=model)
    teacher.resolve(cache)
    return teacher


def score_rule(spec: FilterSpec, teacher: DenseTeacher, queries: list[str], positives: list[list[str]],
               passages: list[str], passage_query: np.ndarray, cache: Cache,
               reporter: Reporter = SILENT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``spec`` to passages, each written for one query; each query and positive is encoded once.

    Args:
        spec: the rule (see :func:`parse_score_rule`).
        teacher: from :func:`filter_teacher`.
        queries: the queries the passages were written for.
        positives: each query's positive texts (at least one each).
        passages: the passages.
        passage_query: each passage's row in ``queries``.
        cache: where the embeddings are kept.
        reporter: progress.

    Returns:
        (dropped mask, the teacher's score of each passage with its query, its query's lowest positive
        score), aligned with ``passages``.
    """
    if not passages:
        return np.zeros(0, dtype=bool), np.zeros(0), np.zeros(0)
    q = teacher.embed(queries, str(teacher.query_prompt), cache, "filter queries", reporter)[:]
    d = teacher.embed(passages, str(teacher.doc_prompt), cache, "filter passages", reporter)[:]
    pos = teacher.embed([t for ps in positives for t in ps], str(teacher.doc_prompt), cache, "filter positives",
                        reporter)[:]
    rows = np.repeat(np.arange(len(queries)), [len(ps) for ps in positives])
    ref = positive_reference(rows, np.einsum("ij,ij->i", q[rows], pos).astype(np.float64), len(queries))
    score = np.einsum("ij,ij->i", q[passage_query], d).astype(np.float64)
    ref = ref[passage_query]
    return threshold_drops(spec, score[:, None], ref)[:, 0], score, ref
