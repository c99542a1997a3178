"""False-negative control, first layer: rules that drop candidates and say why.

All rules work on (queries x candidates) arrays. Positive-aware rules compare a candidate's score
``s`` with the query's *lowest* positive score ``s+`` (the most permissive reference, as
NV-Retriever and sentence-transformers do): ``margin`` drops ``s > s+ - m`` (TopK-MarginPos),
``percpos`` drops ``s > s+ - (1 - p)|s+|`` (TopK-PercPos; equal to ``p * s+`` for s+ >= 0 and
sign-safe below zero), ``maxscore`` / ``minscore`` are absolute bounds (TopK-Abs).
``near_duplicate`` drops a candidate whose word-shingle Jaccard with a positive reaches the value,
``near_positive`` one whose embedding cosine with a positive does, ``knn_positive`` one whose
nearest neighbours in its query's pool are at least this share known positives. ``auto`` values (near_positive,
percpos) are calibrated per run from the known positives (see ``calibration``).
``cascade`` is every stage, cheapest first, with calibrated defaults."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..runs.files import hashes64

# Reason codes: 0 = kept; the rest name the first rule that dropped the candidate.
REASONS = ("", "positive", "duplicate_text", "minscore", "maxscore", "margin", "percpos", "near_duplicate",
           "near_positive", "knn_positive", "cross_encoder", "llm", "llm_error", "relabelled", "synthetic")
REASON_CODE = {r: i for i, r in enumerate(REASONS)}
SCORE_KINDS = ("percpos", "margin", "maxscore", "minscore")
SIMILARITY_KINDS = ("near_duplicate", "near_positive", "knn_positive")
THRESHOLD_KINDS = SCORE_KINDS + SIMILARITY_KINDS
DEFAULTS = {"percpos": "0.95", "near_duplicate": "0.5", "near_positive": "auto", "knn_positive": "0.5"}
# The cascade, cheapest first (id and exact-text exclusion always run before any rule).
CASCADE = "near_duplicate:0.5+near_positive:auto+knn_positive:0.5"


def format_number(value: float) -> str:
    """The shortest text that parses back to exactly ``value`` (``0.95``, ``1``, ``1e-05``, ``1e16``,
    never a '+', which joins rules): canonical spec strings must be fixed points, which
    ``format(v, 'g')`` (6 digits) is not."""
    text = repr(float(value) + 0.0).replace("e+", "e")  # -0.0 prints 0
    return text.removesuffix(".0")


def parse_number(text: str, what: str) -> float:
    """A finite number; ``what`` names the spec for the error (NaN would read as ``auto``)."""
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"'{what}' needs a number, got '{text}'") from None
    if not np.isfinite(v):
        raise ConfigError(f"'{what}' needs a finite number, got '{text}'")
    return v + 0.0  # -0.0 -> 0.0: one spelling


@dataclass(frozen=True, eq=False)
class FilterSpec:
    """One threshold rule, e.g. ``percpos:0.95``, ``margin:0.05``, ``maxscore:0.8``."""

    kind: str
    value: float  # NaN: calibrated when mining (``auto``)

    @property
    def auto(self) -> bool:
        return bool(np.isnan(self.value))

    def __str__(self) -> str:
        return f"{self.kind}:{'auto' if self.auto else format_number(self.value)}"

    def __eq__(self, other: object) -> bool:  # two ``auto`` rules are equal although NaN != NaN
        return (isinstance(other, FilterSpec) and self.kind == other.kind
                and (self.value == other.value or (self.auto and other.auto)))

    def __hash__(self) -> int:
        return hash((self.kind, None if self.auto else self.value))

    @staticmethod
    def parse(text: str) -> list[FilterSpec]:
        """Parse ``none``, ``cascade``, one rule, or several joined by ``+`` / ``,``."""
        out = []
        text = re.sub(r"(?i)\bcascade\b", CASCADE, text.strip())
        for part in re.split(r"[+,]", text):
            part = part.strip().lower()
            if part in ("", "none"):
                continue
            kind, _, value = part.partition(":")
            kind = kind.strip()
            kind = {"max_score": "maxscore", "min_score": "minscore", "perc": "percpos", "neardup": "near_duplicate",
                    "nearpos": "near_positive"}.get(kind, kind)
            if kind not in THRESHOLD_KINDS:
                raise ConfigError(f"unknown filter '{part}' (use none, cascade, percpos:P, margin:M, maxscore:S, "
                                  "minscore:S, near_duplicate:J, near_positive:C|auto, knn_positive:F)")
            value = value.strip() or DEFAULTS.get(kind, "")
            if value == "auto" and kind in ("near_positive", "percpos"):
                out.append(FilterSpec(kind, float("nan")))
                continue
            if not value:
                raise ConfigError(f"filter '{part}' needs a number, e.g. {kind}:0.5")
            v = parse_number(value, part)
            if kind in ("percpos", "near_duplicate", "knn_positive") and not 0 < v <= 1:
                raise ConfigError(f"filter '{part}': {kind} takes a fraction in (0, 1], got {value}")
            out.append(FilterSpec(kind, v))
        return out


@dataclass(frozen=True)
class FilterChain:
    """The rules of ``--filter`` in order, parsed once (``cascade`` expanded, aliases and numbers
    normalised). ``str()`` is the canonical spelling: ``percpos:.95`` and ``PercPos:0.950`` both
    print ``percpos:0.95``, and no rules print ``none``; parsing it gives the same chain back."""

    rules: tuple[FilterSpec, ...] = ()

    @staticmethod
    def parse(text: str | FilterChain) -> FilterChain:
        if isinstance(text, FilterChain):
            return text
        return FilterChain(tuple(FilterSpec.parse(text)))

    def __str__(self) -> str:
        return "+".join(str(f) for f in self.rules) or "none"

    def __iter__(self) -> Iterator[FilterSpec]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def prefixes(self) -> list[FilterChain]:
        """No rules, the first, the first two, ...: each stage with those before it (for audit)."""
        return [FilterChain(self.rules[:i]) for i in range(len(self.rules) + 1)]


def positive_reference(query_rows: np.ndarray, scores: np.ndarray, num_queries: int) -> np.ndarray:
    """Lowest positive score per query row (NaN for a query without a scored positive)."""
    ref = np.full(num_queries, np.inf)
    np.minimum.at(ref, query_rows, scores)
    ref[~np.isfinite(ref)] = np.nan
    return ref


def threshold_drops(spec: FilterSpec, score: np.ndarray, pos_ref: np.ndarray,
                    similarity: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Boolean mask of candidates the rule drops. ``pos_ref`` broadcasts per row (queries);
    ``similarity[kind]`` holds each candidate's highest similarity to a positive of its query."""
    if spec.auto:
        raise ConfigError(f"{spec}: calibrate the threshold before applying it")
    if spec.kind in SIMILARITY_KINDS:
        return (similarity or {})[spec.kind] >= spec.value
    ref = pos_ref[:, None]
    if spec.kind == "maxscore":
        return score > spec.value
    if spec.kind == "minscore":
        return score < spec.value
    if spec.kind == "margin":
        limit = ref - spec.value
    else:  # percpos
        limit = ref - (1.0 - spec.value) * np.abs(ref)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(ref), False, score > limit)


def normalised_text_hash(texts: list[str]) -> np.ndarray:
    """64-bit hash of each text after case folding and whitespace collapsing."""
    return hashes64((" ".join(t.casefold().split()) for t in texts), len(texts))


def apply_filters(specs: list[FilterSpec], score: np.ndarray, valid: np.ndarray, is_positive: np.ndarray,
                  is_duplicate: np.ndarray, pos_ref: np.ndarray,
                  similarity: dict[str, np.ndarray] | None = None,
                  synthetic: np.ndarray | None = None) -> np.ndarray:
    """Reason code per candidate (uint8, 0 = kept): the first rule, in order, that drops it.
    Known positives, exact-text copies of a positive and synthetic documents (``synthetic``: written
    for one query, see :mod:`hardneg.collection.synthetic`) always go, before any threshold."""
    reason = np.zeros(score.shape, dtype=np.uint8)

    def mark(mask: np.ndarray, name: str) -> None:
        reason[(reason == 0) & valid & mask] = REASON_CODE[name]

    mark(is_positive, "positive")
    mark(is_duplicate, "duplicate_text")
    if synthetic is not None:
        mark(synthetic, "synthetic")
    for spec in specs:
        mark(threshold_drops(spec, score, pos_ref, similarity), spec.kind)
    return reason


def reason_counts(reason: np.ndarray, valid: np.ndarray) -> dict[str, int]:
    counts = np.bincount(reason[valid].ravel(), minlength=len(REASONS))
    return {("kept" if i == 0 else r): int(c) for i, (r, c) in enumerate(zip(REASONS, counts))}
