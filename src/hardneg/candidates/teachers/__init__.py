"""Teachers generate and score candidates: BM25, dense bi-encoders, and hybrids of them."""

from .base import Teacher
from .bm25 import BM25Teacher
from .dense import DenseTeacher
from .hybrid import HybridTeacher

__all__ = ["BM25Teacher", "DenseTeacher", "HybridTeacher", "Teacher"]
