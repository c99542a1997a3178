"""Is the cascade's calibration quantile a held-out choice? Choose it on half the queries, report the other half.

Each multi-positive collection's judged queries are split in two by a seeded hash (`Collection.holdout`).
On the "choose" half, the cascade is audited for several calibration quantiles, and the one with the lowest FN
rate at coverage >= 90% and hardness kept >= 0.8 is chosen. The "report" half is then audited once with
naive top-k, once with the chosen quantile and once with the default (0.2). Both halves are audited the same
way as `benchmarks/audit_tables.py` (half of each query's positives hidden, seed 0, the dense MiniLM in fp32,
depth 100, 4 negatives).

    python benchmarks/calibration_holdout.py [--cache-dir DIR] [--split-seed 1]
"""

from __future__ import annotations

import argparse
import platform
from datetime import date
from pathlib import Path

from hardneg import load
from hardneg.audit import audit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUANTILES = (0.05, 0.1, 0.2, 0.3, 0.4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--split-seed", type=int, default=1)
    args = ap.parse_args()
    common = {"depth": 100, "num_negatives": 4, "cache_dir": args.cache_dir, "encoder": "torch", "stages": False}
    print(f"Machine: {platform.machine()}, Python {platform.python_version()}; date {date.today()}; "
          f"split seed {args.split_seed}; hide fraction 0.5, seed 0\n")
    print("| collection | half | filters | FN rate | FN cut vs naive | coverage | hardness kept |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in ("cranfield", "vaswani"):
        col = load(DATA / name, "test")
        half = col.judged_queries().size // 2
        choose = col.holdout(half, args.split_seed, "dev")
        report = col.holdout(half, args.split_seed, "fit")
        best = None
        for q in QUANTILES:
            r = audit(choose, "test", 0.5, 0, filter="cascade", calibration_quantile=q, **common)
            ok = r["coverage"] >= 0.9 and r["hardness_kept"] >= 0.8
            print(f"| {name} | choose ({r['queries']} q) | cascade, quantile {q} | {r['fn_rate']:.1%} | "
                  f"{1 - r['fn_rate'] / r['fn_rate_naive']:.0%} | {r['coverage']:.1%} | {r['hardness_kept']:.3f} |")
            if ok and (best is None or r["fn_rate"] < best[1]):
                best = (q, r["fn_rate"])
        chosen = best[0] if best else 0.2
        for label, extra in (("naive top-k", {"filter": "none"}),
                             (f"cascade, chosen quantile {chosen}", {"filter": "cascade", "calibration_quantile": chosen}),
                             ("cascade, default quantile 0.2", {"filter": "cascade", "calibration_quantile": 0.2})):
            r = audit(report, "test", 0.5, 0, **extra, **common)
            print(f"| {name} | **report** ({r['queries']} q) | {label} | {r['fn_rate']:.1%} | "
                  f"{1 - r['fn_rate'] / r['fn_rate_naive']:.0%} | {r['coverage']:.1%} | {r['hardness_kept']:.3f} |")


if __name__ == "__main__":
    main()
