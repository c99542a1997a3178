"""False-negative audit tables: naive top-k vs fixed and calibrated thresholds vs the cascade.

Run: python benchmarks/audit_tables.py [--cache-dir DIR] [--judge [COLLECTION=]DIR ...]
Hides half of each query's known positives (seed 0), mines with the dense MiniLM teacher (depth 100,
4 negatives, re-search to 1000 for short queries) and prints one markdown table per collection:
FN rate, FN recall, coverage and hardness kept, together, for every filter chain. With --judge (a folder
from `hardneg train-judge`; COLLECTION= gives one collection its own judge, e.g. one never trained on its
audited queries), two more rows: cross-encoder denoising alone, and the cascade followed by it."""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

from hardneg.audit import audit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COLLECTIONS = [("cranfield", "test"), ("vaswani", "test"), ("scifact", "train")]
CHAINS = [("naive top-k", "none"), ("percpos 0.95", "percpos:0.95"), ("margin 0.05", "margin:0.05"),
          ("calibrated percpos", "percpos:auto"), ("near_positive:auto alone", "near_positive:auto"),
          ("knn_positive:0.5 alone", "knn_positive:0.5"), ("cascade", "cascade")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--hide-fraction", type=float, default=0.5)
    ap.add_argument("--judge", action="append", default=[], help="[COLLECTION=]DIR of a cross-encoder judge")
    args = ap.parse_args()
    judges = dict(j.split("=", 1) if "=" in j else ("*", j) for j in args.judge)
    print(f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"date {date.today()}; hide fraction {args.hide_fraction}, seed 0, dense MiniLM, depth 100, 4 negatives\n")
    for name, split in COLLECTIONS:
        t0 = time.perf_counter()
        rows, naive = [], None
        judge = judges.get(name, judges.get("*"))
        extra = [] if judge is None else [("cross-encoder denoising", "none", judge),
                                          ("cascade + cross-encoder", "cascade", judge)]
        for label, chain, judge_dir in [(label, chain, None) for label, chain in CHAINS] + extra:
            options = {"judge": f"cross-encoder:{judge_dir}"} if judge_dir else {}
            r = audit(DATA / name, split, args.hide_fraction, 0, filter=chain, depth=100, num_negatives=4,
                      cache_dir=args.cache_dir, stages=False, **options)
            naive = naive if naive is not None else r["fn_rate_naive"]
            cal = r.get("calibration") or {}
            note = "; ".join(f"{k} = {v['value']:.3f}" for k, v in cal.items())
            rows.append(f"| {label} | {r['fn_rate']:.1%} | {1 - r['fn_rate'] / naive:.0%} | {r['fn_recall']:.1%} | "
                        f"{r['coverage']:.1%} | {r['hardness_kept']:.3f} | {note} |")
        print(f"#### {name} [{split}]: {r['queries']} audited queries, {r['hidden_positives']} hidden positives "
              f"({time.perf_counter() - t0:.0f} s)\n")
        print("| filters | FN rate | FN cut vs naive | FN recall | coverage | hardness kept | calibrated |")
        print("|---|---:|---:|---:|---:|---:|---|")
        print("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
