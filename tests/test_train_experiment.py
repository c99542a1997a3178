"""Training on mined negatives, the guided loss, and the experiment loop end to end (--quick)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hardneg
from hardneg.candidates.encoders import cpu_bf16
from hardneg.cli import app
from hardneg.errors import OtherSettingsError
from hardneg.evaluation.comparison import paired_randomisation
from hardneg.evaluation.retrieval import Evaluation
from hardneg.experiment.config import ExperimentConfig
from hardneg.experiment.report import report
from hardneg.experiment.results import results_markdown, summarise
from hardneg.training import training_table
from hardneg.training.config import TrainConfig
from hardneg.training.guided import GuidedInfoNCELoss
from hardneg.training.precision import training_bf16

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def run(scifact_slice, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trainrun") / "run"
    return hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, out=str(out), cache_dir=str(cache_dir))


def tiny(static_model: str, **options) -> dict:
    """Settings for the cheapest real training: the packaged static model, small batches, one step."""
    return {"model": static_model, "batch_size": 4, "max_steps": 1, "warmup_ratio": 0.0, "progress": False} | options


def manifest_of(out: Path) -> dict:
    return json.loads((Path(out) / "hardneg_train.json").read_text())


def test_the_public_train_function_works_twice_and_after_the_training_package_is_imported(run, static_model,
                                                                                          tmp_path):
    """``hardneg.train`` is a function; importing the training code (the first call does, and so do
    ``hardneg.experiment`` and ``hardneg.cli``) must never rebind that name to a module."""
    assert manifest_of(hardneg.train(run, tmp_path / "a", **tiny(static_model)))["steps"] == 1
    for module in ("hardneg.training.trainer", "hardneg.experiment.driver", "hardneg.cli"):
        importlib.import_module(module)
    assert callable(hardneg.train)
    assert manifest_of(hardneg.train(run, tmp_path / "b", **tiny(static_model)))["steps"] == 1


def test_training_tables(run):
    assert training_table(run, "mnrl").column_names == ["anchor", "positive"]
    assert training_table(run, "mnrl-hn", 2).column_names == ["anchor", "positive", "negative_1", "negative_2"]
    mm = training_table(run, "margin-mse")
    labels = np.array(mm.column("label").to_pylist())
    assert labels.shape[1] == 3
    kl = np.array(training_table(run, "kl").column("label").to_pylist())
    assert kl.shape[1] == 4
    np.testing.assert_allclose(labels, kl[:, :1] - kl[:, 1:], rtol=1e-5, atol=1e-5)
    assert (np.diff(kl[:, 1:], axis=1) <= 1e-6).all()  # top sampler: negatives by rank, scores falling


def test_guided_loss_masks_what_the_guide_ranks_above_the_positive(static_model):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(static_model)
    texts = [["cell biology", "heart disease"], ["cells and tissue", "cardiac risk"], ["brain", "liver"]]
    feats = [model.tokenize(col) for col in texts]  # anchor, positive, one negative; batch of 2
    labels = torch.tensor([[0.5, 0.9], [0.5, 0.1]])  # row 0's negative scores above its positive
    loss = GuidedInfoNCELoss(model, use_scores=True)
    value = loss(feats, labels)
    assert loss.masked_fraction == pytest.approx(1 / 8)  # one of 2 x 4 candidates
    plain = GuidedInfoNCELoss(model, use_scores=True)(feats, torch.tensor([[0.9, 0.1], [0.9, 0.1]]))
    assert value.item() != pytest.approx(plain.item())
    guided = GuidedInfoNCELoss(model, guide=model)
    guided(feats)
    assert 0.0 <= guided.masked_fraction < 1.0


def test_a_guide_with_another_tokenizer_scores_the_texts_not_the_students_token_ids(static_model, scifact_slice):
    """The static student (a 276k-entry unigram vocabulary) guided by MiniLM (BERT's 30k WordPiece):
    the guide must score the batch's texts as it would on its own, not read the student's ids as its own."""
    from sentence_transformers import SentenceTransformer

    from hardneg.runs.fingerprint import resolve_model

    student, guide = SentenceTransformer(static_model), SentenceTransformer(resolve_model(None))
    queries = [str(t) for t in scifact_slice.query_texts[:3]]
    docs = [[str(t) for t in scifact_slice.doc_texts[i:i + 3]] for i in (0, 3)]  # positive, one negative
    loss = GuidedInfoNCELoss(student, guide=guide)
    got = loss.guide_similarities([student.preprocess(col) for col in [queries, *docs]])
    q = guide.encode(queries, convert_to_tensor=True, normalize_embeddings=True)
    d = guide.encode(docs[0] + docs[1], convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(got, q @ d.T, atol=1e-5, rtol=1e-5)
    same = GuidedInfoNCELoss(guide, guide=guide)  # one tokenizer: the ids are passed on as they are
    torch.testing.assert_close(same.guide_similarities([guide.preprocess(col) for col in [queries, *docs]]), q @ d.T,
                               atol=1e-5, rtol=1e-5)


def test_train_cli_saves_a_model_linked_to_its_run(run, tmp_path):
    out = tmp_path / "model"
    res = runner.invoke(app, ["train", "--negatives", str(run.path), "--out", str(out), "--loss", "mnrl-hn",
                              "--batch-size", "8", "--max-steps", "2", "--max-length", "64", "--quiet"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "hardneg_train.json").read_text())
    assert manifest["run"]["config_fingerprint"] == run.manifest["config_fingerprint"]
    assert manifest["steps"] == 2 and manifest["train_rows"] > 0
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(str(out))
    assert m.max_seq_length == 256  # the short length was for training only
    assert m.encode(["a query"]).shape == (1, 384)


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
    shutil.copytree(parts[1] / "variants" / "in-batch" / "seed-1", parts[0] / "variants" / "in-batch" / "seed-1")
    done = {p: p.stat().st_mtime_ns for p in parts[0].glob("variants/*/seed-*/metrics.json")}
    res = runner.invoke(app, ["experiment", "--config", str(cfg), "--quick", "--seeds", "0,1", "--out",
                              str(parts[0]), "--cache-dir", str(cache_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in done} == done
    (row,) = json.loads((parts[0] / "results.json").read_text())["variants"]
    assert row["seeds"] == 2
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


def test_the_batches_the_trainer_builds_never_repeat_a_query_or_document_id(run, static_model, tmp_path,
                                                                            monkeypatch):
    """The NO_DUPLICATES sampler compares texts; one id has one text, so no id repeats in a batch.
    Checked on the rows hardneg's trainer hands to its collator in a real one-epoch run, by id, on a
    table where rows do share ids (a plain sampler would repeat them)."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.data_collator import (
        SentenceTransformerDataCollator,
    )

    batches: list[list[dict]] = []

    class Recording(SentenceTransformerDataCollator):
        def __call__(self, features):
            batches.append([dict(row) for row in features])
            return super().__call__(features)

    monkeypatch.setattr(SentenceTransformerTrainer, "data_collator_class", Recording)
    out = hardneg.train(run, tmp_path / "m", **tiny(static_model, batch_size=16, max_steps=-1))
    col = run.collection()
    qid = dict(zip(col.query_texts, col.query_ids.tolist()))
    did = dict(zip(col.doc_texts, col.doc_ids.tolist()))
    table = training_table(run, "mnrl-hn")

    def ids(row: dict) -> list[str]:
        return [qid[row["anchor"]]] + [did[row[c]] for c in table.column_names[1:]]

    _, counts = np.unique(np.concatenate([ids(r) for r in table.to_pylist()]), return_counts=True)
    assert counts.max() > 1
    steps = manifest_of(out)["steps"]
    assert 1 < steps <= len(batches)  # every trained batch was recorded (the loader may fetch one ahead)
    rows = [tuple(r.values()) for b in batches for r in b]
    assert len(rows) == len(set(rows))  # one pass over the table
    for b in batches:
        in_batch = [x for r in b for x in ids(r)]
        assert len(in_batch) == len(set(in_batch)), in_batch


def weights_moved(base: str | Path, trained: str | Path) -> float:
    """The largest change of any weight between two saved models."""
    from safetensors.numpy import load_file

    a, b = (load_file(str(Path(p) / "model.safetensors")) for p in (base, trained))
    common = a.keys() & b.keys()  # a saved model may leave out buffers such as BERT's position_ids
    assert len(common) > 0.9 * len(a)
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in common)


@pytest.fixture(scope="module")
def mnrl_hn_step(run, static_model, tmp_path_factory) -> dict:
    """The manifest of one step of mnrl-hn on the static model: the reference hardness_strength is compared with."""
    return manifest_of(hardneg.train(run, tmp_path_factory.mktemp("mnrl-hn") / "m", **tiny(static_model)))


def shuffled_scores(run):
    """The run with every query's negative scores taken from another query (teacher scores that lie)."""
    from hardneg.runs.run import Run

    neg = run.negatives
    i = neg.column_names.index("negative_scores")
    moved = neg.column(i).take(np.roll(np.arange(neg.num_rows), 1))
    manifest = run.manifest | {"config_fingerprint": run.manifest["config_fingerprint"] + "-shuffled"}
    return Run(neg.set_column(i, "negative_scores", moved), run.candidates, manifest, None, run.collection())


@pytest.mark.parametrize("loss", ["cached-mnrl", "margin-mse", "kl"])
def test_each_loss_trains_the_model_on_what_the_run_holds(loss, run, static_model, tmp_path):
    """One real step per loss: the logged loss is finite and the weights moved. The distillation losses
    read the teacher's scores, so scores taken from other queries change the loss. cached-mnrl (GradCache,
    here in mini-batches of 2) cannot split static embeddings' flat inputs: it trains MiniLM at 16 tokens."""
    from hardneg.runs.fingerprint import resolve_model

    model = resolve_model(None) if loss == "cached-mnrl" else static_model
    options = tiny(model, loss=loss, mini_batch_size=2, **({"max_length": 16} if loss == "cached-mnrl" else {}))
    manifest = manifest_of(out := hardneg.train(run, tmp_path / "m", **options))
    assert manifest["steps"] == 1 and np.isfinite(manifest["train_loss"]) and manifest["train_loss"] > 0
    assert weights_moved(model, out) > 1e-7
    if loss == "cached-mnrl":
        assert manifest["loss"]["class"] == "CachedMultipleNegativesRankingLoss"
        assert manifest["loss"]["mini_batch_size"] == 2
    else:
        lied = manifest_of(hardneg.train(shuffled_scores(run), tmp_path / "lied", **options))
        assert lied["train_loss"] != pytest.approx(manifest["train_loss"], rel=1e-3)


def test_hardness_strength_reaches_the_loss_and_changes_it(run, static_model, mnrl_hn_step, tmp_path):
    assert mnrl_hn_step["loss"]["hardness_strength"] == 0.0
    out = hardneg.train(run, tmp_path / "m", **tiny(static_model, hardness_strength=5.0))
    manifest = manifest_of(out)
    assert manifest["loss"]["class"] == "MultipleNegativesRankingLoss"
    assert manifest["loss"]["hardness_strength"] == 5.0 and manifest["loss"]["hardness_mode"] == "hard_negatives"
    assert np.isfinite(manifest["train_loss"])
    assert manifest["train_loss"] != pytest.approx(mnrl_hn_step["train_loss"], rel=1e-3)


def test_grid_expands_to_one_variant_per_combination():
    from hardneg.experiment.config import ExperimentConfig

    cfg = ExperimentConfig(dataset="d", variants=[{"name": "st", "kind": "st"}],
                           grid={"teacher": ["bm25", "dense:/models/x"], "filter": ["none", "percpos:0.95"],
                                 "num_negatives": [1, 4]})
    names = [v.name for v in cfg.variants]
    assert names[0] == "st" and len(names) == 1 + 2 * 2 * 2 and len(set(names)) == len(names)
    assert all("/" not in n and ":" not in n for n in names)
    assert {(v.mine["teacher"], v.mine["filter"], v.mine["num_negatives"]) for v in cfg.variants[1:]} == {
        (t, f, n) for t in ("bm25", "dense:/models/x") for f in ("none", "percpos:0.95") for n in (1, 4)}
    assert ExperimentConfig(**cfg.model_dump()).variants == cfg.variants  # a saved config reloads the same
    with pytest.raises(ValueError, match="no variants"):
        ExperimentConfig(dataset="d")


def test_the_experiment_budget_is_trainconfig_declared_once():
    """A budget's fields are TrainConfig's: the same defaults, bounds and help, declared in one place."""
    from hardneg.experiment.config import Budget
    from hardneg.training.config import TrainConfig

    for name, field in Budget.model_fields.items():
        tc = TrainConfig.model_fields[name]
        assert (field.default, field.description, field.metadata) == (tc.default, tc.description, tc.metadata), name
    with pytest.raises(ValueError):
        Budget(batch_size=1)  # TrainConfig's bound (ge=2) holds for a budget too


def test_bf16_autocast_trains_on_a_cpu(run, static_model, tmp_path):
    """transformers refuses bf16 on a machine without a GPU unless ``use_cpu`` is set: --bf16 must train
    here (the CPU benchmark's faster path), not fail at the trainer's construction."""
    manifest = manifest_of(hardneg.train(run, tmp_path / "m", **tiny(static_model, bf16=True, max_steps=2)))
    assert manifest["steps"] == 2 and np.isfinite(manifest["train_loss"]) and manifest["config"]["bf16"] is True


def test_training_defaults_to_bf16_exactly_where_the_cpu_runs_it_natively(run, static_model, tmp_path):
    """Item 7's default: bf16 autocast on a CPU with native bf16 and no GPU, fp32 elsewhere. The manifest and the
    settings key hold the precision used: asking for that precision explicitly finds the same model, asking for the
    other one is other settings, and an fp32 model keeps the key it had while fp32 was the default."""
    native = cpu_bf16() and not torch.cuda.is_available()
    out = hardneg.train(run, tmp_path / "m", **tiny(static_model))
    made = manifest_of(out)
    assert made["config"]["bf16"] is native
    assert manifest_of(hardneg.train(run, out, **tiny(static_model, bf16=native))) == made  # found, not retrained
    with pytest.raises(OtherSettingsError):
        hardneg.train(run, out, **tiny(static_model, bf16=not native))
    assert "bf16" not in TrainConfig(run="r", out="o", bf16=False).fingerprint_settings()
    assert TrainConfig(run="r", out="o", bf16=True).fingerprint_settings()["bf16"] is True


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
