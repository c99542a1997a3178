"""The collection: documents, queries and graded qrels, loaded from BEIR folders, pairs files or Hugging Face datasets, and written back.

Every loader returns a :class:`Collection` whose documents and queries are sorted by id, so that
nothing downstream depends on the order of the input files. Errors name the file, line and field.
"""

from .beir import load_beir
from .dispatch import load
from .hf import load_hf
from .pairs import load_pairs
from .types import Collection, Qrels
from .writers import save_beir

__all__ = ["Collection", "Qrels", "load", "load_beir", "load_hf", "load_pairs", "save_beir"]
