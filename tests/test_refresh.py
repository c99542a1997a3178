"""Negatives refreshed by the student (--remine-every, hardneg.training.refresh) on a real SciFact slice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import hardneg
from hardneg.errors import ConfigError
from hardneg.training import refresh, training_table

# Non-default filter, sampler and seed: a refresh that dropped any of them would mine other negatives.
MINE = {"num_negatives": 3, "filter": "margin:0.01", "sampler": "simans", "seed": 7}


@pytest.fixture(scope="module")
def dense_run(scifact_slice, static_model, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("refresh-run") / "run"
    return hardneg.mine(scifact_slice, teacher=f"dense:{static_model}", out=str(out), cache_dir=str(cache_dir), **MINE)


def options(static_model: str, **extra) -> dict:
    """Real training of the static model, a large learning rate so that a few steps move the negatives."""
    return {"model": static_model, "batch_size": 8, "max_steps": 3, "warmup_ratio": 0.0, "learning_rate": 0.5,
            "progress": False} | extra


def manifest_of(out: Path) -> dict:
    return json.loads((Path(out) / "hardneg_train.json").read_text())


def weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def test_the_id_rows_are_the_training_tables_rows(dense_run):
    col = dense_run.collection()
    table = training_table(dense_run, "mnrl-hn", num_negatives=2)
    q_idx, neg = refresh.ntuple_rows(dense_run, 2)
    assert neg.shape == (table.num_rows, 2) and table.num_rows > 20
    assert [col.query_texts[i] for i in q_idx] == table.column("anchor").to_pylist()
    for j in range(2):
        assert [col.doc_texts[i] for i in neg[:, j]] == table.column(f"negative_{j + 1}").to_pylist()


def test_fill_short_keeps_old_negatives_in_the_empty_slots_only():
    old = np.array([[3, 1, 2], [4, 5, 6], [7, 8, 9]])
    new = np.array([[3, 10, -1], [11, 12, 13], [-1, -1, -1]])
    assert refresh.fill_short(new, old).tolist() == [[3, 10, 1], [11, 12, 13], [7, 8, 9]]
    assert refresh.changed_share(new[1:2], old[1:2]) == 1.0
    assert refresh.changed_share(old, old) == 0.0


def test_the_run_settings_are_kept_and_only_the_dense_teacher_is_replaced():
    cfg = {"teacher": "hybrid:bm25:stem+dense:/m/base", "filter": "margin:0.02", "seed": 7, "out": "runs/x",
           "dataset": "d", "cache_dir": "c"}
    opts = refresh.refresh_options(cfg, "/tmp/student")
    assert str(opts["teacher"]) == "hybrid:bm25:stem+dense:/tmp/student"
    assert opts["filter"] == "margin:0.02" and opts["seed"] == 7 and "out" not in opts and "cache_dir" not in opts
    assert str(refresh.refresh_options({"teacher": "dense"}, "/s")["teacher"]) == "dense:/s"
    for teacher in ("bm25", "hybrid:bm25+bm25:stem", "hybrid:dense+dense:/m/other"):
        with pytest.raises(ConfigError, match="only a dense teacher"):
            refresh.refresh_options({"teacher": teacher}, "/s")


def test_a_bm25_run_or_a_loss_without_negatives_cannot_be_refreshed(scifact_slice, static_model, dense_run,
                                                                     cache_dir, tmp_path):
    from typer.testing import CliRunner

    from hardneg.cli import app

    bm25 = hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, cache_dir=str(cache_dir),
                        out=str(tmp_path / "bm25"))
    with pytest.raises(ConfigError) as err:
        hardneg.train(bm25, tmp_path / "m", **options(static_model, remine_every=1))
    assert "\n" not in str(err.value) and "teacher 'bm25'" in str(err.value)
    cli = CliRunner().invoke(app, ["train", "--run", str(tmp_path / "bm25"), "--out", str(tmp_path / "m"),
                                   "--model", static_model, "--remine-every", "2"])
    assert cli.exit_code == 2 and "teacher 'bm25'" in cli.output
    for loss in ("mnrl", "margin-mse", "gist-scores", "adore"):
        with pytest.raises(ConfigError, match="remine_every"):
            hardneg.train(dense_run, tmp_path / loss, **options(static_model, remine_every=1, loss=loss))
    assert not (tmp_path / "m").exists()


def test_the_unchanged_model_mines_the_runs_negatives_again(dense_run, static_model, tmp_path):
    """Re-mining with the base model itself (no step taken) gives exactly the run's negatives."""
    from sentence_transformers import SentenceTransformer

    again = refresh.remine(dense_run, SentenceTransformer(static_model), tmp_path)
    _, before = refresh.negatives_per_query(dense_run, 3)
    _, after = refresh.negatives_per_query(again, 3)
    assert np.array_equal(before, after)


def test_refreshes_change_the_negatives_and_equal_a_fresh_mine_with_the_student(dense_run, static_model,
                                                                                 scifact_slice, tmp_path,
                                                                                 monkeypatch):
    """3 real steps, a refresh after steps 1 and 2. The student saved at each refresh, mined afresh by
    ``hardneg.mine`` with the run's settings, gives the negatives the loss was handed; they differ from
    the first mining and from each other."""
    original, given = refresh.remine, []
    students = tmp_path / "students"

    def keep_student(run, student, folder):
        new = original(run, student, folder)
        shutil.copytree(folder / "student", students / folder.name)
        return new

    def record(self, negatives):
        given.append(negatives.copy())
        return set_negatives(self, negatives)

    set_negatives = refresh.RefreshedNegativesLoss.set_negatives
    monkeypatch.setattr(refresh, "remine", keep_student)
    monkeypatch.setattr(refresh.RefreshedNegativesLoss, "set_negatives", record)
    out = hardneg.train(dense_run, tmp_path / "m", **options(static_model, remine_every=1))
    made = manifest_of(out)
    assert made["steps"] == 3 and [r["step"] for r in made["refreshes"]] == [1, 2]
    assert all(r["changed"] > 0.1 and r["rows_short"] == 0 for r in made["refreshes"])
    assert {r["encoder"] for r in made["refreshes"]} == {dense_run.manifest["encoder"]["resolved"][static_model]}
    assert made["columns"][-1] == "label" and not (out / "_refresh").exists()

    q_idx, first = refresh.ntuple_rows(dense_run, 3)
    for step, negatives in zip((1, 2), given):
        fresh = hardneg.mine(scifact_slice, teacher=f"dense:{students / f'step-{step}'}", cache_dir=str(tmp_path / "c"),
                             **MINE)
        fq, per_query = refresh.negatives_per_query(fresh, 3)
        assert np.all(np.diff(fq) > 0)
        assert np.array_equal(per_query[np.searchsorted(fq, q_idx)], negatives)
        assert (negatives != first).any()
    assert not np.array_equal(given[0], given[1])


def test_the_loss_is_handed_the_current_negatives_of_its_rows(dense_run, static_model):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(static_model)
    col = dense_run.collection()
    seen: list[list[dict]] = []

    class Inner(torch.nn.Module):
        def forward(self, features, labels):
            assert labels is None
            seen.append(features)
            return torch.tensor(0.0)

    _, first = refresh.ntuple_rows(dense_run, 3)
    loss = refresh.RefreshedNegativesLoss(model, Inner(), col.doc_texts, first)
    batch = [model.preprocess([f"text {i}"]) for i in range(5)]  # anchor, positive, 3 collator negatives
    rows = torch.tensor([4, 0, 2])
    loss(batch, rows)
    assert seen[-1] == batch  # before any refresh: the collator's features as they are
    new = np.roll(first, 1, axis=0)
    loss.set_negatives(new)
    loss(batch, rows)
    assert seen[-1][:2] == batch[:2] and len(seen[-1]) == 5
    for j in range(3):
        want = model.preprocess([col.doc_texts[i] for i in new[[4, 0, 2], j]])
        assert all(torch.equal(seen[-1][2 + j][k], want[k]) for k in want)
    with pytest.raises(ValueError):
        loss.set_negatives(new[:, :2])


def test_a_refresh_that_finds_the_same_negatives_trains_exactly_like_no_refresh(dense_run, static_model, tmp_path,
                                                                                  monkeypatch):
    """The refreshed path (row labels, negatives re-tokenised by the loss) is faithful: when the refresh
    returns the first negatives, the weights equal a run without refreshes (whose table has no row
    labels and whose manifest no refreshes)."""
    monkeypatch.setattr(refresh, "remine", lambda run, student, folder: run)  # the first negatives again
    a = weights(out := hardneg.train(dense_run, tmp_path / "a", **options(static_model, remine_every=1, max_steps=2)))
    assert [r["changed"] for r in manifest_of(out)["refreshes"]] == [0.0]
    b = weights(plain := hardneg.train(dense_run, tmp_path / "b", **options(static_model, max_steps=2)))
    assert "refreshes" not in manifest_of(plain) and "label" not in manifest_of(plain)["columns"]
    base = weights(Path(static_model))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], base[k]) for k in a if k in base)


def test_a_refresh_leaves_the_random_states_as_it_found_them(dense_run, static_model, tmp_path, monkeypatch):
    """Mining may draw random numbers (model loading, samplers); training after a refresh must not see it."""
    import random

    from sentence_transformers import SentenceTransformer

    def drawing(run, student, folder):
        torch.rand(3), np.random.rand(), random.random()
        return run

    monkeypatch.setattr(refresh, "remine", drawing)
    q_idx, first = refresh.ntuple_rows(dense_run, 3)
    model = SentenceTransformer(static_model)
    loss = refresh.RefreshedNegativesLoss(model, torch.nn.Identity(), dense_run.collection().doc_texts, first)
    callback = refresh.RemineCallback(dense_run, model, loss, q_idx, 1, tmp_path)
    before = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    callback.refresh(4)
    assert torch.equal(before[0], torch.random.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1]) and before[2] == random.getstate()
    assert callback.records[0]["step"] == 4 and callback.records[0]["changed"] == 0.0


def test_the_new_options_leave_the_key_of_a_model_trained_without_them_unchanged():
    from hardneg.training.config import TrainConfig

    plain = TrainConfig(run="r", out="o").fingerprint_settings()
    assert not {"remine_every", "adore_depth", "adore_negatives"} & plain.keys()
    assert TrainConfig(run="r", out="o", remine_every=5).fingerprint_settings() == plain | {"remine_every": 5}
    assert TrainConfig(run="r", out="o", loss="adore", adore_depth=50).fingerprint_settings()["adore_depth"] == 50
