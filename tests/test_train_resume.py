"""A killed training run resumes from its last checkpoint and ends with the same weights as one never stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

import hardneg

STEPS = 6


@pytest.fixture(scope="module")
def run(scifact_slice, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume-run") / "run"
    return hardneg.mine(scifact_slice, teacher="bm25", num_negatives=3, out=str(out), cache_dir=str(cache_dir))


def settings(static_model: str, **options) -> dict:
    return {"model": static_model, "batch_size": 4, "max_steps": STEPS, "warmup_ratio": 0.0, "progress": False,
            "checkpoint_every": 2, "learning_rate": 0.05} | options


def weights(folder: Path) -> bytes:
    return next(folder.rglob("model.safetensors")).read_bytes()


def resume_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.resume")


def interrupted_at(step: int, monkeypatch):
    """Make the trainer stop (as Ctrl-C does) when it starts optimiser step ``step``."""
    from sentence_transformers import SentenceTransformerTrainer

    real = SentenceTransformerTrainer.training_step

    def step_or_stop(self, *args, **kwargs):
        if self.state.global_step + 1 == step:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformerTrainer, "training_step", step_or_stop)


@pytest.mark.parametrize("options", [{"loss": "mnrl-hn"}, {"loss": "mochi", "mochi_hard": 2, "mochi_mix": 2},
                                     {"loss": "mnrl-hn", "query_balanced": True}],
                         ids=["mnrl-hn", "mochi", "query-balanced"])
def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(options, run, static_model, tmp_path,
                                                                           monkeypatch):
    whole = hardneg.train(run, str(tmp_path / "whole"), **settings(static_model, **options))
    out = tmp_path / "stopped"
    with monkeypatch.context() as m:
        interrupted_at(6, m)
        with pytest.raises(KeyboardInterrupt):
            hardneg.train(run, str(out), **settings(static_model, **options))
    assert not out.exists()  # nothing half written ...
    kept = sorted(p.name for p in resume_dir(out).glob("*/checkpoint-*"))
    assert kept == ["checkpoint-4"]  # ... but the newest checkpoint is kept, the older one removed
    resumed = hardneg.train(run, str(out), **settings(static_model, **options))
    manifest = json.loads((resumed / "hardneg_train.json").read_text())
    assert manifest["resumed_from_step"] == 4 and manifest["steps"] == STEPS
    assert weights(resumed) == weights(whole)
    # the recorded training loss is the mean over all the steps, not only those after the resume
    whole_manifest = json.loads((whole / "hardneg_train.json").read_text())
    assert manifest["train_loss"] == pytest.approx(whole_manifest["train_loss"], rel=1e-6)
    assert manifest["loss_log"] == whole_manifest["loss_log"]
    assert not resume_dir(out).exists()  # published: the checkpoints are gone
    # the stop was real: without the checkpoint the same run would have been different from step 1 on
    assert weights(whole) != weights(Path(static_model))


def test_a_checkpoint_of_other_settings_is_never_resumed(run, static_model, tmp_path, monkeypatch):
    out = tmp_path / "m"
    with monkeypatch.context() as m:
        interrupted_at(4, m)
        with pytest.raises(KeyboardInterrupt):
            hardneg.train(run, str(out), **settings(static_model))
    assert [p.name for p in resume_dir(out).glob("*/checkpoint-*")] == ["checkpoint-2"]
    other = hardneg.train(run, str(out), **settings(static_model, learning_rate=0.01))
    assert "resumed_from_step" not in json.loads((other / "hardneg_train.json").read_text())
    fresh = hardneg.train(run, str(tmp_path / "fresh"), **settings(static_model, learning_rate=0.01))
    assert weights(other) == weights(fresh)


def test_refreshed_negatives_are_restored_with_the_checkpoint(scifact_slice, cache_dir, static_model, tmp_path,
                                                              monkeypatch):
    """A run refreshed by the student at step 2 and stopped at step 5 resumes at step 4 on the refreshed
    negatives (not the first mining's), and keeps the refresh's record."""
    dense = hardneg.mine(scifact_slice, teacher=f"dense:{static_model}", num_negatives=3,
                         out=str(tmp_path / "dense-run"), cache_dir=str(cache_dir))
    opts = settings(static_model, remine_every=2, learning_rate=0.5)
    whole = hardneg.train(dense, str(tmp_path / "whole"), **opts)
    first = json.loads((whole / "hardneg_train.json").read_text())["refreshes"]
    assert first[0]["changed"] > 0  # the refresh found other negatives, so restoring them matters
    out = tmp_path / "stopped"
    with monkeypatch.context() as m:
        interrupted_at(5, m)
        with pytest.raises(KeyboardInterrupt):
            hardneg.train(dense, str(out), **opts)
    resumed = hardneg.train(dense, str(out), **opts)
    manifest = json.loads((resumed / "hardneg_train.json").read_text())
    assert manifest["resumed_from_step"] == 4
    assert [r["step"] for r in manifest["refreshes"]] == [r["step"] for r in first] == [2, 4]
    assert weights(resumed) == weights(whole)


def test_a_run_killed_by_sigkill_resumes_through_the_cli(run, static_model, hardneg_exe, tmp_path):
    """The installed CLI, killed with SIGKILL once it has saved its first checkpoint, then run again."""
    steps = 40  # the kill lands within 50 ms of the first checkpoint (step 10), 30 steps before the end

    def train(out: Path) -> subprocess.Popen:
        return subprocess.Popen([hardneg_exe, "train", "--negatives", str(run.path), "--out", str(out), "--model",
                                 static_model, "--batch-size", "4", "--max-steps", str(steps), "--warmup-ratio",
                                 "0", "--checkpoint-every", "10", "--learning-rate", "0.05", "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    out = tmp_path / "killed"
    proc = train(out)
    deadline = time.monotonic() + 300
    while not list(resume_dir(out).glob("*/checkpoint-*/hardneg_resume.json")):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert train(out).wait() == 0
    assert json.loads((out / "hardneg_train.json").read_text())["resumed_from_step"] > 0
    assert train(tmp_path / "whole").wait() == 0
    assert weights(out) == weights(tmp_path / "whole")


def test_the_loss_tally_sums_what_the_loss_returns_and_continues_from_a_marker():
    import torch

    from hardneg.training.checkpoints import LossTally

    class Parts(torch.nn.Module):
        def forward(self, x):
            return {"infonce": x.sum(), "distill": 2 * x.sum()}

    loss = Parts()
    tally = LossTally(loss)
    loss(torch.ones(2))
    loss(torch.zeros(2))
    assert (tally.total, tally.steps, tally.mean) == (6.0, 2, 3.0)  # the parts summed, as the trainer does
    tally.continue_from({"step": 4, "seconds": 1.0, "loss_sum": 10.0, "loss_steps": 4})
    loss(torch.ones(1))
    assert (tally.total, tally.steps) == (13.0, 5)
    tally.continue_from({"step": 4, "seconds": 1.0})  # a marker written before the tally: the steps after it only
    assert (tally.total, tally.steps) == (0.0, 0)
