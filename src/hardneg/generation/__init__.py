"""The generating half: an LLM writes training data for a corpus without labels (synthetic queries,
graded documents, hard negatives; the same client, cache and batch runner serve every generator)."""

from .client import GenerationError, TextGenerator
from .completion import Completion, Sampling
from .config import GeneratorSpec, QueryGenConfig
from .graded import GradedDocuments, generate_graded
from .graded_config import GradedGenConfig
from .negative_config import NegativeGenConfig
from .negatives import GeneratedNegatives, generate_negatives
from .queries import GeneratedQueries, generate_queries

__all__ = ["Completion", "GeneratedNegatives", "GeneratedQueries", "GenerationError", "GeneratorSpec", "GradedDocuments",
           "GradedGenConfig", "NegativeGenConfig", "QueryGenConfig", "Sampling", "TextGenerator", "generate_graded",
           "generate_negatives", "generate_queries"]
