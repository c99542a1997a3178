"""The ``hardneg`` command: thin wrappers that parse options, call the API and show progress."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .cli_options import field_help, options_from
from .config import MineConfig
from .generation.config import QueryGenConfig
from .generation.graded_config import GradedGenConfig
from .generation.negative_config import NegativeGenConfig
from .training.config import TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Mine hard negatives you can trust, with the reason each was kept or dropped.")
err = Console(stderr=True, soft_wrap=True)
out = Console()

Opt = typer.Option


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(2)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the command: one ``warning:`` line on the error console, with no
    Python source line (hardneg's own and plain UserWarnings bare, others with their category)."""
    from .errors import HardnegWarning

    text = " ".join(str(message).split())
    if category is not UserWarning and not issubclass(category, HardnegWarning):
        text = f"{category.__name__}: {text}"
    err.print(f"[bold yellow]warning:[/] {escape(text)}", highlight=False)


@app.callback()
def _console_setup() -> None:
    """Runs before every command: warnings go to the error console as one line each."""
    warnings.showwarning = _show_warning


def _call(fn: Any, **kwargs: Any) -> Any:
    """``fn(**kwargs)``, its errors as one ``error:`` line and exit code 2."""
    from .errors import HardnegError

    try:
        return fn(**kwargs)
    except HardnegError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()))


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line (the others are None and keep their defaults)."""
    return {k: v for k, v in options.items() if v is not None}


def _judges(specs: list[str] | None) -> dict[str, Any]:
    """``--judge`` values routed to the cross-encoder and LLM settings."""
    out: dict[str, Any] = {"judge": None, "llm_judge": None}
    for spec in specs or []:
        key = "llm_judge" if spec.startswith("llm:") else "judge"
        if out[key] is not None:
            _fail(f"--judge given twice for the same kind: {out[key]} and {spec}")
        out[key] = spec
    return out


# `mine` and `audit` take every MineConfig field as an option, declared once there (help = the
# field's description, default = the field's); `--judge` (repeatable) fills judge and llm_judge.
MINING = "Mining options (MineConfig fields)"
JudgeOpt = Annotated[list[str] | None, Opt(help=f"{field_help(MineConfig, 'judge')}; and/or "
                                           f"{field_help(MineConfig, 'llm_judge')}; repeat for both",
                                           rich_help_panel=MINING)]
QuietOpt = Annotated[bool, Opt(help="no progress bars")]
JsonOpt = Annotated[bool, Opt("--json", help="print one JSON object")]


def mining_options(*, skip: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """The MineConfig options of `mine` and `audit` (the same for both, less ``skip``)."""
    return options_from(MineConfig, panel=MINING, skip=("llm_judge", *skip), optional=("dataset",),
                        replace={"judge": JudgeOpt})


@app.command()
@mining_options()
def mine(
    config: Annotated[Path | None, Opt(help="YAML file of mining options (their names are its keys; flags "
                                            "override it)")] = None,
    overwrite: Annotated[bool, Opt(help="replace a run with other settings at --out")] = False,
    quiet: QuietOpt = False,
    **options: Any,
) -> None:
    """Mine hard negatives and write a run folder (candidates, negatives, manifest)."""
    from .mine import mine as mine_fn
    from .progress import Reporter

    if options["dataset"] is None and config is None:
        _fail("give --dataset (or --config with a dataset entry)")
    if options["out"] is None and config is None:
        _fail("give --out RUN_DIR")
    options |= _judges(options["judge"])
    run = _call(mine_fn, config=config, reporter=Reporter(not quiet), overwrite=overwrite, **options)
    _print_summary(run)


@app.command()
@mining_options(skip=("out",))
def audit(
    dataset: Annotated[str, Opt(help="a collection with qrels (BEIR folder, pairs file, HF id)")],
    split: Annotated[str, Opt(help="qrels split")] = "test",
    hide_fraction: Annotated[float, Opt(help="share of each query's positives hidden from the miner")] = 0.5,
    seed: Annotated[int, Opt(help="seed for which positives are hidden (and the miner's seed)")] = 0,
    save_run: Annotated[Path | None, Opt(help="write the final stage's run here, with its hidden positives, "
                                         "for `hardneg inspect`")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    **options: Any,
) -> None:
    """Measure false negatives: hide known positives, mine, count how many come back as negatives.
    FN rate, FN recall, coverage and hardness kept, per filter stage."""
    from .audit import audit as audit_fn
    from .audit import audit_table
    from .progress import Reporter

    options |= _judges(options["judge"])
    result = _call(audit_fn, dataset=dataset, split=split, hide_fraction=hide_fraction, seed=seed,
                   reporter=Reporter(not quiet and not as_json), save_run=save_run, **options)
    if as_json:
        typer.echo(json.dumps(result))
        return
    t = Table(title=escape(f"audit {dataset} [{split}]: {result['queries']} queries, {result['hidden_positives']} "
                           f"hidden positives ({hide_fraction:g} of each query's)"))
    for h in ("stage (cumulative)", "FN rate", "FN recall", "coverage", "hardness kept", "negatives"):
        t.add_column(h, justify="left" if h.startswith("stage") else "right", overflow="fold")
    for row in audit_table(result):
        t.add_row(*row)
    out.print(t)
    if result.get("calibration"):
        for kind, c in result["calibration"].items():
            out.print(f"calibrated {kind} = {c['value']:.4f}: {c['why']}", highlight=False)


@app.command("train-judge")
def train_judge(
    run_dir: Annotated[str, Opt("--run", "--negatives", help="run folder from `hardneg mine`: its positives and "
                                                           "negatives are the pairs")],
    out_dir: Annotated[str, Opt("--out", help="judge folder to write (a CrossEncoder + hardneg_judge.json)")],
    model: Annotated[str | None, Opt(help="backbone [default: packaged MiniLM with a fresh head]")] = None,
    dev_queries: Annotated[int, Opt(help="queries held out to calibrate the probabilities")] = 50,
    seed: Annotated[int, Opt(help="seed for the dev split and training")] = 0,
    epochs: Annotated[float, Opt(help="training epochs")] = 1.0,
    max_steps: Annotated[int, Opt(help="stop after this many steps (overrides epochs)")] = -1,
    batch_size: Annotated[int, Opt(help="pairs per batch")] = 16,
    max_length: Annotated[int, Opt(help="max tokens per (query, document) pair")] = 256,
    overwrite: Annotated[bool, Opt(help="replace a judge at --out")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a cross-encoder judge on labelled pairs plus mined negatives, calibrated on dev queries."""
    from .decisions.cross_encoder import MANIFEST
    from .decisions.cross_encoder import train_judge as train_fn

    path = _call(train_fn, run=run_dir, out=out_dir, model=model, dev_queries=dev_queries, seed=seed,
                 epochs=epochs, max_steps=max_steps, batch_size=batch_size, max_length=max_length,
                 overwrite=overwrite, progress=not quiet)
    meta = json.loads((Path(path) / MANIFEST).read_text())
    out.print(f"judge {path}: {meta['train_pairs']} training pairs, dev AUC {meta['dev_auc']:.3f} on "
              f"{meta['dev_pairs']} pairs, {meta['seconds']:.0f} s", highlight=False)


def _print_summary(run: Any) -> None:
    c = run.manifest["counts"]
    t = Table(title=f"run {run.path}", show_header=False)
    t.add_row("queries", str(c["queries"]))
    t.add_row("with all negatives", f"{c['queries_full']} ({c['full_rate']:.1%})")
    t.add_row("coverage", f"{c['coverage']:.1%} ({c['selected']} negatives, shortfall {c['shortfall_total']})")
    t.add_row("candidates", str(c["candidates"]))
    for reason, n in c["reasons"].items():
        t.add_row(f"  {reason}", str(n))
    llm = run.manifest.get("llm_judge")
    if llm:
        judged = llm.get("judged", llm["calls"] + llm["cache_hits"])
        t.add_row("LLM judge errors", f"{llm['errors']} of {judged} judged pairs (dropped as llm_error)")
    t.add_row("time", ", ".join(f"{k} {v:.1f}s" for k, v in run.manifest["timings"].items()))
    out.print(t)


@app.command()
def stats(
    run_dir: Annotated[Path, typer.Argument(help="run folder")],
    as_json: JsonOpt = False,
    bins: Annotated[int, Opt(help="histogram bins")] = 10,
) -> None:
    """Counts, shortfall and score histograms (positives vs selected vs kept vs dropped)."""
    from .runs.run import Run
    from .runs.summary import summary

    run = _call(Run.load, path=run_dir)
    s = summary(run=run, bins=bins)
    if as_json:
        print(json.dumps(s, indent=2))
        return
    _print_summary(run)
    edges = s["score_edges"]
    h = Table(title=f"score histogram ({s['teacher']} scores; filters {', '.join(s['filters']) or 'none'})")
    h.add_column("score from")
    for name in s["histograms"]:
        h.add_column(name, justify="right")
    for i in range(len(edges) - 1):
        h.add_row(f"{edges[i]:.3f}", *[str(v[i]) for v in s["histograms"].values()])
    h.add_row("mean", *[f"{m:.3f}" if m is not None else "-" for m in s["score_means"].values()])
    out.print(h)
    out.print("queries by shortfall: " + ", ".join(f"{k}: {v}" for k, v in s["shortfall_histogram"].items()))


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="run folder")],
    fmt: Annotated[str, Opt("--format", help="triplet | n-tuple | labeled-pair | labeled-list | flagembedding | tevatron")],
    out_path: Annotated[Path, Opt("--out", help="file (.parquet/.jsonl) or folder (tevatron)")],
    scores: Annotated[bool, Opt(help="include teacher scores (for distillation)")] = False,
    overwrite: Annotated[bool, Opt(help="replace an existing output")] = False,
    relabelled_as_positives: Annotated[bool, Opt(help="add the run's relabelled candidates (mined with --relabel) "
                                                 "to each query's positives")] = False,
) -> None:
    """Write a run in a training format; texts are joined from the run's dataset."""
    from .export import export as export_fn

    path = _call(export_fn, run=run_dir, fmt=fmt, out=out_path, with_scores=scores, overwrite=overwrite,
                 relabelled=relabelled_as_positives)
    out.print(f"wrote {path}")


@app.command()
def evaluate(
    dataset: Annotated[str, Opt(help="BEIR folder or HF dataset with qrels")],
    split: Annotated[str, Opt(help="qrels split")] = "test",
    model: Annotated[str | None, Opt(help="sentence-transformers model path or id [default: packaged MiniLM]")] = None,
    teacher: Annotated[str, Opt(help="dense | bm25 | hybrid")] = "dense",
    measure: Annotated[list[str] | None, Opt(help="measure to report, repeatable (ndcg@10, recall@100, mrr@10, map@100, or any pytrec_eval name)")] = None,
    depth: Annotated[int, Opt(help="documents retrieved per query")] = 1000,
    per_query: Annotated[Path | None, Opt(help="write per-query scores (JSON lines) here")] = None,
    cache_dir: Annotated[str | None, Opt(help="embedding cache folder")] = None,
    keep_identical_ids: Annotated[bool, Opt(help="keep documents whose id equals the query id")] = False,
    batch_size: Annotated[int, Opt(help="encoding batch size")] = 32,
    encoder: Annotated[str | None, Opt(help=field_help(MineConfig, "encoder") + " [default: auto]")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Retrieve over the whole corpus and report nDCG@10, Recall@100, MRR@10 (pytrec_eval semantics)."""
    from .evaluation.metrics import DEFAULT_MEASURES
    from .evaluation.retrieval import evaluate as evaluate_fn
    from .progress import Reporter

    measures = tuple(measure) if measure else DEFAULT_MEASURES
    res = _call(evaluate_fn, dataset=dataset, split=split, model=model, teacher=teacher, measures=measures,
                depth=depth, cache_dir=cache_dir, ignore_identical_ids=not keep_identical_ids, batch_size=batch_size,
                reporter=Reporter(not (quiet or as_json)), encoder=encoder or "auto")
    if per_query:
        res.save_per_query(per_query)
    if as_json:
        print(json.dumps(res.as_json()))
        return
    t = Table(title=f"{dataset} [{split}] {teacher}{':' + model if model else ''}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in res.metrics.items():
        t.add_row(k, f"{v:.4f}")
    t.add_row("queries", str(res.queries))
    out.print(t)


@app.command()
@options_from(TrainConfig, panel="Training options (TrainConfig fields)")
def train(
    run: Annotated[str | None, Opt("--run", help=field_help(TrainConfig, "run"))] = None,
    dataset: Annotated[str | None, Opt(help="dataset the run was mined from (checked against the run)")] = None,
    overwrite: Annotated[bool, Opt(help="replace a model trained with other settings")] = False,
    quiet: QuietOpt = False,
    **options: Any,
) -> None:
    """Fine-tune a bi-encoder on mined negatives (sentence-transformers trainer)."""
    options = _given(options)
    if run is None:  # --negatives RUN: the old name of --run (the negatives' source is then mined)
        from .training.generated_negatives import NEGATIVE_SOURCES

        source = options.pop("negatives", None)
        if source is None or source in NEGATIVE_SOURCES:
            _fail("give --run RUN_DIR (a run folder from `hardneg mine`)")
        run = source
    from .runs.run import Run
    from .training import train as train_fn

    loaded = _call(Run.load, path=run)
    mined_from = loaded.manifest["config"]["dataset"]
    if dataset is not None and str(Path(dataset).resolve()) != str(Path(mined_from).resolve()):
        _fail(f"{run}: was mined from {mined_from}, not {dataset}")
    path = _call(train_fn, run=loaded, overwrite=overwrite, progress=not quiet, **options)
    out.print(f"model saved to {path}")


@app.command()
def experiment(
    config: Annotated[Path, Opt(help="experiment YAML (variants, seeds, budget)")],
    out_dir: Annotated[Path | None, Opt("--out", help="experiment folder [default: runs/<name>]")] = None,
    quick: Annotated[bool, Opt(help="CI-sized: slices of the data, 3 training steps, one seed")] = False,
    variants: Annotated[str | None, Opt(help="comma-separated variant names to run (and the baseline)")] = None,
    seeds: Annotated[str | None, Opt(help="comma-separated seeds to run for every variant, replacing the config's "
                                          "(split a grid over processes, then rerun without it to merge)")] = None,
    cache_dir: Annotated[str | None, Opt(help="embedding cache folder")] = None,
    report_only: Annotated[bool, Opt(help="only rewrite results.md/json from the finished cells (nothing is "
                                          "trained: safe beside processes still running the grid)")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Mine -> train -> evaluate every variant with the same budget; finished cells are reused."""
    from .experiment.config import ExperimentConfig
    from .experiment.driver import report_experiment, run_experiment
    from .progress import Reporter

    cfg = _call(ExperimentConfig.from_file, path=config)
    if cache_dir:
        cfg.cache_dir = cache_dir
    folder = out_dir or Path("runs") / (cfg.name + ("-quick" if quick else ""))
    only = [v.strip() for v in variants.split(",")] if variants else None
    try:
        seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        _fail(f"--seeds: expected comma-separated integers, got '{seeds}'")
    if report_only:
        results, missing = _call(report_experiment, cfg=cfg, out=folder, quick=quick, only=only, seeds=seed_list)
        if missing:
            out.print(f"[yellow]{len(missing)} cell(s) not finished, left out:[/] {', '.join(missing)}")
    else:
        results = _call(run_experiment, cfg=cfg, out=folder, quick=quick, reporter=Reporter(not quiet), only=only,
                        seeds=seed_list)
    from .experiment.results import results_markdown

    print(results_markdown(results))
    print(f"results in {folder}/results.md and results.json")


@app.command()
def inspect(
    run_dir: Annotated[Path, typer.Argument(help="run folder")],
    compare: Annotated[Path | None, Opt(help="another run folder, or a sentence-transformers mine_hard_negatives "
                                       "output (.parquet/.jsonl/datasets folder), to diff the negatives with")] = None,
    out_path: Annotated[Path | None, Opt("--out", help="HTML file [default: RUN_DIR/inspect.html]")] = None,
    serve: Annotated[bool, Opt(help="serve the page from 127.0.0.1 instead (runs too big to embed)")] = False,
    port: Annotated[int, Opt(help="port for --serve (0: any free port)")] = 8765,
) -> None:
    """Browse a run: queries, every candidate with its scores and reason, charts, the manifest."""
    from .inspect.page import inspect as inspect_fn
    from .inspect.page import load_page

    if not serve:
        path = _call(inspect_fn, run=run_dir, out=out_path, compare=compare)
        out.print(f"wrote {path}")
        return
    from .inspect.serve import make_server

    page = _call(load_page, run=run_dir, compare=compare)
    server = make_server(page, str(run_dir), port)
    print(f"serving {run_dir} at http://127.0.0.1:{server.server_port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


@app.command()
def report(
    exp_dir: Annotated[Path, typer.Argument(help="experiment folder")],
    out_path: Annotated[Path | None, Opt("--out", help="HTML file [default: EXP_DIR/report.html]")] = None,
) -> None:
    """Write one self-contained HTML report for an experiment."""
    from .experiment.report import report as report_fn

    path = _call(report_fn, exp_dir=exp_dir, out=out_path)
    out.print(f"wrote {path}")


# `hardneg generate KIND`: one command per kind of generated data, each over its config model.
generate_app = typer.Typer(add_completion=False, no_args_is_help=True,
                           help="Write training data with an LLM for a corpus without labels.")
app.add_typer(generate_app, name="generate")


def _print_generation(t: Table, m: dict[str, Any]) -> None:
    """A generator's summary table, finished with what every generator reports: drops, LLM use, time."""
    for reason, n in m["counts"]["dropped"].items():
        t.add_row(f"  dropped: {reason}", str(n))
    g = m["generation"]
    t.add_row("LLM", f"{g['requests_asked']} requests asked, {g['from_cache']} from the cache, "
              f"{g['completion_tokens']} tokens generated")
    t.add_row("time", ", ".join(f"{k} {v:.1f}s" for k, v in m["timings"].items()))
    out.print(t)


@generate_app.command("queries")
@options_from(QueryGenConfig, panel="Generation options (QueryGenConfig fields)")
def generate_queries(
    overwrite: Annotated[bool, Opt(help="replace queries generated with other settings at --out")] = False,
    quiet: QuietOpt = False,
    **options: Any,
) -> None:
    """Write LLM queries for a corpus: a BEIR folder that `hardneg mine --dataset` reads.

    N per document, few-shot; bad output retried, then dropped; kept if a teacher ranks its document in its top k."""
    from .generation import generate_queries as generate_fn
    from .progress import Reporter

    res = _call(generate_fn, reporter=Reporter(not quiet), overwrite=overwrite, **_given(options))
    m = res.manifest
    t = Table(title=escape(f"generated queries {res.path}"), show_header=False)
    t.add_row("documents", f"{m['corpus']['written_for']} of {m['corpus']['docs']}")
    t.add_row("asked", str(m["counts"]["asked"]))
    t.add_row("kept", f"{m['counts']['kept']} ({m['counts']['queries']} queries, {m['counts']['qrels']} qrels)")
    _print_generation(t, m)


@generate_app.command("graded")
@options_from(GradedGenConfig, panel="Generation options (GradedGenConfig fields)")
def generate_graded(
    overwrite: Annotated[bool, Opt(help="replace documents generated with other settings at --out")] = False,
    quiet: QuietOpt = False,
    **options: Any,
) -> None:
    """Write LLM documents at graded relevance levels for a collection's queries (SyCL): a BEIR folder with
    graded qrels that `hardneg mine --dataset` reads, for `hardneg train --loss graded-wasserstein`.

    Per query and level (3 answers it fully ... 0 on topic but of no use); bad output retried, then dropped."""
    from .generation import generate_graded as generate_fn
    from .progress import Reporter

    res = _call(generate_fn, reporter=Reporter(not quiet), overwrite=overwrite, **_given(options))
    m = res.manifest
    t = Table(title=escape(f"graded documents {res.path}"), show_header=False)
    t.add_row("queries", f"{m['dataset']['written_for']} of {m['dataset']['judged_queries']}")
    t.add_row("asked", str(m["counts"]["asked"]))
    t.add_row("kept", f"{m['counts']['kept']} (" + ", ".join(f"level {lv}: {n}" for lv, n in
                                                          m["counts"]["kept_per_level"].items()) + ")")
    t.add_row("real positives", f"grades {m['dataset']['real_grades']['rule']}")
    _print_generation(t, m)


NEGATIVES = "Generation options (NegativeGenConfig fields)"


@generate_app.command("negatives")
@options_from(NegativeGenConfig, panel=NEGATIVES, skip=("llm_judge",), replace={"judge": Annotated[
    list[str] | None, Opt(help=f"{field_help(NegativeGenConfig, 'judge')}; and/or "
                          f"{field_help(NegativeGenConfig, 'llm_judge')}; repeat for both", rich_help_panel=NEGATIVES)]})
def generate_negatives(
    overwrite: Annotated[bool, Opt(help="replace negatives generated with other settings at --out")] = False,
    quiet: QuietOpt = False,
    **options: Any,
) -> None:
    """Write LLM hard negatives: per query a passage that looks relevant but does not answer it.

    Synthetic documents gen-neg:<query id>:<k>, attached to their query only; bad output retried, then dropped;
    the judge drops accidental positives. Train with them: `hardneg train --negatives generated|both --generated OUT`."""
    from .generation.negatives import generate_negatives as generate_fn
    from .progress import Reporter

    options = _given(options | _judges(options["judge"]))
    res = _call(generate_fn, reporter=Reporter(not quiet), overwrite=overwrite, **options)
    m = res.manifest
    t = Table(title=escape(f"generated negatives {res.path}"), show_header=False)
    t.add_row("queries", f"{m['dataset']['written_for']} of {m['dataset']['queries']}")
    t.add_row("asked", str(m["counts"]["asked"]))
    t.add_row("kept", f"{m['counts']['kept']} ({m['counts']['queries_with_negatives']} queries)")
    _print_generation(t, m)


def main() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
