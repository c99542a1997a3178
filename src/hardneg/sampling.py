"""Choose n negatives per query among the candidates the filters kept.

Randomness comes from a hash of (seed, query id, doc id), not from a stream, so a choice does not
depend on the order of queries or documents, or on which other queries are in the run. Weighted
sampling without replacement uses the Gumbel-top-k trick; ties go to the lower doc index (= id order).
Rows with fewer than n survivors keep what there is; the shortfall is reported, never padded."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .decisions.filters import format_number, parse_number
from .errors import ConfigError
from .runs.files import hashes64

SAMPLERS = ("top", "window", "random", "simans", "top1+sampled")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class SamplerSpec:
    """``top``, ``window:A-B``, ``random[:A-B]``, ``simans[:a=..,b=..]``, ``top1+sampled[:A-B]``.
    A-B are 1-based teacher ranks (inclusive) that bound where negatives may come from."""

    kind: str = "top"
    rank_min: int = 1
    rank_max: int | None = None
    params: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        """The canonical spelling: ``parse(str(spec)) == spec`` and ``str`` of that is the same text."""
        s = self.kind
        if self.rank_min != 1 or self.rank_max is not None:
            s += f":{self.rank_min}-{self.rank_max or ''}"
        if self.params:
            s += ("," if ":" in s else ":") + ",".join(f"{k}={format_number(v)}" for k, v in sorted(self.params.items()))
        return s

    @staticmethod
    def parse(text: str | SamplerSpec) -> SamplerSpec:
        if isinstance(text, SamplerSpec):
            return text
        kind, _, rest = text.strip().lower().partition(":")
        kind = kind.strip()
        if kind not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{text}' (choose from {', '.join(SAMPLERS)})")
        rank_min, rank_max, params = 1, None, {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            m = re.fullmatch(r"(\d+)\s*-\s*(\d*)", part)
            if m:
                rank_min, rank_max = int(m.group(1)), int(m.group(2)) if m.group(2) else None
                if rank_min < 1 or (rank_max is not None and rank_max < rank_min):
                    raise ConfigError(f"bad rank window '{part}' in sampler '{text}' (use A-B with 1 <= A <= B)")
                continue
            k, eq, v = (x.strip() for x in part.partition("="))
            if not eq or k not in ("a", "b") or kind != "simans":
                raise ConfigError(f"unknown sampler option '{part}' in '{text}' (only simans takes a= and b=; "
                                  "a rank window is A-B)")
            params[k] = parse_number(v, f"{k}= in sampler '{text}'")
            if k == "a" and params[k] <= 0:
                raise ConfigError(f"simans a= must be above 0 in sampler '{text}'")
        if kind == "window" and rank_max is None and rank_min == 1:
            raise ConfigError("window needs a rank range, e.g. window:10-100")
        return SamplerSpec(kind, rank_min, rank_max, params)


def id_hashes(ids: np.ndarray) -> np.ndarray:
    """Stable 64-bit hash of each id string."""
    return hashes64((str(i) for i in ids), len(ids))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def pair_uniform(seed: int, query_hash: np.ndarray, doc_hash: np.ndarray) -> np.ndarray:
    """Uniform (0, 1) numbers determined by (seed, query, doc) alone."""
    h = _mix(_mix(query_hash ^ _mix(np.asarray(seed % 2**64, dtype=np.uint64))) ^ doc_hash)
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)


def simans_a(score: np.ndarray, pos_ref: np.ndarray, eligible: np.ndarray) -> float:
    """Default SimANS sharpness: 1 / (2 var(s - s+)) over eligible candidates, so the kernel's
    width matches the teacher's score scale (cosine and BM25 scores differ by 100x)."""
    d = (score - pos_ref[:, None])[eligible & np.isfinite(pos_ref)[:, None]]
    var = float(np.var(d)) if d.size > 1 else 0.0
    return 1.0 / (2.0 * var) if var > 0 else 1.0


def sample(spec: SamplerSpec, n: int, eligible: np.ndarray, rank: np.ndarray, score: np.ndarray,
           pos_ref: np.ndarray, query_hash: np.ndarray, doc_hash: np.ndarray, seed: int,
           ) -> tuple[np.ndarray, dict[str, float]]:
    """Column positions (queries x n, -1 = shortfall) of the chosen candidates, sorted by rank,
    and the derived parameters (e.g. SimANS a, b) for the manifest."""
    in_window = eligible & (rank >= spec.rank_min)
    if spec.rank_max is not None:
        in_window &= rank <= spec.rank_max
    derived: dict[str, float] = {}
    big = np.float64(np.inf)
    if spec.kind in ("top", "window"):
        key = np.where(in_window, rank.astype(np.float64), big)
    else:
        u = pair_uniform(seed, query_hash[:, None], doc_hash)
        gumbel = -np.log(-np.log(u))
        if spec.kind == "simans":
            a = spec.params.get("a", simans_a(score, pos_ref, in_window))
            b = spec.params.get("b", 0.0)
            derived = {"simans_a": a, "simans_b": b}
            logits = -a * (score - pos_ref[:, None] - b) ** 2
            logits = np.where(np.isfinite(logits), logits, 0.0)
        else:
            logits = np.zeros(score.shape)
        key = np.where(in_window, -(logits + gumbel), big)
        if spec.kind == "top1+sampled":
            first = np.argmin(np.where(in_window, rank, np.iinfo(rank.dtype).max), axis=1)
            rows = np.arange(rank.shape[0])
            key[rows, first] = np.where(in_window[rows, first], -big, big)
    width = key.shape[1]
    take = min(n, width)
    # Sort by (key, rank): rank breaks ties, and rank order is doc-index order for equal scores.
    order = np.lexsort((rank, key), axis=1)[:, :take]
    chosen_ok = np.take_along_axis(key, order, axis=1) < big
    chosen = np.where(chosen_ok, order, -1)
    # Report negatives in rank order.
    chosen_rank = np.where(chosen >= 0, np.take_along_axis(rank, np.maximum(chosen, 0), axis=1),
                           np.iinfo(rank.dtype).max)
    chosen = np.take_along_axis(chosen, np.argsort(chosen_rank, axis=1, kind="stable"), axis=1)
    if take < n:
        chosen = np.concatenate([chosen, np.full((chosen.shape[0], n - take), -1)], axis=1)
    return chosen, derived
