"""The generating half: an LLM writes training data for a corpus without labels (synthetic queries;
the same client, cache and batch runner serve the other generators)."""

from .client import Completion, GenerationError, Sampling, TextGenerator
from .config import GeneratorSpec, QueryGenConfig
from .queries import GeneratedQueries, generate_queries

__all__ = ["Completion", "GeneratedQueries", "GenerationError", "GeneratorSpec", "QueryGenConfig", "Sampling",
           "TextGenerator", "generate_queries"]
