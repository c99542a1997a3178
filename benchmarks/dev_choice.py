"""Choices on DEV only (test is never read): variants x step budgets, one seed each.

- The learning curve of the baseline (``--variants st-recipe --steps 25,50,100,200``) sets the grid's
  equal step budget where the baseline stops improving (issue 14's protocol).
- The method choice (``--variants a,b,c --steps 100``) picks the hardneg recipe that the final grid
  then runs with 3 seeds on test.

Run: python benchmarks/dev_choice.py --config benchmarks/scifact_ab.yaml --variants st-recipe \
        --steps 25,50,100 --out benchmarks/results/scifact_ab [--bf16|--no-bf16] [--seed 0] [--against st-recipe]

Each (variant, steps) cell is cached in OUT/variants/<variant>/steps-<S>[-bf16]/seed-<seed>/
(dev_metrics.json written last), so a killed run resumes; mined runs and ST tables are shared with
the experiment's own cells when OUT is the experiment folder. Prints one line per cell: dev nDCG@10,
R@100, MRR@10, train and mining seconds; with ``--against NAME``, a second line: the cell's dev nDCG@10 minus
NAME's at the same steps, seed and precision, with its paired bootstrap 95% CI, paired randomisation p and the
queries that went up and down (NAME's cell must be done)."""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

from hardneg.collection import load
from hardneg.evaluation.comparison import compare
from hardneg.evaluation.retrieval import Evaluation
from hardneg.experiment.cells import Cells, evaluate_model, keep_training_log
from hardneg.experiment.config import ExperimentConfig, Variant
from hardneg.experiment.driver import split_dev
from hardneg.progress import SILENT
from hardneg.runs.files import write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--variants", required=True, help="comma-separated variant names of the config")
    ap.add_argument("--steps", default="25,50,100,200")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: the config's budget.bf16)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--against", default=None, help="print each cell's dev nDCG@10 against this variant's cell")
    args = ap.parse_args()
    cfg = ExperimentConfig.from_file(args.config)
    by_name = {v.name: v for v in cfg.variants}
    unknown = [n for n in [*args.variants.split(","), *([args.against] if args.against else [])] if n not in by_name]
    if unknown:
        raise SystemExit(f"{args.config}: no variant '{unknown[0]}'")
    chosen = [by_name[name] for name in args.variants.split(",")]
    train_col, dev = split_dev(cfg, load(cfg.dataset, cfg.train_split))
    if dev is None:
        raise SystemExit(f"{args.config}: no dev split (set dev_split or dev_queries)")
    out = Path(args.out)
    cells = Cells(out, cfg, train_col, dev, None, SILENT)
    print(f"{cfg.name}: seed {args.seed}, dev {len(dev.judged_queries())} queries, "
          f"{platform.machine()}, {date.today()}", flush=True)
    for variant in chosen:
        bf16 = (cfg.budget.model_dump() | variant.budget).get("bf16") if args.bf16 is None else args.bf16
        for steps in [int(s) for s in args.steps.split(",")]:
            v = at(variant, steps, bf16)
            cell = cells.choice_model(v, args.seed).parent  # where the grid looks for it: steps-<S>[-bf16]/seed-<s>
            tag = cell.parent.name
            done = cell / "dev_metrics.json"
            if not done.exists():
                mine_seconds = cells.train_cell(v, args.seed, cell)
                ev = evaluate_model(dev, str(cell / "model"), cfg)
                ev.save_per_query(cell / "dev_per_query.jsonl")
                made = json.loads(keep_training_log(cell).read_text())
                write_json(done, ev.as_json() | {"train_seconds": made["seconds"], "train_steps": made["steps"],
                                                 "mine_seconds": round(mine_seconds, 1)})
            m = json.loads(done.read_text())
            print(f"{variant.name:28s} {tag:12s} dev nDCG@10 {m['ndcg@10']:.4f}  "
                  f"R@100 {m['recall@100']:.4f}  MRR@10 {m['mrr@10']:.4f}  "
                  f"train {m['train_seconds']:.0f} s ({m['train_steps']} steps)  mine {m.get('mine_seconds', 0):.0f} s",
                  flush=True)
            if args.against and args.against != variant.name:
                base = cells.choice_model(at(by_name[args.against], steps, bf16), args.seed).parent
                print(against(cell, base, args.against), flush=True)


def at(variant: Variant, steps: int, bf16: bool | None) -> Variant:
    """The variant at this step budget and precision (the rest of its budget kept)."""
    return variant.model_copy(update={"budget": {**variant.budget, "max_steps": steps, "bf16": bf16}})


def against(cell: Path, base: Path, name: str) -> str:
    """One line: this dev cell's nDCG@10 minus the ``base`` cell's, over the same dev queries."""
    if not (base / "dev_metrics.json").exists():
        return f"{'':28s} vs {name}: its cell {base} is not done"
    a, b = (Evaluation.read(c / "dev_metrics.json", c / "dev_per_query.jsonl").per_query["ndcg@10"]
            for c in (cell, base))
    qids = sorted(b)
    if sorted(a) != qids:
        raise SystemExit(f"{cell} and {base}: different dev queries")
    x, y = [a[q] for q in qids], [b[q] for q in qids]
    c = compare(x, y)
    up, down = sum(i > j for i, j in zip(x, y)), sum(i < j for i, j in zip(x, y))
    return (f"{'':28s} vs {name}: {100 * c.delta:+.2f} points [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}], "
            f"p = {c.p:.3f}, {up} up / {down} down of {c.n}")


if __name__ == "__main__":
    main()
