"""experiment(): mining variants -> mine -> train -> evaluate, N seeds each, one budget for all.

Every cell (variant x seed) is cached in the experiment folder and skipped when done, so a grid
can be run over several sittings. Results carry mean +- std, deltas against the base model and a
baseline variant, and a paired randomisation test on per-query nDCG@10."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..collection import Collection, load
from ..errors import ConfigError
from ..evaluation.retrieval import Evaluation, evaluate
from ..mine import mine
from ..progress import SILENT, Reporter
from ..runs.files import write_json, write_text

METRICS = ("ndcg@10", "recall@100", "mrr@10")
UNEQUAL_BUDGET = ("the cells trained different numbers of steps (the steps column), so the deltas mix the mining "
                  "choice with the amount of training. Set budget.max_steps.")


def steps_label(row: dict[str, Any]) -> str:
    """A result row's training steps: ``25``, or ``25/26`` when its seeds trained different numbers."""
    return "/".join(str(n) for n in row.get("train_steps", [])) or "-"


class Budget(BaseModel):
    """The same training budget for every cell."""

    model_config = ConfigDict(extra="forbid")
    batch_size: int = 32
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_length: int | None = None


class Variant(BaseModel):
    """One mining choice. ``kind: st`` is the outside baseline: sentence-transformers'
    ``mine_hard_negatives(relative_margin, num_negatives, range_max)`` then the same loss."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["hardneg", "st"] = "hardneg"
    loss: str = "mnrl-hn"
    mine: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] | None = None
    budget: dict[str, Any] = Field(default_factory=dict)
    st: dict[str, Any] = Field(default_factory=lambda: {"relative_margin": 0.05, "num_negatives": 4, "range_max": 50})


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "experiment"
    dataset: str
    train_split: str = "train"
    test_split: str = "test"
    base_model: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0])
    baseline: str | None = None
    budget: Budget = Field(default_factory=Budget)
    variants: list[Variant] = Field(default_factory=list)
    grid: dict[str, list[Any]] | None = Field(None, description="mine options -> values: one hardneg variant per "
                                              "combination (e.g. teacher x filter x sampler x num_negatives), "
                                              "added after the listed variants")
    dev_queries: int = Field(0, ge=0, description="train queries held out (never trained on) to choose the best variant")
    dev_seed: int = 0
    best_seeds: list[int] | None = Field(None, description="extra seeds for the best hardneg variant on dev and the baseline")
    cache_dir: str | None = None
    permutations: int = 10000

    @model_validator(mode="after")
    def _expand_grid(self) -> ExperimentConfig:
        if self.grid:
            import itertools

            keys = sorted(self.grid)
            for values in itertools.product(*(self.grid[k] for k in keys)):
                opts = dict(zip(keys, values))
                # A folder name: only word characters, '.', '=', '+' and '-'.
                name = re.sub(r"[^\w.=+-]+", "_", "grid-" + "-".join(f"{k}={v}" for k, v in opts.items()))
                self.variants.append(Variant(name=name, mine=opts))
            self.grid = None  # expanded once: a dumped config reloads to the same variants
        if not self.variants:
            raise ValueError("no variants: list some under 'variants' or give a 'grid'")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate variant names: {sorted({n for n in names if names.count(n) > 1})}")
        return self

    def with_seeds(self, seeds: list[int]) -> ExperimentConfig:
        """The same grid run with only these seeds for every variant (no dev-chosen extra seeds): a grid split
        over processes or machines, one seed each, merges by rerunning the full config on the joined folders."""
        if not seeds:
            raise ConfigError("--seeds: give at least one seed")
        variants = [v.model_copy(update={"seeds": None}) for v in self.variants]
        return self.model_copy(update={"seeds": list(seeds), "best_seeds": None, "variants": variants})

    @classmethod
    def from_file(cls, path: str | Path) -> ExperimentConfig:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: experiment file not found")
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        if isinstance(data.get("dataset"), str) and not Path(data["dataset"]).is_absolute():
            cand = (p.parent / data["dataset"]).resolve()
            data["dataset"] = str(cand) if cand.exists() else data["dataset"]
        return cls(**data)


def paired_randomisation(a: np.ndarray, b: np.ndarray, n: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of mean(a - b) under random sign flips of the per-query differences."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0 or not np.any(d):
        return 1.0
    obs = abs(d.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n, 1000):
        signs = rng.choice([-1.0, 1.0], size=(min(1000, n - start), d.size))
        hits += int((np.abs((signs * d).mean(axis=1)) >= obs - 1e-12).sum())
    return (hits + 1) / (n + 1)


def _quick(cfg: ExperimentConfig) -> ExperimentConfig:
    """CI-sized: tiny budget, one seed."""
    small = cfg.model_copy(deep=True)
    small.budget = Budget(batch_size=8, max_steps=3, max_length=64, learning_rate=1e-4, warmup_ratio=0.0)
    small.seeds = [0]
    small.permutations = 500
    small.best_seeds = [0, 1] if cfg.best_seeds else None
    small.dev_queries = min(cfg.dev_queries, 10)
    for v in small.variants:
        v.seeds = None
    return small


def _load_eval(cell: Path, prefix: str = "") -> Evaluation | None:
    m = cell / f"{prefix}metrics.json"
    if not (cell / "metrics.json").exists() or not m.exists():
        return None
    metrics = json.loads(m.read_text())
    per_query: dict[str, dict[str, float]] = {k: {} for k in METRICS}
    for line in (cell / f"{prefix}per_query.jsonl").read_text().splitlines():
        r = json.loads(line)
        for k in METRICS:
            per_query[k][r["query_id"]] = r[k]
    extra = {k: v for k, v in metrics.items() if k not in METRICS and k != "queries"}
    return Evaluation({k: metrics[k] for k in METRICS}, per_query, metrics["queries"], extra)


def _evaluate_cell(cell: Path, test: Collection, dev: Collection | None, model: str | None,
                   cfg: ExperimentConfig, reporter: Reporter, extra: dict[str, Any] | None = None) -> Evaluation:
    """Test (and dev) scores of one model; the corpus is encoded once (the cache serves the second)."""
    done = _load_eval(cell)
    if done is not None:
        return done
    if dev is not None:
        dv = evaluate(dev, model=model, cache_dir=cfg.cache_dir, batch_size=64, reporter=reporter)
        dv.save_per_query(cell / "dev_per_query.jsonl")
        write_json(cell / "dev_metrics.json", dv.as_json())
    ev = evaluate(test, model=model, cache_dir=cfg.cache_dir, batch_size=64, reporter=reporter)
    ev.save_per_query(cell / "per_query.jsonl")
    write_json(cell / "metrics.json", ev.as_json() | (extra or {}))  # written last: marks the cell done
    return ev


def _st_table(train: Collection, variant: Variant, cfg: ExperimentConfig, path: Path) -> pa.Table:
    """The ST recipe's n-tuples, cached as parquet in the variant folder."""
    if path.exists():
        return pq.read_table(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from ..runs.fingerprint import resolve_model

    pos = train.positives()
    ds = Dataset.from_dict({"anchor": [train.query_texts[i] for i in pos.query_idx],
                            "positive": [train.doc_texts[i] for i in pos.doc_idx]})
    model = SentenceTransformer(resolve_model(cfg.base_model))
    res = mine_hard_negatives(ds, model, corpus=list(train.doc_texts), output_format="n-tuple",
                              sampling_strategy="top", batch_size=64, verbose=False,
                              cache_folder=str(path.parent / "st-cache"), **variant.st)
    table = res.data.table if hasattr(res, "data") else pa.Table.from_pylist(res.to_list())
    table = pa.table({c: table.column(c) for c in table.column_names})
    pq.write_table(table, path)
    return table


def run_experiment(cfg: ExperimentConfig, out: str | Path, quick: bool = False,
                   reporter: Reporter = SILENT, only: list[str] | None = None,
                   seeds: list[int] | None = None) -> dict[str, Any]:
    """Run (or resume) every cell and write results.json and results.md into ``out``.
    ``only`` restricts the run to some variants (the baseline is kept if it was set); ``seeds`` replaces
    every variant's seeds (see :meth:`ExperimentConfig.with_seeds`)."""
    from ..training import TrainConfig, train, train_on_table
    from ..training.trainer import MANIFEST

    if quick:
        cfg = _quick(cfg)
    if seeds is not None:
        cfg = cfg.with_seeds(seeds)
    if only:
        unknown = set(only) - {v.name for v in cfg.variants}
        if unknown:
            raise ConfigError(f"unknown variant(s): {', '.join(sorted(unknown))}")
        keep = set(only) | ({cfg.baseline} if cfg.baseline else set())
        cfg = cfg.model_copy(update={"variants": [v for v in cfg.variants if v.name in keep]})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "experiment.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    train_col = load(cfg.dataset, cfg.train_split)
    test_col = load(cfg.dataset, cfg.test_split)
    if quick:
        train_col = train_col.slice(40, extra_docs=200)
        test_col = test_col.slice(30, extra_docs=200)
    dev_col = None
    if cfg.dev_queries:
        dev_col = train_col.holdout(cfg.dev_queries, cfg.dev_seed, "dev")
        train_col = train_col.holdout(cfg.dev_queries, cfg.dev_seed, "fit")
    names = [v.name for v in cfg.variants]
    if len(set(names)) != len(names):
        raise ConfigError("variant names must be distinct")
    if cfg.baseline is not None and cfg.baseline not in names:
        raise ConfigError(f"baseline '{cfg.baseline}' is not a variant ({', '.join(names)})")
    if cfg.best_seeds and dev_col is None:
        raise ConfigError("best_seeds needs dev_queries > 0: the best variant is chosen on dev, never on test")

    base = _evaluate_cell(out / "base", test_col, dev_col, cfg.base_model, cfg, reporter)
    runs: dict[str, Any] = {}

    def run_cell(v: Variant, seed: int) -> None:
        vdir = out / "variants" / v.name
        cell = vdir / f"seed-{seed}"
        if _load_eval(cell) is not None:
            return
        model_dir = cell / "model"
        tcfg = dict(model=cfg.base_model, loss=v.loss, seed=seed, **(cfg.budget.model_dump() | v.budget))
        if v.kind == "hardneg":
            if v.name not in runs:
                options = {"cache_dir": cfg.cache_dir, **v.mine}
                runs[v.name] = mine(train_col, out=str(vdir / "run"), reporter=reporter, **options)
            train(runs[v.name], model_dir, overwrite=True, progress=reporter.enabled, **tcfg)
        else:
            key = hashlib.sha256(json.dumps(v.st, sort_keys=True).encode()).hexdigest()[:16]
            table_path = out / "st-mined" / f"{key}.parquet"  # one ST mining per recipe, shared by variants
            table = _st_table(train_col, v, cfg, table_path)
            tc = TrainConfig(run=str(table_path), out=str(model_dir), **tcfg)
            train_on_table(lambda t=table: t, tc, {"st_recipe": v.st, "config_fingerprint": str(v.st)},
                        overwrite=True, progress=reporter.enabled)
        made = json.loads((model_dir / MANIFEST).read_text())
        _evaluate_cell(cell, test_col, dev_col, str(model_dir), cfg, reporter,
                       {"train_seconds": made["seconds"], "train_steps": made["steps"]})

    plan = {v.name: list(v.seeds or cfg.seeds) for v in cfg.variants}
    for seed in sorted({s for seeds in plan.values() for s in seeds}):  # seed-major: a cut grid stays balanced
        for v in cfg.variants:
            if seed in plan[v.name]:
                run_cell(v, seed)
    best = None
    if cfg.best_seeds:
        best = _best_on_dev(out, [v for v in cfg.variants if v.kind == "hardneg"], plan)
        for v in cfg.variants:
            if v.name in {best, cfg.baseline}:
                for seed in cfg.best_seeds:
                    if seed not in plan[v.name]:
                        plan[v.name].append(seed)
                        run_cell(v, seed)
    cells = {name: [_load_eval(out / "variants" / name / f"seed-{s}") for s in seeds] for name, seeds in plan.items()}
    dev = None
    if dev_col is not None:
        dev = {name: [_load_eval(out / "variants" / name / f"seed-{s}", "dev_") for s in seeds]
               for name, seeds in plan.items()}
        dev["__base__"] = [_load_eval(out / "base", "dev_")]
    results = summarise(cfg, base, cells, dev, best)  # type: ignore[arg-type]
    write_json(out / "results.json", results)
    write_text(out / "results.md", results_markdown(results))
    return results


def _best_on_dev(out: Path, candidates: list[Variant], plan: dict[str, list[int]]) -> str | None:
    """The candidate with the highest mean dev nDCG@10 over its finished seeds."""
    scores = {}
    for v in candidates:
        evs = [_load_eval(out / "variants" / v.name / f"seed-{s}", "dev_") for s in plan[v.name]]
        scores[v.name] = float(np.mean([e.metrics["ndcg@10"] for e in evs if e is not None]))
    return max(scores, key=lambda k: scores[k]) if scores else None


def _per_query_mean(evals: list[Evaluation], metric: str = "ndcg@10") -> tuple[list[str], np.ndarray]:
    qids = sorted(evals[0].per_query[metric])
    return qids, np.mean([[e.per_query[metric][q] for q in qids] for e in evals], axis=0)


def summarise(cfg: ExperimentConfig, base: Evaluation, cells: dict[str, list[Evaluation]],
              dev: dict[str, list[Evaluation]] | None = None, best: str | None = None) -> dict[str, Any]:
    """Mean +- std per variant, deltas vs base and baseline, paired randomisation p-values; with a
    dev split, each variant's dev nDCG@10 and the variant chosen on it."""
    _, base_pq = _per_query_mean([base])
    rows = []
    baseline_pq = _per_query_mean(cells[cfg.baseline])[1] if cfg.baseline else None
    baseline_mean = float(np.mean([e.metrics["ndcg@10"] for e in cells[cfg.baseline]])) if cfg.baseline else None
    for name, evals in cells.items():
        row: dict[str, Any] = {"variant": name, "seeds": len(evals)}
        for m in METRICS:
            vals = np.array([e.metrics[m] for e in evals])
            row[m] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        pq_mean = _per_query_mean(evals)[1]
        row["delta_base"] = row["ndcg@10"] - base.metrics["ndcg@10"]
        row["p_vs_base"] = paired_randomisation(pq_mean, base_pq, cfg.permutations)
        if baseline_pq is not None and baseline_mean is not None:
            row["delta_baseline"] = row["ndcg@10"] - baseline_mean
            row["p_vs_baseline"] = paired_randomisation(pq_mean, baseline_pq, cfg.permutations)
        if dev is not None:
            row["dev_ndcg@10"] = float(np.mean([e.metrics["ndcg@10"] for e in dev[name]]))
        secs = [e.details["train_seconds"] for e in evals if "train_seconds" in e.details]
        if secs:
            row["train_seconds"] = float(np.mean(secs))
        steps = sorted({int(e.details["train_steps"]) for e in evals if "train_steps" in e.details})
        if steps:
            row["train_steps"] = steps
        rows.append(row)
    out = {"name": cfg.name, "dataset": cfg.dataset, "test_split": cfg.test_split, "queries": base.queries,
           "budget": cfg.budget.model_dump(), "base": base.as_json(), "baseline": cfg.baseline, "variants": rows,
           "equal_steps": len({s for r in rows for s in r.get("train_steps", [])}) <= 1}
    if dev is not None:
        out["dev"] = {"queries": dev["__base__"][0].queries, "seed": cfg.dev_seed,
                      "base_ndcg@10": dev["__base__"][0].metrics["ndcg@10"], "selected": best}
    return out


def results_markdown(results: dict[str, Any]) -> str:
    dev = results.get("dev")
    lines = [f"### {results['name']}: {results['dataset']} [{results['test_split']}], {results['queries']} queries",
             "", (f"Base model: nDCG@10 {results['base']['ndcg@10']:.4f}, R@100 {results['base']['recall@100']:.4f}, "
                  f"MRR@10 {results['base']['mrr@10']:.4f}. Budget: {results['budget']}."), ""]
    if dev:
        lines += [f"Dev: {dev['queries']} train queries held out (seed {dev['seed']}), never trained on; base dev "
                  f"nDCG@10 {dev['base_ndcg@10']:.4f}." + (f" Chosen on dev: **{dev['selected']}**." if dev["selected"]
                                                             else ""), ""]
    head = "| variant | seeds | " + ("dev nDCG@10 | " if dev else "") + \
        "nDCG@10 | R@100 | MRR@10 | Δ base | p | Δ baseline | p | steps | train s |"
    lines += [head, "|" + "---|" * 2 + "---:|" * (head.count("|") - 3)]

    def ms(r: dict[str, Any], m: str) -> str:
        return f"{r[m]:.4f} ± {r[m + '_std']:.4f}"

    for r in results["variants"]:
        secs = f"{r['train_seconds']:.0f}" if "train_seconds" in r else "-"
        lines.append(f"| {r['variant']} | {r['seeds']} | " + (f"{r['dev_ndcg@10']:.4f} | " if dev else "") +
                     f"{ms(r, 'ndcg@10')} | {ms(r, 'recall@100')} | {ms(r, 'mrr@10')} | "
                     f"{r['delta_base']:+.4f} | {r['p_vs_base']:.3f} | "
                     f"{r.get('delta_baseline', 0.0):+.4f} | {r.get('p_vs_baseline', 1.0):.3f} | {steps_label(r)} | {secs} |")
    lines.append("")
    if not results.get("equal_steps", True):
        lines.append(f"**Unequal budget:** {UNEQUAL_BUDGET}")
    lines.append("p: paired randomisation test on per-query nDCG@10 (averaged over seeds), two-sided.")
    return "\n".join(lines) + "\n"
