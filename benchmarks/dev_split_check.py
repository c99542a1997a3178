"""Is the dev split like the test split, seen from the training queries? (issue 14: dev and test ranked
the variants in opposite orders.) Two leak checks, for the held-out dev (or a real dev split) and for test:

- positives shared: the share of dev (test) queries with a positive document that is also a positive of
  a training query — if dev shared far more, dev would reward memorising the training positives;
- near-duplicate queries: each dev (test) query's highest cosine to any training query (packaged MiniLM)
  — if dev had near-copies in the training set and test did not, dev would reward memorising queries.

Run: python benchmarks/dev_split_check.py [--dev-queries 100] [--dev-seed 0]
Prints one line per (collection, split)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import hardneg
from hardneg.collection import Collection

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def positives(col: Collection) -> dict[int, set[str]]:
    p = col.positives()
    out: dict[int, set[str]] = {}
    for q, d in zip(p.query_idx.tolist(), col.doc_ids[p.doc_idx].tolist()):
        out.setdefault(q, set()).add(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev-queries", type=int, default=100)
    ap.add_argument("--dev-seed", type=int, default=0)
    args = ap.parse_args()
    from sentence_transformers import SentenceTransformer

    from hardneg.runs.fingerprint import resolve_model

    model = SentenceTransformer(resolve_model(None))

    def embed(col: Collection) -> np.ndarray:
        return model.encode([col.query_texts[i] for i in col.judged_queries()], batch_size=128,
                            normalize_embeddings=True)

    for name, dev_split in (("scifact", None), ("nfcorpus", "dev")):
        train = hardneg.load(DATA / name, "train")
        if dev_split:
            fit, dev = train, hardneg.load(DATA / name, dev_split)
        else:
            fit = train.holdout(args.dev_queries, args.dev_seed, "fit")
            dev = train.holdout(args.dev_queries, args.dev_seed, "dev")
        test = hardneg.load(DATA / name, "test")
        fit_pos = set().union(*positives(fit).values())
        fit_emb = embed(fit)
        for split, col in (("dev", dev), ("test", test)):
            ps = positives(col)
            shared = np.mean([bool(s & fit_pos) for s in ps.values()])
            top = (embed(col) @ fit_emb.T).max(axis=1)
            print(f"{name} {split:4s} ({len(ps)} queries vs {len(fit.judged_queries())} training queries): "
                  f"positive shared {shared:.3f}; max query cosine median {np.median(top):.3f}, "
                  f">0.9 {np.mean(top > 0.9):.3f}, >0.8 {np.mean(top > 0.8):.3f}", flush=True)


if __name__ == "__main__":
    main()
