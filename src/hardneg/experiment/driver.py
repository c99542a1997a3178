"""run_experiment(): every cell of the grid (variants x seeds), the dev choice, results.json and results.md.

Cells run seed-major (a grid cut short stays balanced) and are cached in the experiment folder, so a
grid can be run over several sittings, or split by seed over processes and merged by rerunning."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..collection import Collection, load
from ..errors import ConfigError
from ..evaluation.retrieval import Evaluation
from ..progress import SILENT, Reporter
from ..runs.files import write_json, write_text
from .cells import Cells, evaluate_cell, load_evaluation
from .config import ExperimentConfig, Variant, quick_config
from .results import PRIMARY, results_markdown, summarise


def run_experiment(cfg: ExperimentConfig, out: str | Path, quick: bool = False,
                   reporter: Reporter = SILENT, only: list[str] | None = None,
                   seeds: list[int] | None = None) -> dict[str, Any]:
    """Run (or resume) every cell and write ``results.json`` and ``results.md`` into ``out``.

    Args:
        cfg: the experiment (variants, seeds, budget, baseline, dev split).
        out: the experiment folder; finished cells in it are reused.
        quick: CI-sized (:func:`hardneg.experiment.config.quick_config`) on slices of the data.
        reporter: progress reporter.
        only: run only these variants (the baseline is kept if it was set).
        seeds: replace every variant's seeds (see :meth:`ExperimentConfig.with_seeds`).

    Returns:
        The results dict (:func:`hardneg.experiment.results.summarise`), as written to ``results.json``.

    Example:
        ::

            from hardneg.experiment.config import ExperimentConfig
            from hardneg.experiment.driver import run_experiment

            results = run_experiment(ExperimentConfig.from_file("benchmarks/scifact_ab.yaml"), "runs/ab")
    """
    cfg, out = _narrowed(cfg, quick, only, seeds), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "experiment.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    train_col = load(cfg.dataset, cfg.train_split)
    test_col = load(cfg.test_dataset or cfg.dataset, cfg.test_split)
    if quick:
        train_col = _quick_slice(train_col, 40)
        test_col = _quick_slice(test_col, 30)
    train_col, dev_col = split_dev(cfg, train_col, quick)
    names = [v.name for v in cfg.variants]
    if len(set(names)) != len(names):
        raise ConfigError("variant names must be distinct")
    for name in cfg.baselines:
        if name not in names:
            raise ConfigError(f"baseline '{name}' is not a variant ({', '.join(names)})")
    if cfg.best_seeds and dev_col is None:
        raise ConfigError("best_seeds needs dev_queries > 0 or a dev_split: the best variant is chosen on dev, never on test")

    base = evaluate_cell(out / "base", test_col, dev_col, cfg.base_model, cfg, reporter)
    cells = Cells(out, cfg, train_col, test_col, dev_col, reporter)
    plan = {v.name: list(v.seeds or cfg.seeds) for v in cfg.variants}
    for v, seed in seed_major(cfg.variants, plan):
        cells.run(v, seed)
    best = None
    if cfg.best_seeds:
        best = _best_on_dev(cells.load, [v for v in cfg.variants if v.kind == "hardneg"], plan)
        extra = {v.name: [s for s in cfg.best_seeds if s not in plan[v.name]]
                 for v in cfg.variants if v.name == best or v.name in cfg.baselines}
        for v, seed in seed_major(cfg.variants, extra):
            plan[v.name].append(seed)
            cells.run(v, seed)
    return _write_results(cfg, out, base, plan, dev_col is not None, best)


def report_experiment(cfg: ExperimentConfig, out: str | Path, quick: bool = False, only: list[str] | None = None,
                      seeds: list[int] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Rewrite ``results.json`` and ``results.md`` from the cells already finished in ``out``: nothing is
    mined, trained or evaluated, so it is safe to run beside the processes still filling the grid.

    Args:
        cfg: the experiment, as for :func:`run_experiment`.
        out: the experiment folder.
        quick: the folder holds a ``--quick`` grid.
        only: report only these variants (and the baseline).
        seeds: the seeds to report, replacing the config's.

    Returns:
        (the results dict, the cells not finished yet as ``variant/seed-N``). Each row's ``seeds`` column
        says how many seeds it averages.

    Example:
        ::

            results, missing = report_experiment(ExperimentConfig.from_file("benchmarks/scifact_ab.yaml"), "runs/ab")
    """
    cfg, out = _narrowed(cfg, quick, only, seeds), Path(out)
    base = load_evaluation(out / "base")
    if base is None:
        raise ConfigError(f"{out / 'base' / 'metrics.json'}: the base model is not evaluated yet; run the experiment")
    write_text(out / "experiment.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))

    def load_cell(name: str, seed: int, prefix: str = "") -> Evaluation | None:
        return load_evaluation(out / "variants" / name / f"seed-{seed}", prefix)

    wanted = {v.name: list(v.seeds or cfg.seeds) for v in cfg.variants}
    has_dev = bool(cfg.dev_split or cfg.dev_queries)
    best = None
    if cfg.best_seeds and has_dev:
        done = {name: [s for s in ss if load_cell(name, s, "dev_") is not None] for name, ss in wanted.items()}
        best = _best_on_dev(load_cell, [v for v in cfg.variants if v.kind == "hardneg" and done[v.name]], done)
        for name, ss in wanted.items():
            if name == best or name in cfg.baselines:
                ss += [s for s in cfg.best_seeds if s not in ss]
    missing = [f"{name}/seed-{s}" for name, ss in wanted.items() for s in ss if load_cell(name, s) is None]
    plan = {name: [s for s in ss if load_cell(name, s) is not None] for name, ss in wanted.items()}
    empty = [name for name, ss in plan.items() if not ss]
    if set(empty) & set(cfg.baselines):
        raise ConfigError(f"{out}: the baseline has no finished cell yet ({', '.join(sorted(set(empty) & set(cfg.baselines)))})")
    cfg = cfg.model_copy(update={"variants": [v for v in cfg.variants if v.name not in empty]})
    plan = {name: ss for name, ss in plan.items() if ss}
    return _write_results(cfg, out, base, plan, has_dev, best), missing


def _narrowed(cfg: ExperimentConfig, quick: bool, only: list[str] | None, seeds: list[int] | None) -> ExperimentConfig:
    """The grid a command asks for: CI-sized with ``quick``, then these seeds, then these variants (and the baseline)."""
    if quick:
        cfg = quick_config(cfg)
    if seeds is not None:
        cfg = cfg.with_seeds(seeds)
    return cfg.with_variants(only) if only else cfg


def _write_results(cfg: ExperimentConfig, out: Path, base: Evaluation, plan: dict[str, list[int]], has_dev: bool,
                   best: str | None) -> dict[str, Any]:
    """Summarise the finished cells of ``plan`` against the base model and write results.json and results.md."""

    def cell(name: str, seed: int, prefix: str = "") -> Evaluation:
        ev = load_evaluation(out / "variants" / name / f"seed-{seed}", prefix)
        if ev is None:
            raise ConfigError(f"{out / 'variants' / name / f'seed-{seed}'}: {prefix}metrics.json is missing")
        return ev

    test = {name: [cell(name, s) for s in seeds] for name, seeds in plan.items()}
    dev = None
    if has_dev:
        dev = {name: [cell(name, s, "dev_") for s in seeds] for name, seeds in plan.items()}
        dev["__base__"] = [load_evaluation(out / "base", "dev_")]  # type: ignore[list-item]
    results = summarise(cfg, base, test, dev, best)
    write_json(out / "results.json", results)
    write_text(out / "results.md", results_markdown(results))
    return results


def split_dev(cfg: ExperimentConfig, train: Collection, quick: bool = False) -> tuple[Collection, Collection | None]:
    """(the queries to train on, the dev queries): the dataset's ``dev_split``, or ``dev_queries`` train
    queries held out (never mined or trained on), or no dev at all."""
    if cfg.dev_split:
        dev = load(cfg.test_dataset or cfg.dataset, cfg.dev_split)
        return train, _quick_slice(dev, 20) if quick else dev
    if cfg.dev_queries:
        return (train.holdout(cfg.dev_queries, cfg.dev_seed, "fit"),
                train.holdout(cfg.dev_queries, cfg.dev_seed, "dev"))
    return train, None


def _quick_slice(col: Collection, queries: int, max_positives: int = 400) -> Collection:
    """A CI-sized slice: up to ``queries`` judged queries, fewer where queries have many positives (NFCorpus:
    ~40 each), so that the slice's corpus (their positives + 60 others) stays a few hundred documents at most:
    encoding them for mining and for each cell's dev and test scores is most of a quick grid's time."""
    per_query = col.positives().query_idx.size / max(col.judged_queries().size, 1)
    return col.slice(int(min(queries, max(5, max_positives // max(per_query, 1.0)))), extra_docs=60)


def seed_major(variants: list[Variant], plan: dict[str, list[int]]) -> list[tuple[Variant, int]]:
    """The cells of ``plan`` (variant name -> seeds; variants not in it have none) in the order they run: every
    variant's seed s before any variant's next seed, variants in the config's order. A grid cut short, the dev
    choice's extra seeds included, then has as many seeds of the chosen variant as of its baselines (give or
    take one)."""
    seeds = sorted({s for ss in plan.values() for s in ss})
    return [(v, s) for s in seeds for v in variants if s in plan.get(v.name, ())]


def _best_on_dev(load_cell: Callable[[str, int, str], Evaluation | None], candidates: list[Variant],
                 plan: dict[str, list[int]]) -> str | None:
    """The candidate with the highest mean dev nDCG@10 over its finished seeds."""
    scores = {}
    for v in candidates:
        evs = [load_cell(v.name, s, "dev_") for s in plan[v.name]]
        scores[v.name] = float(np.mean([e.metrics[PRIMARY] for e in evs if e is not None]))
    return max(scores, key=lambda k: scores[k]) if scores else None
