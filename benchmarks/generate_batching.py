"""In-process generation speed: llama.cpp one prompt at a time vs transformers in batches (``--llm hf:``).

``hardneg generate queries`` on a seeded sample of SciFact abstracts with the packaged Gemma-3-270m, the
round-trip filter off, once per backend and batch size, each with an empty completion cache (the converted
model is shared, so no run pays the one-time GGUF conversion). Prints, per run: seconds of generation,
requests, completion tokens per second, and whether the queries and provenance written are byte-identical to
those of the first transformers run (each row is sampled from its own seed, so only the numerics of a batch
can change a text), with the number of documents whose query text differs. A batch size given twice
(``--batches 1,32,32``) checks that the same batch size writes the same bytes again.

Run: python benchmarks/generate_batching.py [--docs 32] [--batches 1,4,8,16] [--out FILE.json]
     [--gguf PATH.gguf --no-llama-cpp]   (another GGUF model; on a machine without llama-cpp-python)
     [--dtype float32|bfloat16]          (not hardneg's own choice: float32 on a GPU, bfloat16 on a CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HARDNEG_SHARED_DATA", ROOT.parent / "shared" / "data"))


def load_as(dtype: str) -> None:
    """Load every transformers model of this process in ``dtype`` (its cache identity follows)."""
    import torch

    from hardneg.generation.transformers_lm import TransformersLM

    load = TransformersLM.load.__func__  # type: ignore[attr-defined]

    def load_cast(cls: type[TransformersLM], target: str, cache_dir: str | Path) -> TransformersLM:
        lm = load(cls, target, cache_dir)
        lm.model, lm.dtype = lm.model.to(getattr(torch, dtype)), dtype
        return lm

    TransformersLM.load = classmethod(load_cast)  # type: ignore[method-assign, assignment]


def main() -> None:
    from hardneg.generation import generate_queries

    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--batches", default="1,4,8,16")
    ap.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    ap.add_argument("--gguf", default=None, help="a GGUF model file [default: the packaged Gemma-3-270m]")
    ap.add_argument("--no-llama-cpp", action="store_true", help="transformers runs only")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="transformers' dtype [default: hardneg's own, bfloat16 on a GPU and float32 on a CPU]; the "
                    "others measure reproducibility (float32 on a GPU, bfloat16 on a CPU)")
    args = ap.parse_args()
    if args.dtype != "auto":
        load_as(args.dtype)
    batches = [int(b) for b in args.batches.split(",")]
    model = args.gguf or "gemma3-270m"
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp) / "shared"
        (shared / "models").mkdir(parents=True)
        runs = [] if args.no_llama_cpp else [("llama.cpp", model, 1)]
        runs += [(f"transformers, batch {b}", f"hf:{model}", b) for b in batches]
        # the one-time work first: the GGUF assembled, converted for transformers, and both loaded once
        warm = Path(tmp) / "warm"
        warm.mkdir()
        os.symlink(shared / "models", warm / "models")
        for _, llm, _ in runs[:2]:
            generate_queries(corpus=str(DATA / "scifact"), llm=llm, sample_docs=1, seed=99, roundtrip_teacher="none",
                             cache_dir=str(warm), out=str(Path(tmp) / f"warm-{llm.replace(':', '-')}"))
        rows, reference, by_batch = [], None, {}
        for name, llm, batch in runs:
            cache = Path(tmp) / f"cache-{len(rows)}"
            cache.mkdir()
            os.symlink(shared / "models", cache / "models")
            out = Path(tmp) / f"out-{len(rows)}"
            res = generate_queries(corpus=str(DATA / "scifact"), llm=llm, sample_docs=args.docs, seed=0,
                                   roundtrip_teacher="none", concurrency=batch, cache_dir=str(cache), out=str(out))
            m = res.manifest
            seconds = m["timings"]["generate"]
            written = (out / "queries.jsonl").read_bytes() + (out / "generation.parquet").read_bytes()
            prov = pq.read_table(out / "generation.parquet").select(["doc_id", "text"]).to_pylist()
            texts = {r["doc_id"]: r["text"] for r in prov}
            if llm.startswith("hf:") and reference is None:
                reference = (written, texts)
            rows.append({"run": name, "batch": batch, "seconds": seconds,
                         "requests": m["generation"]["requests_asked"],
                         "prompt_tokens": m["generation"]["prompt_tokens"],
                         "completion_tokens": m["generation"]["completion_tokens"],
                         "tok_per_s": round(m["generation"]["completion_tokens"] / seconds, 2),
                         "kept": m["counts"]["kept"], "device": m["generator"].get("device", "cpu"),
                         "same_as_batch_1": None if not llm.startswith("hf:") else written == reference[0],
                         "texts_differing": None if not llm.startswith("hf:") else
                         sum(texts.get(k) != v for k, v in reference[1].items()),
                         "same_as_last_run_at_this_batch": None if (llm, batch) not in by_batch else
                         written == by_batch[(llm, batch)]})
            by_batch[(llm, batch)] = written
            print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(shared, ignore_errors=True)
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
          f"{args.docs} SciFact abstracts, one query each, {Path(model).name}\n")
    base = rows[0]["seconds"]
    print(f"| run | seconds | requests | completion tok/s | speed x {rows[0]['run']} | output = first hf run's "
          "| texts differing | output = last run at this batch |")
    print("|---|---:|---:|---:|---:|---|---:|---|")
    for r in rows:
        same = "" if r["same_as_batch_1"] is None else ("yes" if r["same_as_batch_1"] else "**no**")
        print(f"| {r['run']} ({r['device']}) | {r['seconds']:.1f} | {r['requests']} | {r['tok_per_s']:.1f} | "
              f"{base / r['seconds']:.2f} | {same} | {'' if r['texts_differing'] is None else r['texts_differing']} | "
              f"{ {None: '', True: 'yes', False: '**no**'}[r['same_as_last_run_at_this_batch']] } |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
