"""How strong is each teacher the soft labels can come from? nDCG@10 / R@100 / MRR@10 of MiniLM, stemmed
BM25 and their fusion (RRF) as retrievers, on the dev split the choices use (SciFact: the 100 held-out
train queries of benchmarks/scifact_ab.yaml; NFCorpus: its dev split) and on test (reported, not chosen on).

Run: python benchmarks/teacher_strength.py [--teachers dense,bm25:stem,hybrid:bm25:stem+dense] [--cache-dir DIR]
         [--collections scifact,nfcorpus] [--splits dev,test]
A teacher that is a trained model (``hybrid:bm25:stem+dense:runs/.../model``) is a choice: give ``--splits dev``."""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

import hardneg

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teachers", default="dense,bm25:stem,hybrid:bm25:stem+dense")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--collections", default="scifact,nfcorpus")
    ap.add_argument("--splits", default="dev,test")
    args = ap.parse_args()
    print(f"{platform.machine()}, {date.today()}", flush=True)
    for name in args.collections.split(","):
        train = hardneg.load(DATA / name, "train")
        dev = hardneg.load(DATA / name, "dev") if name == "nfcorpus" else train.holdout(100, 0, "dev")
        test = hardneg.load(DATA / name, "test")
        for teacher in args.teachers.split(","):
            for split, col in (("dev", dev), ("test", test)):
                if split not in args.splits.split(","):
                    continue
                t0 = time.perf_counter()
                ev = hardneg.evaluate(col, teacher=teacher, cache_dir=args.cache_dir)
                m = ev.metrics
                print(f"{name:8s} {split:4s} ({ev.queries} q) {teacher:24s} nDCG@10 {m['ndcg@10']:.4f}  "
                      f"R@100 {m['recall@100']:.4f}  MRR@10 {m['mrr@10']:.4f}  ({time.perf_counter() - t0:.0f} s)",
                      flush=True)


if __name__ == "__main__":
    main()
