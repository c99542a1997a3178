"""The generating half: an LLM writes training data for a corpus without labels (synthetic queries,
graded documents; the same client, cache and batch runner serve every generator)."""

from .client import Completion, GenerationError, Sampling, TextGenerator
from .config import GeneratorSpec, QueryGenConfig
from .graded import GradedDocuments, generate_graded
from .graded_config import GradedGenConfig
from .queries import GeneratedQueries, generate_queries

__all__ = ["Completion", "GeneratedQueries", "GenerationError", "GeneratorSpec", "GradedDocuments", "GradedGenConfig",
           "QueryGenConfig", "Sampling", "TextGenerator", "generate_graded", "generate_queries"]
