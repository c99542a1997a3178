"""How strong is the cross-encoder judge this machine can train? (issue 14, item 1)

For each collection: mine the train split (MiniLM, percpos:0.95, 8 negatives), train a judge on its
positives and negatives (``hardneg train-judge``: MiniLM backbone, fresh head, 50 train queries held out
for calibration), then on the TEST split, for a first stage of MiniLM and of the ensemble teacher (RRF of
MiniLM and stemmed BM25):

- nDCG@10 of the first stage's top 100, and of the judge reranking that top 100 (pytrec_eval);
- the judge's AUC: the positives in the top 100 against the other documents there.

A seeded subset of test queries (``--queries``, default 100) keeps the reranking affordable on a CPU
(100 x 100 pairs per first stage); the subset is said in the output. The judge and its scores are cached
under OUT, so a rerun only prints.

Run: python benchmarks/judge_strength.py --out runs/judges [--queries 100] [--steps 400] [--collections scifact,nfcorpus]"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytrec_eval

import hardneg
from hardneg.candidates.build import build_teacher
from hardneg.config import MineConfig
from hardneg.decisions.cross_encoder import CrossEncoderJudge, auc, train_judge
from hardneg.runs.cache import Cache
from hardneg.runs.fingerprint import env_cache_dir

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FIRST_STAGES = ("dense", "hybrid:bm25:stem+dense")


def ndcg10(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> float:
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([per_query.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--collections", default="scifact,nfcorpus")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    cache = Cache(env_cache_dir(None))
    print(f"{platform.machine()}, {date.today()}: judge = MiniLM + fresh head, {args.steps} steps of 16 pairs",
          flush=True)
    for name in args.collections.split(","):
        judge_dir = out / name / "judge"
        if not (judge_dir / "hardneg_judge.json").exists():
            run = hardneg.mine(hardneg.load(DATA / name, "train"), teacher="dense", filter="percpos:0.95",
                               num_negatives=8, out=str(out / name / "run"))
            train_judge(run, judge_dir, max_steps=args.steps, batch_size=16, seed=args.seed, progress=False)
        meta = json.loads((judge_dir / "hardneg_judge.json").read_text())
        judge = CrossEncoderJudge(judge_dir)
        test = hardneg.load(DATA / name, "test")
        judged = test.judged_queries()
        pick = np.sort(np.random.default_rng(args.seed).choice(judged, size=min(args.queries, judged.size),
                                                                replace=False))
        qrels: dict[str, dict[str, int]] = {str(test.query_ids[q]): {} for q in pick}
        for q, d, g in zip(test.query_ids[test.qrels.query_idx].tolist(), test.doc_ids[test.qrels.doc_idx].tolist(),
                           test.qrels.grade.tolist()):
            if q in qrels:
                qrels[q][d] = int(g)
        for spec in FIRST_STAGES:
            teacher = build_teacher(MineConfig(dataset=str(DATA / name), teacher=spec))
            teacher.prepare(test, pick, cache)
            ids, scores = teacher.search(pick, 100)
            cached = out / name / f"scores-{spec.replace(':', '_')}-{args.queries}-{args.seed}.npy"
            qtexts = [test.query_texts[q] for q in pick for _ in range(ids.shape[1])]
            dtexts = [test.doc_texts[d] for d in ids.ravel()]
            t0 = time.perf_counter()
            if cached.exists():
                probs = np.load(cached)
            else:
                probs = judge.probabilities(qtexts, dtexts)
                np.save(cached, probs)
            seconds = time.perf_counter() - t0
            probs = probs.reshape(ids.shape)
            first = {str(test.query_ids[q]): {str(test.doc_ids[d]): float(s) for d, s in zip(ids[r], scores[r])}
                     for r, q in enumerate(pick)}
            rerank = {str(test.query_ids[q]): {str(test.doc_ids[d]): float(s) for d, s in zip(ids[r], probs[r])}
                      for r, q in enumerate(pick)}
            labels = np.array([qrels[str(test.query_ids[q])].get(str(test.doc_ids[d]), 0) > 0
                               for r, q in enumerate(pick) for d in ids[r]])
            print(f"{name} test ({pick.size} of {judged.size} queries), first stage {spec}: nDCG@10 "
                  f"{ndcg10(qrels, first):.4f} -> judge rerank of its top 100 {ndcg10(qrels, rerank):.4f}; judge AUC "
                  f"{auc(probs.ravel(), labels):.3f} on {labels.size} pairs ({int(labels.sum())} positive); judge dev "
                  f"AUC {meta['dev_auc']:.3f}; {meta['train_pairs']} training pairs, {meta['seconds']:.0f} s training, "
                  f"{seconds:.0f} s reranking", flush=True)


if __name__ == "__main__":
    main()
