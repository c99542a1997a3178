"""The generating half: an LLM writes training data for a corpus without labels (synthetic queries,
hard negatives; the same client, cache and batch runner serve every generator)."""

from .client import Completion, GenerationError, Sampling, TextGenerator
from .config import GeneratorSpec, QueryGenConfig
from .negative_config import NegativeGenConfig
from .negatives import GeneratedNegatives, generate_negatives
from .queries import GeneratedQueries, generate_queries

__all__ = ["Completion", "GeneratedNegatives", "GeneratedQueries", "GenerationError", "GeneratorSpec",
           "NegativeGenConfig", "QueryGenConfig", "Sampling", "TextGenerator", "generate_negatives", "generate_queries"]
