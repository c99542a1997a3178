"""Training a bi-encoder on mined negatives with the sentence-transformers trainer."""

from .losses import LOSSES, build_loss
from .trainer import TrainConfig, train, train_on_table, training_table

__all__ = ["LOSSES", "TrainConfig", "build_loss", "train", "train_on_table", "training_table"]
