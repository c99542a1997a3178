"""The experiment loop: cells, the ST recipe tables, the dev choice, results with CIs and p, the grid end to end
(--quick) and its report. Its own file so that the suite's two workers (pytest-xdist, --dist loadfile) share the
slow grid tests and the training tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.evaluation.comparison import paired_randomisation
from hardneg.evaluation.retrieval import Evaluation
from hardneg.experiment.config import ExperimentConfig
from hardneg.experiment.report import report
from hardneg.experiment.results import results_markdown, summarise
from hardneg.training.precision import training_bf16

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

def test_paired_randomisation():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    assert paired_randomisation(a, a) == 1.0
    assert paired_randomisation(a + 0.05, a, 2000) < 0.01
    assert paired_randomisation(a + rng.normal(0, 0.01, 200), a, 2000) > 0.01


def test_cells_that_trained_different_steps_are_flagged_as_an_unequal_budget(tmp_path):
    """An epoch budget gives each variant its own number of steps (ST's recipe drops under-filled queries);
    the table must show it rather than pass the difference off as the mining choice's."""
    def cell(ndcg: float, steps: int) -> Evaluation:
        pq = {f"q{i}": ndcg + 0.01 * i for i in range(5)}
        return Evaluation({"ndcg@10": ndcg, "recall@100": 0.9, "mrr@10": ndcg}, {"ndcg@10": pq}, 5,
                          {"train_seconds": 1.0, "train_steps": steps})
    cfg = ExperimentConfig(dataset="x", baseline="st", variants=[{"name": "st", "kind": "st"}, {"name": "mined"}])
    base = Evaluation({"ndcg@10": 0.5, "recall@100": 0.9, "mrr@10": 0.5},
                      {"ndcg@10": {f"q{i}": 0.5 for i in range(5)}}, 5)
    unequal = summarise(cfg, base, {"st": [cell(0.6, 22)], "mined": [cell(0.62, 26), cell(0.61, 25)]})
    assert not unequal["equal_steps"] and unequal["variants"][1]["train_steps"] == [25, 26]
    text = results_markdown(unequal)
    assert "Unequal budget" in text and "| 25/26 |" in text
    (tmp_path / "results.json").write_text(json.dumps(unequal))
    assert "Unequal budget" in report(tmp_path).read_text()
    equal = summarise(cfg, base, {"st": [cell(0.6, 25)], "mined": [cell(0.62, 25)]})
    assert equal["equal_steps"] and "Unequal budget" not in results_markdown(equal)


def test_with_two_baselines_every_variant_is_compared_with_the_better_one_on_test():
    """Issue 14's rule: hardneg must beat the better of the ST recipe and the skilled-ST-user baseline, so the
    deltas, CIs and p-values are against whichever of the two has the higher mean test nDCG@10."""
    def cell(ndcg: float) -> Evaluation:
        pq = {f"q{i}": ndcg + 0.01 * i for i in range(6)}
        return Evaluation({"ndcg@10": ndcg, "recall@100": 0.9, "mrr@10": ndcg}, {"ndcg@10": pq}, 6, {"train_steps": 5})
    base = Evaluation({"ndcg@10": 0.5, "recall@100": 0.9, "mrr@10": 0.5}, {"ndcg@10": {f"q{i}": 0.5 for i in range(6)}}, 6)
    variants = [{"name": "st", "kind": "st"}, {"name": "st-strong", "kind": "st"}, {"name": "mined"}]
    for strong, expected in ((0.64, "st-strong"), (0.58, "st")):
        cfg = ExperimentConfig(dataset="x", baseline=["st", "st-strong"], variants=variants)
        res = summarise(cfg, base, {"st": [cell(0.6), cell(0.6)], "st-strong": [cell(strong)], "mined": [cell(0.62)]})
        assert res["baseline"] == expected and res["baselines"] == ["st", "st-strong"]
        mined = res["variants"][2]
        assert mined["delta_baseline"] == pytest.approx(0.62 - max(0.6, strong))
        assert f"Baseline: {expected} (the better on test of" in results_markdown(res)
    assert ExperimentConfig(dataset="x", baseline="st", variants=variants).baselines == ["st"]
    assert ExperimentConfig(dataset="x", variants=variants).with_variants(["mined"]).variants[0].name == "mined"


def test_quick_experiment_and_report_through_the_cli(tmp_path, cache_dir, scifact_dir):
    """benchmarks/scifact_ab.yaml (issue 14) in CI size, on two ensemble-mined variants (one distilling the
    teacher's scores, one with a budget override) and both ST baselines (the recipe; mpnet's output_scores +
    MarginMSE): mined, trained, scored on dev and test, the dev choice, the extra seeds, the resume, the report."""
    cfg = tmp_path / "exp.yaml"
    text = (ROOT / "benchmarks" / "scifact_ab.yaml").read_text().replace("../../shared/data/",
                                                                          str(scifact_dir.parent) + "/")
    text = text.replace("  - name: mnrl-hn-ensemble-mined\n",
                        "  - name: mnrl-hn-ensemble-mined\n    budget: {max_length: 48}\n")  # an override
    cfg.write_text(text)
    out = tmp_path / "exp"
    hardneg = ["mnrl-kl-ensemble", "mnrl-hn-ensemble-mined"]
    only = ["--variants", ",".join([*hardneg, "st-mpnet-marginmse"])]
    res = runner.invoke(app, ["experiment", "--config", str(cfg), "--quick", "--out", str(out),
                              "--cache-dir", str(cache_dir), "--quiet", *only])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    names = [r["variant"] for r in results["variants"]]
    assert names == ["st-recipe", "st-mpnet-marginmse", *hardneg]
    assert results["baseline"] in {"st-recipe", "st-mpnet-marginmse"}  # the better of the two on test
    for r in results["variants"]:
        assert 0.0 <= r["ndcg@10"] <= 1.0 and 0.0 <= r["dev_ndcg@10"] <= 1.0
        assert r["train_seconds"] > 0 and r["train_steps"] == [3]
        if r["variant"] != results["baseline"]:
            assert 0.0 < r["p_vs_base"] <= 1.0 and "ci_baseline" in r
        if r["variant"] in hardneg:
            assert "mine_seconds" in r
    assert results["equal_steps"] and "Unequal budget" not in (out / "results.md").read_text()
    assert (out / "results.md").read_text().count("\n| ") == 5
    made = json.loads((out / "variants" / "mnrl-kl-ensemble" / "seed-0" / "model" / "hardneg_train.json").read_text())
    assert made["loss"]["class"] == "InfoNCEDistillLoss" and made["config"]["teacher_scores"] == "all"
    # The best variant is chosen on dev (held-out train queries), never on test; it and both baselines get
    # the extra seeds, and no dev query is ever trained on.
    chosen = results["dev"]["selected"]
    dev_scores = {name: json.loads((out / "variants" / name / "seed-0" / "dev_metrics.json").read_text())["ndcg@10"]
                  for name in hardneg}
    assert chosen == max(dev_scores, key=lambda k: dev_scores[k])
    assert {r["variant"]: r["seeds"] for r in results["variants"] if r["seeds"] == 2} == {
        chosen: 2, "st-recipe": 2, "st-mpnet-marginmse": 2}
    dev_ids = {json.loads(x)["query_id"] for x in (out / "base" / "dev_per_query.jsonl").read_text().splitlines()}
    test_ids = {json.loads(x)["query_id"] for x in (out / "base" / "per_query.jsonl").read_text().splitlines()}
    assert len(dev_ids) == 10 and not dev_ids & test_ids
    from hardneg.runs.run import Run

    for name in hardneg:
        run = Run.load(out / "variants" / name / "run")
        trained = set(run.negatives.column("query_id").to_pylist())
        assert trained and not trained & dev_ids
    lengths = {p.parts[-4]: json.loads(p.read_text())["config"]["max_length"]
               for p in out.glob("variants/*/seed-0/model/hardneg_train.json")}
    assert lengths.pop("mnrl-hn-ensemble-mined") == 48 and set(lengths.values()) == {64}  # the variant's override
    done = {p: p.stat().st_mtime_ns for p in out.glob("variants/*/seed-*/metrics.json")}
    assert len(done) == 7
    res = runner.invoke(app, ["experiment", "--config", str(cfg), "--quick", "--out", str(out),
                              "--cache-dir", str(cache_dir), "--quiet", *only])
    assert res.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in done} == done  # resumed: no cell redone
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    page = (out / "report.html").read_text()
    # Vega-Lite charts (issue 16 replaced the hand-drawn SVG): the Δ chart with CIs, a win/loss scatter per
    # variant against the baseline, the training curves (3 steps, each logged), a histogram per mined run.
    assert page.count('vegaEmbed("#chart-') == 1 + 3 + 1 + 2 and "st-recipe" in page
    assert "No training loss was recorded" not in page and page.count('<p class="wl">') == 3
    for name in hardneg:  # each mined variant links its run's inspector page, written beside the run
        assert f'href="variants/{name}/run/inspect.html"' in page
        assert (out / "variants" / name / "run" / "inspect.html").stat().st_size > 100_000


def test_every_benchmark_experiment_yaml_parses(scifact_dir):
    """The grids no CI test runs whole (the mining grid, NFCorpus, the graded ones) are valid configs."""
    from hardneg.experiment.config import ExperimentConfig

    for path in sorted((ROOT / "benchmarks").glob("*.yaml")):
        cfg = ExperimentConfig.from_file(path)
        assert cfg.variants and set(cfg.baselines) <= {v.name for v in cfg.variants}, path
    # The evaluation's encoder is one mining knows; the quick version evaluates short, with torch.
    from hardneg.candidates.encoders import ENCODERS
    from hardneg.experiment.config import quick_config

    with pytest.raises(ValueError, match="eval_encoder") as bad:
        ExperimentConfig(dataset="x", variants=[{"name": "a"}], eval_encoder="fast")
    assert all(e in str(bad.value) for e in ENCODERS)
    assert (cfg.eval_encoder, cfg.eval_max_length) == ("auto", None)
    assert (quick_config(cfg).eval_encoder, quick_config(cfg).eval_max_length) == ("torch", 64)


def test_a_grid_split_by_seed_over_processes_merges_without_redoing_cells(tmp_path, cache_dir, scifact_dir):
    """``--seeds`` runs one seed of every variant (one process or GPU each); joining the folders and
    rerunning with both seeds reuses every cell and reports both seeds."""
    cfg = tmp_path / "exp.yaml"
    data = scifact_dir
    cfg.write_text(f"name: split\ndataset: {data}\nseeds: [0]\nvariants:\n"
                   "  - {name: in-batch, loss: mnrl, mine: {teacher: bm25, filter: none, num_negatives: 1}}\n")
    parts = {s: tmp_path / f"part-{s}" for s in (0, 1)}
    for s, folder in parts.items():
        res = runner.invoke(app, ["experiment", "--config", str(cfg), "--quick", "--seeds", str(s), "--out",
                                  str(folder), "--cache-dir", str(cache_dir), "--quiet"])
        assert res.exit_code == 0, res.output
        assert [p.name for p in folder.glob("variants/in-batch/seed-*")] == [f"seed-{s}"]
    # --report-only, while seed 1 still runs elsewhere: the table from the finished cells, the missing ones named
    report_only = ["experiment", "--config", str(cfg), "--quick", "--seeds", "0,1", "--out", str(parts[0]),
                   "--report-only"]
    res = runner.invoke(app, report_only)
    assert res.exit_code == 0, res.output
    assert "1 cell(s) not finished, left out: in-batch/seed-1" in res.output
    assert json.loads((parts[0] / "results.json").read_text())["variants"][0]["seeds"] == 1
    shutil.copytree(parts[1] / "variants" / "in-batch" / "seed-1", parts[0] / "variants" / "in-batch" / "seed-1")
    done = {p: p.stat().st_mtime_ns for p in parts[0].glob("variants/*/seed-*/metrics.json")}
    res = runner.invoke(app, ["experiment", "--config", str(cfg), "--quick", "--seeds", "0,1", "--out",
                              str(parts[0]), "--cache-dir", str(cache_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in done} == done
    (row,) = json.loads((parts[0] / "results.json").read_text())["variants"]
    assert row["seeds"] == 2
    res = runner.invoke(app, report_only)
    assert res.exit_code == 0 and "not finished" not in res.output, res.output
    assert json.loads((parts[0] / "results.json").read_text())["variants"] == [row]
    gone = runner.invoke(app, [*report_only[:-2], str(tmp_path / "nothing"), "--report-only"])
    assert gone.exit_code != 0 and "base/metrics.json: the base model is not evaluated yet" in gone.output
    # What a clone of the repository holds of a grid under benchmarks/results/ (the .gitignore drops the models,
    # mined runs and ST tables) is enough to resume it on a new machine: no cell is redone, the table is the same.
    files = [p for p in parts[0].rglob("*") if p.is_file()]
    as_committed = "\n".join(f"benchmarks/results/split/{p.relative_to(parts[0])}" for p in files)
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input=as_committed,
                             capture_output=True, text=True, check=False).stdout.split()
    assert any("/model/" in p for p in ignored) and any("/run/" in p for p in ignored)
    for p in ignored:
        (parts[0] / Path(p).relative_to("benchmarks/results/split")).unlink()
    res = runner.invoke(app, ["experiment", "--config", str(cfg), "--quick", "--seeds", "0,1", "--out",
                              str(parts[0]), "--cache-dir", str(cache_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in done} == done
    assert not [p for p in (parts[0] / "variants").rglob("*") if p.is_file() and "model" in p.parts]  # none trained
    assert json.loads((parts[0] / "results.json").read_text())["variants"] == [row]
    # each cell keeps its training log beside its metrics, so the report still draws the training curves
    for cell in (parts[0] / "variants" / "in-batch").glob("seed-*"):
        assert json.loads((cell / "train.json").read_text())["loss_log"]
    assert "Training curves" in report(parts[0]).read_text()
    bad = runner.invoke(app, ["experiment", "--config", str(cfg), "--quick", "--seeds", "x", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "--seeds" in bad.output


def test_a_grid_cell_takes_the_dev_choice_model_of_its_budget_only_when_its_settings_match(tmp_path, cache_dir,
                                                                                          scifact_dir):
    """benchmarks/dev_choice.py trains seed 0 at the grid's budget into ``steps-N/seed-0/model``; the grid's
    seed-0 cell then evaluates that model instead of training it again, unless its settings differ."""
    cfg = tmp_path / "exp.yaml"
    text = (f"name: reuse\ndataset: {scifact_dir}\nseeds: [0]\nvariants:\n"
            "  - {name: in-batch, loss: mnrl, mine: {teacher: bm25, filter: none, num_negatives: 1}}\n")
    cfg.write_text(text)
    out = tmp_path / "exp"
    args = ["experiment", "--config", str(cfg), "--quick", "--out", str(out), "--cache-dir", str(cache_dir), "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    cell = out / "variants" / "in-batch" / "seed-0"
    chosen = cell.parent / f"steps-3{'-bf16' if training_bf16(None) else ''}" / "seed-0"  # the precision used
    chosen.mkdir(parents=True)
    os.replace(cell / "model", chosen / "model")
    shutil.rmtree(cell)
    made = (chosen / "model" / "hardneg_train.json").read_text()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (cell / "model" / "hardneg_train.json").read_text() == made  # the same model, not trained again
    assert (cell / "metrics.json").exists()
    shutil.rmtree(cell)
    cfg.write_text(text.replace("num_negatives: 1}", "num_negatives: 1}, budget: {learning_rate: 5.0e-5}"))
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    again = json.loads((cell / "model" / "hardneg_train.json").read_text())
    assert again["config"]["learning_rate"] == 5e-5 and again["fingerprint"] != json.loads(made)["fingerprint"]


def test_the_nfcorpus_grid_reads_its_real_dev_split_and_keeps_it_out_of_training(scifact_dir):
    """benchmarks/nfcorpus_ab.yaml (its quick run through the CLI is the SciFact case below, on another dataset;
    CI time): the real dev split is the dev collection, no dev query is a train query, the baselines are set."""
    from hardneg.collection import load
    from hardneg.experiment.driver import split_dev

    cfg = ExperimentConfig.from_file(ROOT / "benchmarks" / "nfcorpus_ab.yaml")
    cfg = cfg.model_copy(update={"dataset": str(scifact_dir.parent / "nfcorpus")})
    train, dev = split_dev(cfg, load(cfg.dataset, cfg.train_split))
    assert dev is not None and len(dev.judged_queries()) == 324
    assert cfg.baselines == ["st-recipe", "st-recipe-auto-range", "st-mpnet-marginmse-auto-range"]
    assert not set(dev.query_ids[dev.judged_queries()].tolist()) & set(train.query_ids[train.judged_queries()].tolist())
    assert {v.name for v in cfg.variants} >= {"st-recipe", "st-mpnet-marginmse-auto-range", "mnrl-kl-ensemble"}




def test_the_st_recipe_table_is_never_half_written(scifact_slice, tmp_path, monkeypatch):
    """A run killed while writing the ST recipe's mined table leaves no file that a rerun would take as done:
    the table is written to a temporary file and renamed; its mining seconds are written before it."""
    import pyarrow.parquet as pq

    from hardneg.experiment import cells
    from hardneg.experiment.config import ExperimentConfig

    cfg = ExperimentConfig(dataset="x", variants=[{"name": "st", "kind": "st", "loss": "mnrl-hn",
                                                   "st": {"relative_margin": 0.05, "num_negatives": 1, "range_max": 10}}])
    path = tmp_path / "st" / "st-mined" / "table.parquet"
    real = pq.write_table

    def killed(table, where, *a, **k):  # half the bytes reach the disk, then the process dies
        real(table, where, *a, **k)
        Path(where).write_bytes(Path(where).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(cells.pq, "write_table", killed)
    with pytest.raises(KeyboardInterrupt):
        cells.st_table(scifact_slice, cfg.variants[0], cfg, path)
    assert not path.exists() and list(path.parent.glob("*.parquet*")) == []
    monkeypatch.setattr(cells.pq, "write_table", real)
    table = cells.st_table(scifact_slice, cfg.variants[0], cfg, path)
    assert pq.read_table(path).num_rows == table.num_rows > 0
    assert json.loads(path.with_suffix(".json").read_text())["rows"] == table.num_rows


def test_each_st_mining_encodes_with_its_own_model(scifact_slice, static_model, tmp_path):
    """Two ST recipes of one experiment that mine with different models (the ST baseline and a skilled user's
    stronger model) each get their own model's embeddings and scores. sentence-transformers keys its embedding
    cache by the model's hub name, which a model loaded from a folder does not have: a shared cache folder
    handed the second recipe the first one's embeddings."""
    from hardneg.experiment import cells
    from hardneg.experiment.config import ExperimentConfig

    st = {"relative_margin": 0.05, "num_negatives": 2, "range_max": 10}
    cfg = ExperimentConfig(dataset="x", variants=[
        {"name": "minilm", "kind": "st", "loss": "margin-mse", "st": st},
        {"name": "static", "kind": "st", "loss": "margin-mse", "st": st | {"model": static_model}}])
    mined = tmp_path / "exp" / "st-mined"
    cells.st_table(scifact_slice, cfg.variants[0], cfg, mined / "a.parquet")
    shared = cells.st_table(scifact_slice, cfg.variants[1], cfg, mined / "b.parquet")
    alone = cells.st_table(scifact_slice, cfg.variants[1], cfg, tmp_path / "alone" / "st-mined" / "b.parquet")
    assert shared.to_pylist() == alone.to_pylist()


def test_an_st_recipe_table_is_keyed_by_the_model_that_mines_it(scifact_slice, tmp_path):
    """The ST recipe mines with the base model unless ``st.model`` names another: two experiments with different
    base models that share one folder must not share a mined table (the first one's would train the second)."""
    from hardneg.experiment.cells import Cells
    from hardneg.experiment.config import ExperimentConfig
    from hardneg.progress import SILENT

    def path(base_model: str | None, **st: str) -> Path:
        cfg = ExperimentConfig(dataset="x", base_model=base_model,
                               variants=[{"name": "st", "kind": "st", "st": {"relative_margin": 0.05} | st}])
        return Cells(tmp_path, cfg, scifact_slice, scifact_slice, None, SILENT).st_table_path(cfg.variants[0])

    assert len({path(None), path("a/model"), path("b/model")}) == 3
    assert path(None, model="m") == path("a/model", model="m") == path("b/model", model="m")
    assert path("a/model") == path(None, model="a/model")  # the same miner, the same table


def test_an_experiment_file_reads_its_generated_negatives_folder_relative_to_itself(tmp_path, monkeypatch):
    """``train.generated`` (the LLM-written negatives of ``hardneg generate negatives``) is a path like
    ``dataset``: relative to the experiment file where it exists there, so the grid runs from any directory."""
    from hardneg.experiment.config import ExperimentConfig

    (tmp_path / "bench").mkdir()
    (tmp_path / "gen").mkdir()
    (tmp_path / "bench" / "exp.yaml").write_text(
        "dataset: ../data\nvariants:\n  - {name: both, train: {negatives: both, generated: ../gen}}\n"
        "  - {name: elsewhere, train: {negatives: generated, generated: not-made-yet}}\n")
    monkeypatch.chdir(tmp_path / "bench")
    cfg = ExperimentConfig.from_file(tmp_path / "bench" / "exp.yaml")
    assert cfg.variants[0].train["generated"] == str(tmp_path / "gen")
    assert cfg.variants[1].train["generated"] == "not-made-yet"  # left to the working directory


def test_dev_choice_compares_a_cell_with_a_baseline_query_by_query(tmp_path):
    """``dev_choice.py --against``: the line it prints is the paired comparison of the two cells' per-query dev
    nDCG@10 (matched by query id, whatever the file order), and cells over other queries are refused."""
    import importlib.util

    from hardneg.evaluation.comparison import compare

    spec = importlib.util.spec_from_file_location("dev_choice", ROOT / "benchmarks" / "dev_choice.py")
    assert spec is not None and spec.loader is not None
    dev_choice = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev_choice)
    rng = np.random.default_rng(0)
    a, b = rng.random(40), rng.random(40)
    for name, values in (("new", a), ("base", b)):
        Evaluation({"ndcg@10": float(values.mean()), "recall@100": 1.0, "mrr@10": 1.0},
                   {"ndcg@10": {f"q{i}": float(v) for i, v in enumerate(values)},
                    "recall@100": {f"q{i}": 1.0 for i in range(40)}, "mrr@10": {f"q{i}": 1.0 for i in range(40)}},
                   40).save_per_query(tmp_path / name / "dev_per_query.jsonl")
        (tmp_path / name / "dev_metrics.json").write_text(json.dumps(
            {"ndcg@10": float(values.mean()), "recall@100": 1.0, "mrr@10": 1.0, "queries": 40}))
    base_lines = (tmp_path / "base" / "dev_per_query.jsonl").read_text().splitlines()
    (tmp_path / "base" / "dev_per_query.jsonl").write_text("\n".join(reversed(base_lines)) + "\n")  # another order
    line = dev_choice.against(tmp_path / "new", tmp_path / "base", "base")
    qids = sorted(f"q{i}" for i in range(40))
    c = compare([a[int(q[1:])] for q in qids], [b[int(q[1:])] for q in qids])
    assert f"{100 * c.delta:+.2f} points [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}], p = {c.p:.3f}" in line
    assert f"{int((a > b).sum())} up / {int((a < b).sum())} down of 40" in line
    assert "not done" in dev_choice.against(tmp_path / "new", tmp_path / "missing", "missing")
    (tmp_path / "base" / "dev_per_query.jsonl").write_text("\n".join(
        (tmp_path / "base" / "dev_per_query.jsonl").read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(SystemExit, match="different dev queries"):
        dev_choice.against(tmp_path / "new", tmp_path / "base", "base")


def test_cells_run_seed_major_the_dev_choices_extra_seeds_too():
    """A grid cut short stays balanced: every variant's seed s runs before any variant's next seed, also for the
    extra seeds of the dev-chosen variant and the baselines (they once ran variant by variant, so a cut grid
    had both baselines' three seeds and the chosen variant's one)."""
    from hardneg.experiment.driver import seed_major

    cfg = ExperimentConfig.from_file(ROOT / "benchmarks" / "scifact_ab.yaml")
    names = [v.name for v in cfg.variants]
    plan = {n: [0] for n in names}
    assert [(v.name, s) for v, s in seed_major(cfg.variants, plan)] == [(n, 0) for n in names]
    extra = {"st-recipe": [2], "st-mpnet-marginmse": [1, 2], "mnrl-hn-ensemble-refresh": [1, 2]}  # st seed 1 done
    order = [(v.name, s) for v, s in seed_major(cfg.variants, extra)]
    assert order == [("st-mpnet-marginmse", 1), ("mnrl-hn-ensemble-refresh", 1),
                     ("st-recipe", 2), ("st-mpnet-marginmse", 2), ("mnrl-hn-ensemble-refresh", 2)]
