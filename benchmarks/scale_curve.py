"""Scale curve: search + filter + sample over synthetic corpora of 10k to 10M documents.

Embeddings are cheap and synthetic (384-d, clustered so that an ANN index has structure to find),
written once as fp16 ``.npy`` files; each query is a perturbed copy of one document, its positive.
For each size and search kind (exact: corpus-chunked faiss knn with a running top-k merge; ann:
faiss IVF-SQ8 or IVF-PQ, then the exact rerank of a 4x pool) a fresh child process runs hardneg's own search, percpos 0.95
filter and top-4 sampler; the parent measures its wall time, the child reports its peak RSS (VmHWM). ANN rows also
give recall@100 against exact search on 200 queries.

    python benchmarks/scale_curve.py [--sizes 10000,100000,1000000,10000000] [--queries 10000]
        [--workdir /tmp/hardneg-scale] [--kinds exact,ivfpq]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

DIM, CENTERS, DEPTH, NEG = 384, 4096, 100, 4
NOISE = 0.02  # per dimension: a document's noise has norm ~0.4 against its cluster centre's 1


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def generate(path: Path, n: int, seed: int = 0, chunk: int = 250_000) -> None:
    """Clustered unit vectors, written chunk by chunk (never the whole corpus in memory)."""
    from hardneg.runs.store import write_rows

    centers = unit(np.random.default_rng(seed).standard_normal((CENTERS, DIM)).astype(np.float32))

    def pieces():
        for s in range(0, n, chunk):
            rng = np.random.default_rng([seed, s])
            m = min(chunk, n - s)
            x = centers[rng.integers(0, CENTERS, m)] + NOISE * rng.standard_normal((m, DIM), dtype=np.float32)
            yield np.arange(s, s + m), unit(x)

    write_rows(path, pieces(), (n, DIM), np.float16)


def child(path: Path, nq: int, kind: str, out: Path) -> None:

    from hardneg.candidates.search import (
        POOL_PAD,
        exact_rerank,
        faiss_pool,
        knn_block_topk,
        pair_dot,
        recall_at,
        running_topk,
    )
    from hardneg.decisions.filters import FilterSpec, apply_filters
    from hardneg.runs.store import EmbeddingMatrix
    from hardneg.sampling import SamplerSpec, id_hashes, sample

    docs = EmbeddingMatrix(path)
    n = docs.shape[0]
    rng = np.random.default_rng(1)
    pos = np.sort(rng.choice(n, size=nq, replace=False))
    queries = unit(docs[pos] + NOISE * rng.standard_normal((nq, DIM), dtype=np.float32))
    k = DEPTH + 1
    t = time.perf_counter()

    def pair_scores(rows: np.ndarray, d: np.ndarray) -> np.ndarray:
        return pair_dot(queries, docs, rows, d)

    def exact_pool(q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        return running_topk(None, len(q), n, kk, doc_chunk=65536, query_chunk=len(q),
                            block_topk=knn_block_topk(q, docs))

    index_timings: dict[str, float] = {}
    if kind == "exact":
        pool_i, pool_s = exact_pool(queries, k + POOL_PAD)
    else:
        pool_i, pool_s = faiss_pool(docs, queries, 4 * k + POOL_PAD, kind, timings=index_timings)
    search_s = time.perf_counter() - t
    ids, scores, _ = exact_rerank(pool_i, pool_s, k, pair_scores, n, verify=kind == "exact")
    t2 = time.perf_counter()
    valid = ids >= 0
    is_pos = ids == pos[:, None]
    pos_ref = (queries * docs[pos]).sum(axis=1).astype(np.float64)
    reason = apply_filters(FilterSpec.parse("percpos:0.95"), scores, valid, is_pos, np.zeros_like(valid), pos_ref, {})
    rank = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), ids.shape)
    chosen, _ = sample(SamplerSpec.parse("top"), NEG, valid & ~is_pos & (reason == 0), rank, scores, pos_ref,
                       id_hashes(np.arange(nq).astype(str)), np.zeros(ids.shape, dtype=np.uint64), 0)
    filter_s = time.perf_counter() - t2
    result = {"search_s": search_s, **{f"index_{k}": v for k, v in index_timings.items()}, "filter_sample_s": filter_s,
              "coverage": float((chosen >= 0).mean())}
    if kind != "exact":
        pick = np.sort(rng.choice(nq, size=min(200, nq), replace=False))
        ei, es = exact_pool(queries[pick], k + POOL_PAD)
        exact_ids, _, _ = exact_rerank(ei, es, k, lambda r, d: pair_scores(pick[r], d), n)
        result["recall_at_100"] = recall_at(ids[pick], exact_ids)
    # This process's own high-water mark. (wait4's ru_maxrss would also count the parent's pages
    # that the child inherited at fork, which survive exec.)
    status = Path("/proc/self/status").read_text()
    result["peak_rss_mb"] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
    out.write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000,10000000")
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--kinds", default="exact,ivfsq,ivfpq")
    ap.add_argument("--ivfpq-max", type=int, default=1_000_000, help="largest corpus to build IVF-PQ for (slow to add)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/hardneg-scale"))
    ap.add_argument("--child", nargs=4)
    ap.add_argument("--generate", nargs=2)
    args = ap.parse_args()
    if args.generate:
        generate(Path(args.generate[0]), int(args.generate[1]))
        return
    if args.child:
        path, nq, kind, out = args.child
        child(Path(path), int(nq), kind, Path(out))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in map(int, args.sizes.split(",")):
        path = args.workdir / f"corpus-{n}.npy"
        if not path.exists():
            t = time.perf_counter()  # in a child process, so that this one stays small
            subprocess.run([sys.executable, __file__, "--generate", str(path), str(n)], check=True)
            print(f"generated {n:,} docs in {time.perf_counter() - t:.0f} s", flush=True)
        for kind in args.kinds.split(","):
            if kind == "ivfpq" and n > args.ivfpq_max:
                continue
            out = args.workdir / f"result-{n}-{kind}.json"
            t = time.perf_counter()
            proc = subprocess.Popen([sys.executable, __file__, "--child", str(path), str(args.queries), kind, str(out)])
            if proc.wait() != 0:
                raise SystemExit(f"child failed for {n} {kind}")
            wall = time.perf_counter() - t
            r = json.loads(out.read_text())
            rows.append((n, kind, wall, r["peak_rss_mb"], r))
            print(f"{n:,} {kind}: {wall:.1f} s, {r['peak_rss_mb']:.0f} MB, {r}", flush=True)
    print(f"\n### Scale curve: search + percpos 0.95 + top-4 ({date.today()})\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.queries:,} queries, {DIM}-d fp16 embeddings on disk, depth {DEPTH}.\n")
    print("| docs | search | wall (s) | search (s) | index train / add / query (s) | filter+sample (s) | "
          "peak RSS (MB) | recall@100 | coverage |")
    print("|---:|---|---:|---:|---|---:|---:|---:|---:|")
    for n, kind, wall, rss, r in rows:
        rec = f"{r['recall_at_100']:.3f}" if "recall_at_100" in r else "exact"
        split = f"{r['index_train_s']:.1f} / {r['index_add_s']:.1f} / {r['index_search_s']:.1f}" \
            if "index_train_s" in r else "–"
        print(f"| {n:,} | {kind} | {wall:.1f} | {r['search_s']:.1f} | {split} | {r['filter_sample_s']:.2f} | "
              f"{rss:.0f} | {rec} | {r['coverage']:.3f} |")


if __name__ == "__main__":
    main()
