"""What the LLM-written negatives look like next to the positives and the mined negatives they replace:
a diagnosis for the generated_ab grids (issue 15), where training on them cost the student ~25 points.

Run (after steps 1-2 of benchmarks/generated_ab.yaml):
    python benchmarks/generated_negatives_stats.py --queries runs/generated/scifact-queries \
        --negatives runs/generated/scifact-negatives [--cache-dir DIR]

For every generated query that has both an LLM-written negative and a mined one (the grid's mining:
dense teacher, percpos:0.95, one negative), it measures with the base MiniLM (the student before
training) and with plain word counts:

- length in words of the query, its positive, the mined negative and the LLM negative;
- cosine to the query of each document;
- the share of LLM negatives the base model scores at or above the positive, and the share the mined
  negatives' own rule (percpos:0.95: a negative must score under 0.95 x the positive) would have
  dropped: the mined ones are filtered by it, the generated ones are not;
- the share of the query's words (lower-cased, 4+ letters) that each document contains.

It prints one table and a line per question; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from datetime import date
from pathlib import Path

import numpy as np

import hardneg
from hardneg.runs.columns import flat

WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def overlap(query: str, doc: str) -> float:
    """The share of the query's distinct words of 4+ letters that the document contains."""
    q = {w for w in words(query) if len(w) >= 4}
    return len(q & set(words(doc))) / len(q) if q else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", required=True, help="folder from `hardneg generate queries`")
    ap.add_argument("--negatives", required=True, help="folder from `hardneg generate negatives`")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()

    col = hardneg.load(args.queries, "train")
    run = hardneg.mine(col, teacher="dense", filter="percpos:0.95", num_negatives=1, cache_dir=args.cache_dir)
    neg = run.negatives
    mined_ids, mined_row = flat(neg, "negative_ids")
    pos_ids, pos_row = flat(neg, "positive_ids")
    qids = neg.column("query_id").to_numpy(zero_copy_only=False)
    first_pos = np.unique(pos_row, return_index=True)[1]  # one positive per query (the first)
    first_mined = np.full(qids.size, -1)
    has, at = np.unique(mined_row, return_index=True)
    first_mined[has] = at

    gen = [json.loads(line) for line in (Path(args.negatives) / "documents.jsonl").read_text().splitlines()]
    gen_text = {g["query_id"]: g["text"] for g in reversed(gen)}   # slot 0 wins
    keep = np.array([q in gen_text and first_mined[i] >= 0 for i, q in enumerate(qids)])
    rows = np.flatnonzero(keep)

    qtext = dict(zip(col.query_ids.tolist(), col.query_texts))
    dtext = dict(zip(col.doc_ids.tolist(), col.doc_texts))
    q = [qtext[qids[r]] for r in rows]
    texts = {
        "positive": [dtext[pos_ids[first_pos[r]]] for r in rows],
        "mined": [dtext[mined_ids[first_mined[r]]] for r in rows],
        "LLM": [gen_text[qids[r]] for r in rows],
    }

    from sentence_transformers import SentenceTransformer

    from hardneg.runs.fingerprint import resolve_model

    model = SentenceTransformer(resolve_model(None))
    enc = {k: model.encode(v, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
           for k, v in [("query", q), *texts.items()]}
    cos = {k: (enc["query"] * enc[k]).sum(axis=1) for k in texts}

    print(f"{platform.machine()}, {date.today()}: {args.negatives}: {rows.size} queries with a positive, "
          f"a mined negative and an LLM-written one (base model: the packaged all-MiniLM-L6-v2)")
    print(f"{'':10} {'words (median)':>15} {'cos to query':>13} {'query words in it':>18}")
    qlen = np.median([len(words(t)) for t in q])
    print(f"{'query':10} {qlen:>15.0f}")
    for k, v in texts.items():
        n = np.median([len(words(t)) for t in v])
        ov = np.nanmean([overlap(a, b) for a, b in zip(q, v)])
        print(f"{k:10} {n:>15.0f} {cos[k].mean():>13.3f} {ov:>18.1%}")
    p = cos["positive"]
    for k in ("mined", "LLM"):
        print(f"{k}: scored at or above the positive by the base model: {(cos[k] >= p).mean():.1%}; "
              f"dropped by percpos:0.95 (>= 0.95 x the positive's score): {(cos[k] >= 0.95 * p).mean():.1%}")


if __name__ == "__main__":
    main()
