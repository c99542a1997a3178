"""Training a bi-encoder on mined negatives with the sentence-transformers trainer.

:class:`TrainConfig` (pydantic only) imports at once, so the command line can build its options
from it; the trainer and the losses (torch) are imported on first use."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .config import LOSSES, TrainConfig

if TYPE_CHECKING:
    from .losses import build_loss
    from .trainer import train, train_on_table, training_table

_LAZY = {"build_loss": "losses", "train": "trainer", "train_on_table": "trainer", "training_table": "trainer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LOSSES", "TrainConfig", "build_loss", "train", "train_on_table", "training_table"]
