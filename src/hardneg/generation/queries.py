"""Synthetic queries for a corpus without labels: N queries per document from a few-shot prompt,
bad output retried then dropped, near-identical queries merged, a round-trip filter, and a BEIR folder
that ``hardneg mine --dataset`` reads as it is (InPars, Bonifacio et al., SIGIR 2022,
arXiv:2202.05144; Promptagator, Dai et al., ICLR 2023, arXiv:2209.11755; GPL, Wang et al., NAACL 2022,
arXiv:2112.07577, generates its queries the same way).

The folder holds ``corpus.jsonl`` (the input corpus, copied byte for byte: every document stays
searchable for mining negatives), ``queries.jsonl`` (the kept queries), ``qrels/train.tsv`` (each query's
source document as its positive, grade 1), ``generation.parquet`` (one row per query asked: the text,
kept or the reason it was dropped, the generator and its fingerprint, prompt id, sampling settings and
seed, round-trip rank and score) and ``manifest.json`` (settings, the token estimate, counts).

Every completion is cached under the generator's identity, so a killed run asked again asks only for
what it had not finished; the folder is written in one rename, never half."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..collection import Collection
from ..collection.builder import Builder, add_corpus
from ..collection.readers import read_jsonl
from ..errors import ConfigError, DataError, HardnegWarning
from ..progress import SILENT, Reporter
from ..runs.files import sha256_file, staged_dir, write_json, write_text
from ..runs.fingerprint import settings_key
from ..runs.manifest import versions
from .batch import generate
from .cache import CompletionCache
from .completion import Completion, Sampling
from .config import QueryGenConfig
from .merge import merged_query, same_doc_duplicates
from .output import GeneratedFolder, finished, open_generator
from .prompts import DEFAULT_EXAMPLES, FewShotPrompt, examples_from
from .roundtrip import roundtrip_ranks
from .validation import bad_output

KIND = "generated-queries"


class GeneratedQueries(GeneratedFolder):
    """A folder written by :func:`generate_queries`: its path, manifest and provenance table."""


def corpus_file(path: str | Path) -> Path:
    """``corpus.jsonl`` itself, or the one in a BEIR folder."""
    p = Path(path)
    f = p / "corpus.jsonl" if p.is_dir() else p
    if not f.is_file():
        raise DataError(f, "corpus file not found (give a corpus.jsonl or a BEIR folder holding one)")
    return f


def read_corpus(path: Path) -> Collection:
    """The documents of a BEIR ``corpus.jsonl``, checked as every loader checks them (ids sorted)."""
    b = Builder()
    add_corpus(b, read_jsonl(path), path)
    return b.build({"kind": "corpus", "path": str(path.resolve())})


def generate_queries(config: QueryGenConfig | None = None, *, reporter: Reporter = SILENT, overwrite: bool = False,
                     **options: Any) -> GeneratedQueries:
    """Write synthetic queries for a corpus as a BEIR folder (see the module's docstring).

    Args:
        config: the settings, or give them as keyword arguments (:class:`QueryGenConfig` fields).
        reporter: progress bars and the token estimate printed before the start.
        overwrite: replace a folder at ``out`` written with other settings (one with the same
            settings is returned as it is).

    Returns:
        The folder, its manifest and provenance table.

    Example::

        from hardneg.generation import generate_queries

        res = generate_queries(corpus="data/scifact", llm="gemma3-270m", per_doc=2, sample_docs=200,
                               seed=0, out="data/scifact-gen")
        # then: hardneg mine --dataset data/scifact-gen --out runs/gen
    """
    cfg = config if config is not None else QueryGenConfig(**options)
    t0 = time.perf_counter()
    source = corpus_file(cfg.corpus)
    corpus = read_corpus(source)
    n_docs = corpus.num_docs
    if cfg.sample_docs is not None and cfg.sample_docs < n_docs:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(n_docs, cfg.sample_docs, replace=False))
    else:
        rows = np.arange(n_docs)
    doc_ids = corpus.doc_ids[rows]
    gen, identity, cache_root = open_generator(cfg)  # a dead endpoint stops here, before anything is written

    if cfg.examples:
        examples = examples_from(cfg.examples, cfg.examples_split, cfg.num_examples, cfg.seed,
                                 set(doc_ids.tolist()))
        if not examples:
            raise ConfigError(f"examples: no labelled pairs in '{cfg.examples}' (split {cfg.examples_split}) "
                              "whose document is not one being written for")
        prompt = FewShotPrompt(examples, max_doc_chars=cfg.max_doc_chars,
                               source={"kind": "labelled", "path": cfg.examples, "split": cfg.examples_split,
                                       "seed": cfg.seed})
    else:
        prompt = FewShotPrompt(DEFAULT_EXAMPLES[: cfg.num_examples], max_doc_chars=cfg.max_doc_chars)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_tokens)
    corpus_sha = sha256_file(source)
    fingerprint = settings_key(KIND, cfg.output_settings(), corpus_sha, identity, prompt.prompt_id)
    out = Path(cfg.out)
    done = finished(out, fingerprint, overwrite, "queries", KIND)
    if done is not None:
        return GeneratedQueries(out, *done)

    per = cfg.per_doc
    prompts = [prompt.render(corpus.doc_texts[r]) for r in rows.tolist()]
    slot_prompt = np.repeat(np.arange(rows.size), per)
    sample = np.tile(np.arange(per, dtype=np.int32), rows.size)
    slot_doc = rows[slot_prompt]
    names = [f"{d}\x00{j}" for d, j in zip(corpus.doc_ids[slot_doc].tolist(), sample.tolist())]
    cache = CompletionCache(cache_root / "generate" / f"{identity}.sqlite")

    def check(slot: int, c: Completion) -> str:
        return bad_output(c, corpus.doc_texts[int(slot_doc[slot])])

    t1 = time.perf_counter()
    g = generate(gen, cache, prompts, slot_prompt, names, check, sampling, seed=cfg.seed, attempts=cfg.attempts,
                 concurrency=cfg.concurrency, max_error_rate=cfg.llm_max_error_rate, reporter=reporter)
    t2 = time.perf_counter()
    reason = g.reason.copy()
    kept = reason == ""
    dup = same_doc_duplicates(slot_doc, g.text, kept)
    reason[dup], kept = "duplicate", kept & ~dup
    rank = np.full(len(names), -1, dtype=np.int32)  # -1: not searched
    score = np.full(len(names), np.nan, dtype=np.float64)
    if cfg.roundtrip_teacher is not None:
        idx = np.nonzero(kept)[0]
        rank[idx], score[idx] = roundtrip_ranks(corpus, [g.text[i] for i in idx], slot_doc[idx],
                                                cfg.roundtrip_teacher, cfg.roundtrip_k, cache_root, reporter)
        lost = kept & (rank == 0)
        reason[lost], kept = "roundtrip", kept & ~lost
    slot_ids = np.array([f"gq-{d}-{j}" for d, j in zip(corpus.doc_ids[slot_doc].tolist(), sample.tolist())],
                        dtype=object)
    query_id = merged_query(g.text, kept, slot_ids)
    t3 = time.perf_counter()

    settings = json.dumps(sampling.as_dict(), sort_keys=True)
    table = pa.table({
        "slot_id": pa.array(slot_ids.tolist(), pa.string()),
        "query_id": pa.array(query_id.tolist(), pa.string()),
        "doc_id": pa.array(corpus.doc_ids[slot_doc].tolist(), pa.string()),
        "sample": pa.array(sample, pa.int32()),
        "text": pa.array(g.text, pa.string()),
        "kept": pa.array(kept),
        "reason": pa.array(reason.tolist(), pa.string()),
        "attempts": pa.array(g.attempts, pa.int32()),
        "seed": pa.array(g.seed, pa.int64()),
        "generator": pa.array([gen.label] * len(names), pa.string()),
        "generator_fingerprint": pa.array([identity] * len(names), pa.string()),
        "prompt_id": pa.array([prompt.prompt_id] * len(names), pa.string()),
        "settings": pa.array([settings] * len(names), pa.string()),
        "roundtrip_teacher": pa.array([cfg.roundtrip_teacher or ""] * len(names), pa.string()),
        "roundtrip_rank": pa.array(rank, pa.int32()),
        "roundtrip_score": pa.array(score, pa.float64()),
        "prompt_tokens": pa.array(g.prompt_tokens, pa.int64()),
        "completion_tokens": pa.array(g.completion_tokens, pa.int64()),
    })
    first = {q: i for i, q in reversed(list(enumerate(query_id.tolist()))) if q}
    qids = sorted(first)
    pairs = sorted({(q, str(corpus.doc_ids[slot_doc[i]])) for i, q in enumerate(query_id.tolist()) if q})
    dropped = {r: int((reason == r).sum()) for r in sorted(set(reason.tolist())) if r}
    manifest = {
        "kind": KIND, "fingerprint": fingerprint, "config": cfg.model_dump(mode="json", exclude={"cache_dir"}),
        "corpus": {"path": str(source.resolve()), "sha256": corpus_sha, "docs": n_docs, "written_for": int(rows.size),
                   "warnings": corpus.warnings},
        "generator": gen.describe(), "prompt": prompt.describe(), "sampling": sampling.as_dict(), "seed": cfg.seed,
        "roundtrip": {"teacher": cfg.roundtrip_teacher, "k": cfg.roundtrip_k},
        "estimate": g.plan, "generation": g.counts,
        "counts": {"asked": len(names), "kept": int(kept.sum()), "queries": len(qids), "qrels": len(pairs),
                   "dropped": dropped},
        "timings": {"check": round(t1 - t0, 3), "generate": round(t2 - t1, 3), "filter": round(t3 - t2, 3)},
        "versions": versions(),
    }
    if not qids:
        warnings.warn(f"{out}: no generated query was kept ({', '.join(f'{k} {v}' for k, v in dropped.items())}); "
                      "the folder has no queries to mine", HardnegWarning, stacklevel=2)
    with staged_dir(out, overwrite=True) as tmp:
        shutil.copyfile(source, tmp / "corpus.jsonl")
        write_text(tmp / "queries.jsonl", "".join(json.dumps({"_id": q, "text": g.text[first[q]]}, ensure_ascii=False)
                                                  + "\n" for q in qids))
        write_text(tmp / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t1\n" for q, d in pairs))
        pq.write_table(table, tmp / "generation.parquet")
        write_json(tmp / "manifest.json", manifest)
    return GeneratedQueries(out, manifest, table)
