"""hardneg: mine hard negatives you can trust, with the reason each was kept or dropped."""

from .config import MineConfig
from .data import Collection, Qrels, load, load_beir, load_hf, load_pairs, save_beir
from .errors import ConfigError, DataError, HardnegError, RunError
from .evaluate import Evaluation, evaluate
from .export import FORMATS, export, to_dataset
from .mine import mine
from .runs import Run
from .stats import stats
from .train import train

__all__ = ["Collection", "ConfigError", "DataError", "Evaluation", "evaluate", "FORMATS", "HardnegError", "MineConfig", "Qrels",
           "Run", "RunError", "export", "load", "load_beir", "load_hf", "load_pairs", "mine", "save_beir", "stats", "train",
           "to_dataset"]
__version__ = "0.1.0"
