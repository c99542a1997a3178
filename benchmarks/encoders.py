"""Encoder options on SciFact test: speed and the retrieval quality they keep.

For each encoder (torch fp32, bf16, onnx fp32, onnx int8, openvino) of the packaged all-MiniLM-L6-v2, with an
empty cache: wall time to encode the 5,183 abstracts and 300 test queries, documents per second,
the share of that time spent tokenising, and nDCG@10 / Recall@100 on SciFact test against torch fp32.

    python benchmarks/encoders.py [--data ../shared/data/scifact] [--encoders torch,bf16,onnx,onnx-int8,openvino]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    ap.add_argument("--encoders", default="torch,bf16,onnx,onnx-int8,openvino")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tokenizers import Tokenizer

    from hardneg import load
    from hardneg.candidates.encoders import EXPORTED, export_graph
    from hardneg.evaluation.retrieval import evaluate
    from hardneg.runs.fingerprint import resolve_model

    col = load(args.data, "test")
    tok = Tokenizer.from_file(str(Path(resolve_model(None)) / "tokenizer.json"))
    tok.enable_truncation(256)
    t = time.perf_counter()
    tok.encode_batch(list(col.doc_texts))
    tokenise_s = time.perf_counter() - t
    rows = []
    for enc in args.encoders.split(","):
        cache = Path(tempfile.mkdtemp(prefix=f"hn-enc-{enc}-"))
        if enc in EXPORTED:  # the one-off export is not encoding time: do it first
            from hardneg.runs.fingerprint import folder_fingerprint

            model = Path(resolve_model(None))
            export_graph(enc, model, cache / "onnx" / folder_fingerprint(model, cache))
        t = time.perf_counter()
        res = evaluate(args.data, "test", encoder=enc, cache_dir=str(cache), batch_size=32)
        wall = time.perf_counter() - t
        rows.append((enc, wall, res.metrics["ndcg@10"], res.metrics["recall@100"]))
        print(f"{enc}: {wall:.1f} s, nDCG@10 {res.metrics['ndcg@10']:.4f}", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    base = rows[0]
    print(f"\n### Encoders on SciFact test ({date.today()})\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
          f"Tokenising the {col.num_docs} abstracts alone: {tokenise_s:.1f} s.\n")
    print(f"| encoder | encode + search (s) | docs/s | speed vs {base[0]} | nDCG@10 | Δ nDCG@10 | R@100 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for enc, wall, ndcg, rec in rows:
        print(f"| {enc} | {wall:.1f} | {col.num_docs / wall:.1f} | {base[1] / wall:.2f}x | {ndcg:.4f} | "
              f"{100 * (ndcg - base[2]):+.2f} | {rec:.4f} |")


if __name__ == "__main__":
    main()
