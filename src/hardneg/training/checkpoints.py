"""Resumable training: a killed ``hardneg train`` (or experiment cell) starts again from its last
checkpoint instead of step 0, and ends with the same weights as a run that was never stopped.

Every ``checkpoint_every`` optimiser steps the transformers trainer saves a full checkpoint (model,
optimiser, scheduler, random states, trainer state) into ``.<out>.resume/<settings key>/``, beside the
output folder and outside its staging folder, so that neither a crash nor Ctrl-C removes it. What
hardneg adds to the trainer's own state is saved with it (:class:`CheckpointCallback`): the state of
every object of the run that changes while it trains and is not a tensor the trainer knows (the
negatives refreshed by the student, the refresh records, MoCHi's mixing generator), the training
seconds so far, and then a marker file. Only a checkpoint with its marker is ever resumed (one killed
while it was written is not), and the older ones are removed once the newer is complete.

The folder is keyed by the model's settings key, so a run with other settings never resumes from it;
it is removed when the model is published. A method whose state cannot be restored exactly is not
checkpointed (NGAME hard batches: the clusters come from the student at the moment the sampler
re-clusters), so its run restarts from step 0, as before.

Example::

    import hardneg

    hardneg.train(run, "models/m", max_steps=400, checkpoint_every=50)   # killed at step 170 ...
    hardneg.train(run, "models/m", max_steps=400, checkpoint_every=50)   # ... resumes from step 150
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from transformers import TrainerCallback

from ..runs.files import write_json

MARKER = "hardneg_resume.json"
STATE = "hardneg_state.pt"


@runtime_checkable
class Resumable(Protocol):
    """An object of a training run whose state changes while it trains and must be saved with a checkpoint."""

    def resume_state(self) -> dict[str, Any]: ...

    def load_resume_state(self, state: dict[str, Any]) -> None: ...


def resume_folder(out: Path, key: str) -> Path:
    """Where the checkpoints of the model ``out`` trained with settings ``key`` live; checkpoints of any
    other settings beside it are removed (they can never be resumed)."""
    root = out.with_name(f".{out.name}.resume")
    if root.exists():
        for other in root.iterdir():
            if other.name != key:
                shutil.rmtree(other, ignore_errors=True)
    return root / key


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (one with its marker) in ``folder``, or None."""
    done = [p.parent for p in folder.glob(f"checkpoint-*/{MARKER}")]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def remove_checkpoints(out: Path) -> None:
    """Drop every checkpoint of ``out`` (after the model is published)."""
    shutil.rmtree(out.with_name(f".{out.name}.resume"), ignore_errors=True)


def resumables(*objects: Any) -> list[Resumable]:
    """The distinct objects among ``objects`` that carry state to save."""
    seen: dict[int, Resumable] = {}
    for o in objects:
        if isinstance(o, Resumable):
            seen.setdefault(id(o), o)
    return list(seen.values())


def restore(checkpoint: Path, objects: list[Resumable]) -> dict[str, Any]:
    """Load the saved state of ``objects`` from ``checkpoint``; returns its marker (``step``, and the
    training ``seconds`` it had taken)."""
    if objects:
        for o, state in zip(objects, torch.load(checkpoint / STATE, weights_only=False), strict=True):
            o.load_resume_state(state)
    marker: dict[str, Any] = json.loads((checkpoint / MARKER).read_text())
    return marker


class LossTally:
    """The sum and count of the losses a loss module returns while it trains, kept across a resume: the
    trainer's own ``training_loss`` averages only the steps since it last started."""

    def __init__(self, loss: torch.nn.Module):
        self.total, self.steps = 0.0, 0
        loss.register_forward_hook(self._add)

    def _add(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor | dict[str, torch.Tensor]) -> None:
        # a loss may return named parts, which the trainer sums
        value = torch.stack(list(output.values())).sum() if isinstance(output, dict) else output
        self.total += float(value.detach())
        self.steps += 1

    def continue_from(self, marker: dict[str, Any]) -> None:
        """Continue from a checkpoint's marker (one written before the tally existed starts from 0)."""
        self.total, self.steps = float(marker.get("loss_sum", 0.0)), int(marker.get("loss_steps", 0))

    @property
    def mean(self) -> float:
        return self.total / max(self.steps, 1)


class CheckpointCallback(TrainerCallback):
    """After the trainer saves a checkpoint: saves ``objects``' state beside it, writes the marker
    (training seconds so far, counted from ``start`` plus ``earlier`` seconds of an earlier attempt, and
    the loss tally) and removes the older checkpoints."""

    def __init__(self, objects: list[Resumable], tally: LossTally, start: float, earlier: float = 0.0):
        self.objects, self.tally, self.start, self.earlier = objects, tally, start, earlier

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        folder = Path(args.output_dir)
        checkpoint = folder / f"checkpoint-{int(state.global_step)}"
        if self.objects:
            torch.save([o.resume_state() for o in self.objects], checkpoint / STATE)
        write_json(checkpoint / MARKER, {"step": int(state.global_step),
                                         "seconds": round(self.earlier + time.perf_counter() - self.start, 1),
                                         "loss_sum": self.tally.total, "loss_steps": self.tally.steps})
        for old in folder.glob("checkpoint-*"):
            if old != checkpoint:
                shutil.rmtree(old, ignore_errors=True)
        return control
