"""Training on mined negatives: the public train function, the losses, the guided loss, bf16."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hardneg
from hardneg.candidates.encoders import cpu_bf16
from hardneg.cli import app
from hardneg.errors import HardnegWarning, OtherSettingsError
from hardneg.experiment.config import ExperimentConfig
from hardneg.training import precision, training_table
from hardneg.training.config import TrainConfig
from hardneg.training.guided import GuidedInfoNCELoss

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


def test_bf16_asked_for_on_a_cpu_that_emulates_it_warns_and_trains_as_asked(run, static_model, tmp_path, monkeypatch):
    """An experiment's ``bf16: true`` written on a machine with AVX512-BF16 ran ~20x slower per step on one without
    (docs/benchmarks.md, "Generate"), silently. Now it warns, names the way out, and still
    trains in bf16, as asked; on a CPU with native bf16, or with bf16 off, nothing is said."""
    monkeypatch.setattr(precision, "has_gpu", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16", lambda: False)
    with pytest.warns(HardnegWarning, match="without native bf16.*set bf16 false"):
        out = hardneg.train(run, tmp_path / "m", **tiny(static_model, bf16=True))
    assert manifest_of(out)["config"]["bf16"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error", HardnegWarning)
        precision.warn_if_emulated(False)
        monkeypatch.setattr(precision, "cpu_bf16", lambda: True)
        precision.warn_if_emulated(True)


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
