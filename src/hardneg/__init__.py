"""hardneg: mine hard negatives you can trust, with the reason each was kept or dropped."""

from typing import Any

from .collection import Collection, Qrels, load, load_beir, load_hf, load_pairs, save_beir
from .config import MineConfig
from .errors import ConfigError, DataError, HardnegError, RunError
from .evaluation.retrieval import Evaluation, evaluate
from .export import FORMATS, export, to_dataset
from .mine import mine
from .runs.run import Run
from .runs.summary import stats, summary


def train(*args: Any, **kwargs: Any) -> Any:
    """Fine-tune a bi-encoder on a run's negatives (:func:`hardneg.training.trainer.train`). Imported
    on first use, so that mining never loads torch unless it encodes. The package is named
    ``training``, not ``train``: importing a subpackage sets it as an attribute of its parent, which
    would replace this function."""
    from .training.trainer import train as _train

    return _train(*args, **kwargs)


__all__ = [
    "FORMATS",
    "Collection",
    "ConfigError",
    "DataError",
    "Evaluation",
    "HardnegError",
    "MineConfig",
    "Qrels",
    "Run",
    "RunError",
    "evaluate",
    "export",
    "load",
    "load_beir",
    "load_hf",
    "load_pairs",
    "mine",
    "save_beir",
    "stats",
    "summary",
    "to_dataset",
    "train",
]
__version__ = "0.1.0"
