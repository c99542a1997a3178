"""Graded synthetic documents (SyCL: "Beyond Contrastive Learning: Synthetic Data Enables List-wise
Training with Multiple Levels of Relevance", Esfandiarpoor et al., 2025, arXiv:2503.23239): for each
query of a labelled collection, an LLM writes documents meant for each relevance level (3 answers the
query fully, 2 in part, 1 is on its topic without answering it, 0 is on topic but of no use), and the
query's graded list (real positives + synthetic documents at their levels) trains a list-wise loss
(``hardneg train --loss graded-wasserstein``).

The output is a BEIR folder that every loader reads as it is:

- ``corpus.jsonl``: the collection's documents, then the kept synthetic documents, each with the id
  ``gen-graded:<query id>:<level>:<sample>`` (:mod:`hardneg.collection.synthetic`: the miner never
  offers one as a candidate) and ``metadata: {"synthetic": true, "query_id", "level", ...}``;
- ``queries.jsonl``: the queries written for;
- ``qrels/<split>.tsv``: their real judgements (positives at ``real_grade``, see
  :class:`~hardneg.generation.graded_config.GradedGenConfig`; other rows as they are) and each
  synthetic document judged at its level for its own query only (level 0 as a grade-0 row: judged
  non-relevant, which the graded training table puts first among the query's negatives);
- ``generation.parquet``: one row per document asked: the text, kept or the reason it was dropped
  (``empty``, ``copy``, ``format``, ``error``, ``duplicate``), attempts and seed, the generator and its
  fingerprint, the prompt id, the sampling settings, the tokens it cost;
- ``manifest.json``: settings, the token estimate, counts, timings.

Every completion is cached under the generator's identity, so a killed run asked again asks only for
what it had not finished; the folder is written in one rename, never half; the same inputs and seed
give the same bytes.

Then: ``hardneg mine --dataset OUT`` and ``hardneg train --run RUN --loss graded-wasserstein``."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..collection import Collection, load
from ..collection.synthetic import synthetic_id
from ..errors import ConfigError, HardnegWarning
from ..progress import SILENT, Reporter
from ..runs.files import staged_dir, write_json, write_text
from ..runs.fingerprint import settings_key
from ..runs.manifest import versions
from .batch import generate
from .cache import CompletionCache
from .completion import Completion, Sampling
from .documents import bad_document
from .graded_config import GradedGenConfig
from .graded_prompts import GradedPrompt
from .merge import same_doc_duplicates
from .output import GeneratedFolder, finished, open_generator

KIND = "generated-graded"
SYNTHETIC_KIND = "graded"


class GradedDocuments(GeneratedFolder):
    """A folder written by :func:`generate_graded`: its path, manifest and provenance table."""


def real_grades(col: Collection, grades: np.ndarray, real_grade: int | None, top: int) -> tuple[np.ndarray, str]:
    """The grades the real judgements ``grades`` are written with, and the rule used: ``given`` (every
    positive at ``real_grade``), ``binary->top`` (the collection's positives are all grade 1: they get
    the top level ``top``), or ``kept``. Grade-0 rows stay 0."""
    pos = grades > 0
    if real_grade is not None:
        return np.where(pos, real_grade, grades), "given"
    if np.all(col.qrels.grade[col.qrels.grade > 0] == 1) and top > 1:
        return np.where(pos, top, grades), "binary->top"
    return grades, "kept"


def generate_graded(config: GradedGenConfig | None = None, *, reporter: Reporter = SILENT, overwrite: bool = False,
                    **options: Any) -> GradedDocuments:
    """Write graded synthetic documents for a collection's queries as a BEIR folder (see the module's
    docstring).

    Args:
        config: the settings, or give them as keyword arguments (:class:`GradedGenConfig` fields).
        reporter: progress bars and the token estimate printed before the start.
        overwrite: replace a folder at ``out`` written with other settings (one with the same
            settings is returned as it is).

    Returns:
        The folder, its manifest and provenance table.

    Example::

        from hardneg.generation import generate_graded

        res = generate_graded(dataset="data/scifact", llm="http://localhost:8000/v1", levels="3,2,1,0",
                              sample_queries=200, seed=0, out="data/scifact-graded")
        # then: hardneg mine --dataset data/scifact-graded --out runs/graded
        #       hardneg train --run runs/graded --loss graded-wasserstein --out models/sycl
    """
    cfg = config if config is not None else GradedGenConfig(**options)
    t0 = time.perf_counter()
    col = load(cfg.dataset, cfg.split)
    judged = col.judged_queries()
    if judged.size == 0:
        raise ConfigError(f"dataset: {cfg.dataset} (split '{cfg.split}') has no query with a positive")
    if cfg.sample_queries is not None and cfg.sample_queries < judged.size:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(judged, cfg.sample_queries, replace=False))
    else:
        rows = judged
    gen, identity, cache_root = open_generator(cfg)  # a dead endpoint stops here, before anything is written
    prompt = GradedPrompt()
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_tokens)
    fingerprint = settings_key(KIND, cfg.output_settings(), col.qrels_fingerprint(), identity, prompt.prompt_id)
    out = Path(cfg.out)
    done = finished(out, fingerprint, overwrite, "documents", KIND)
    if done is not None:
        return GradedDocuments(out, *done)

    levels = np.array(cfg.levels, dtype=np.int32)
    nq, nl, per = rows.size, levels.size, cfg.per_level
    prompts = [prompt.render(col.query_texts[q], int(lv)) for q in rows.tolist() for lv in cfg.levels]
    slot_prompt = np.repeat(np.arange(nq * nl), per)
    slot_query = rows[slot_prompt // nl]
    slot_level = levels[slot_prompt % nl]
    sample = np.tile(np.arange(per, dtype=np.int32), nq * nl)
    qids = col.query_ids[slot_query]
    names = [f"{q}\x00{lv}\x00{k}" for q, lv, k in zip(qids.tolist(), slot_level.tolist(), sample.tolist())]
    doc_ids = np.array([synthetic_id(SYNTHETIC_KIND, q, lv, k) for q, lv, k in
                        zip(qids.tolist(), slot_level.tolist(), sample.tolist())], dtype=object)
    taken = np.isin(doc_ids, col.doc_ids)
    if taken.any():
        raise ConfigError(f"dataset: {cfg.dataset} already holds the document '{doc_ids[taken][0]}' (generate from "
                          "the original collection, not from a generated folder)")
    cache = CompletionCache(cache_root / "generate" / f"{identity}.sqlite")
    examples = prompt.passages()

    def check(slot: int, c: Completion) -> str:
        return bad_document(c, col.query_texts[int(slot_query[slot])], examples, cfg.min_words)

    t1 = time.perf_counter()
    g = generate(gen, cache, prompts, slot_prompt, names, check, sampling, seed=cfg.seed, attempts=cfg.attempts,
                 concurrency=cfg.concurrency, max_error_rate=cfg.llm_max_error_rate, reporter=reporter)
    t2 = time.perf_counter()
    reason = g.reason.copy()
    kept = reason == ""
    dup = same_doc_duplicates(slot_query, g.text, kept)  # the same text twice for one query: kept once
    reason[dup], kept = "duplicate", kept & ~dup

    settings = json.dumps(sampling.as_dict(), sort_keys=True)
    n = len(names)
    table = pa.table({
        "doc_id": pa.array(doc_ids.tolist(), pa.string()),
        "query_id": pa.array(qids.tolist(), pa.string()),
        "level": pa.array(slot_level, pa.int32()),
        "sample": pa.array(sample, pa.int32()),
        "text": pa.array(g.text, pa.string()),
        "kept": pa.array(kept),
        "reason": pa.array(reason.tolist(), pa.string()),
        "attempts": pa.array(g.attempts, pa.int32()),
        "seed": pa.array(g.seed, pa.int64()),
        "generator": pa.array([gen.label] * n, pa.string()),
        "generator_fingerprint": pa.array([identity] * n, pa.string()),
        "prompt_id": pa.array([prompt.prompt_id] * n, pa.string()),
        "settings": pa.array([settings] * n, pa.string()),
        "prompt_tokens": pa.array(g.prompt_tokens, pa.int64()),
        "completion_tokens": pa.array(g.completion_tokens, pa.int64()),
    })

    # the qrels: the real judgements of the queries written for, then each kept document at its level
    qr = col.qrels
    real = np.isin(qr.query_idx, rows)
    grades, rule = real_grades(col, qr.grade[real], cfg.real_grade, max(cfg.levels))
    keep = np.flatnonzero(kept)
    qrels = sorted([*zip(col.query_ids[qr.query_idx[real]].tolist(), col.doc_ids[qr.doc_idx[real]].tolist(),
                         grades.tolist()),
                    *zip(qids[keep].tolist(), doc_ids[keep].tolist(), slot_level[keep].tolist())])
    synthetic = sorted(keep.tolist(), key=lambda i: doc_ids[i])
    dropped = {r: int((reason == r).sum()) for r in sorted(set(reason.tolist())) if r}
    manifest = {
        "kind": KIND, "fingerprint": fingerprint, "config": cfg.model_dump(mode="json", exclude={"cache_dir"}),
        "dataset": {"source": json.loads(json.dumps(col.source, default=str)), "split": cfg.split,
                    "docs": col.num_docs, "judged_queries": int(judged.size), "written_for": int(nq),
                    "real_grades": {"rule": rule, "grades": {str(a): int(b) for a, b in
                                                             sorted(set(zip(qr.grade[real].tolist(),
                                                                            grades.tolist())))}},
                    "warnings": col.warnings},
        "generator": gen.describe(), "prompt": prompt.describe(), "sampling": sampling.as_dict(), "seed": cfg.seed,
        "levels": list(cfg.levels), "estimate": g.plan, "generation": g.counts,
        "counts": {"asked": n, "kept": int(kept.sum()), "dropped": dropped,
                   "kept_per_level": {str(int(lv)): int((kept & (slot_level == lv)).sum()) for lv in levels},
                   "queries": int(nq), "real_qrels": int(real.sum()), "synthetic_qrels": int(keep.size)},
        "timings": {"check": round(t1 - t0, 3), "generate": round(t2 - t1, 3)},
        "versions": versions(),
    }
    if not keep.size:
        warnings.warn(f"{out}: no generated document was kept ({', '.join(f'{k} {v}' for k, v in dropped.items())})",
                      HardnegWarning, stacklevel=2)
    with staged_dir(out, overwrite=True) as tmp:
        records = [{"_id": d, "title": "", "text": t} for d, t in zip(col.doc_ids.tolist(), col.doc_texts)]
        records += [{"_id": doc_ids[i], "title": "", "text": g.text[i],
                     "metadata": {"synthetic": True, "generator": SYNTHETIC_KIND, "query_id": str(qids[i]),
                                  "level": int(slot_level[i]), "sample": int(sample[i])}} for i in synthetic]
        write_text(tmp / "corpus.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        write_text(tmp / "queries.jsonl", "".join(json.dumps({"_id": col.query_ids[q], "text": col.query_texts[q]},
                                                             ensure_ascii=False) + "\n" for q in rows.tolist()))
        write_text(tmp / "qrels" / f"{cfg.split}.tsv", "query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
        pq.write_table(table, tmp / "generation.parquet")
        write_json(tmp / "manifest.json", manifest)
    return GradedDocuments(out, manifest, table)
