"""TrainConfig: every training setting, its default and its help text, in one place (the trainer's
keyword arguments, the ``hardneg train`` options and, field for field, an experiment's budget)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

LOSSES = ("mnrl", "mnrl-hn", "cached-mnrl", "gist", "gist-scores", "margin-mse", "kl", "mnrl-idmask")


class TrainConfig(BaseModel):
    """How to fine-tune. Equal configs on the same run and base model give the same model."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(description="run folder from `hardneg mine` (or the table the rows came from)")
    out: str = Field(description="folder for the trained model")
    model: str | None = Field(None, description="base model path or id [default: packaged MiniLM]")
    loss: str = Field("mnrl-hn", description=" | ".join(LOSSES))
    num_negatives: int | None = Field(None, ge=1, description="use the first k mined negatives [default: all]")
    batch_size: int = Field(32, ge=2, description="batch size")
    epochs: float = Field(1.0, gt=0, description="epochs")
    max_steps: int = Field(-1, description="stop after this many steps (overrides epochs)")
    learning_rate: float = Field(2e-5, description="learning rate")
    warmup_ratio: float = Field(0.1, description="share of the steps spent warming up the learning rate")
    seed: int = Field(0, description="seed")
    max_length: int | None = Field(None, ge=8, description="token limit for queries and documents")
    guide: str | None = Field(None, description="guide model for the gist loss")
    hardness_strength: float = Field(0.0, description="hardness weighting of mined negatives (MNRL family)")
    mini_batch_size: int = Field(16, ge=1, description="mini-batch size of cached-mnrl (GradCache)")
    hard_batches: bool = Field(False, description="NGAME hard batches: batches of whole clusters of similar queries")
    cluster_size: int = Field(8, ge=1, description="queries per cluster of --hard-batches")
    recluster_every: int = Field(0, ge=0, description="re-cluster --hard-batches with the current model every N "
                                 "steps [default 0: once, with the base model]")

    def fingerprint_settings(self) -> dict[str, Any]:
        return self.model_dump(exclude={"out", "run"})
