"""The experiment's configuration: the training budget, the mining variants, the grid they expand
from, and the CI-sized (``--quick``) version of a config."""

from __future__ import annotations

import re
from copy import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..candidates.encoders import ENCODERS
from ..errors import ConfigError
from ..training.config import TrainConfig


def _train_field(name: str) -> Any:
    """:class:`TrainConfig`'s field (default, bounds, help): a budget declares nothing of its own."""
    return copy(TrainConfig.model_fields[name])


class Budget(BaseModel):
    """The same training budget for every cell: these :class:`TrainConfig` fields, with its defaults."""

    model_config = ConfigDict(extra="forbid")
    batch_size: int = _train_field("batch_size")
    epochs: float = _train_field("epochs")
    max_steps: int = _train_field("max_steps")
    learning_rate: float = _train_field("learning_rate")
    warmup_ratio: float = _train_field("warmup_ratio")
    max_length: int | None = _train_field("max_length")
    bf16: bool | None = _train_field("bf16")


class Variant(BaseModel):
    """One mining + training choice. ``kind: st`` is an outside baseline: sentence-transformers'
    ``mine_hard_negatives(relative_margin, num_negatives, range_max, ...)`` (``st.model``: the mining model,
    default the base model) then ``loss``; with a distillation loss (``margin-mse``, ``kl``) ST's
    ``output_scores=True`` gives the labels, as a sentence-transformers user would train."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["hardneg", "st"] = "hardneg"
    loss: str = "mnrl-hn"
    mine: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] | None = None
    budget: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict, description="the method's own training options (TrainConfig "
                                  "fields: teacher_scores, temperatures, ...), on top of the shared budget")
    st: dict[str, Any] = Field(default_factory=lambda: {"relative_margin": 0.05, "num_negatives": 4, "range_max": 50})


class ExperimentConfig(BaseModel):
    """A grid of mining variants, each mined on the train split, trained with one budget and evaluated
    on the test split, for every seed (see :func:`hardneg.experiment.driver.run_experiment`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "experiment"
    dataset: str
    test_dataset: str | None = Field(None, description="the collection the test (and dev) split is read from "
                                     "[default: dataset]: the original collection when dataset is a generated folder "
                                     "(hardneg generate graded), whose synthetic documents must not be searched at test")
    train_split: str = "train"
    test_split: str = "test"
    base_model: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0])
    baseline: str | list[str] | None = Field(None, description="the variant(s) to beat; with several, every "
                                            "variant is compared with the one of best mean test nDCG@10 (the "
                                            "harder comparison)")
    budget: Budget = Field(default_factory=Budget)
    variants: list[Variant] = Field(default_factory=list)
    grid: dict[str, list[Any]] | None = Field(None, description="mine options -> values: one hardneg variant per "
                                              "combination (e.g. teacher x filter x sampler x num_negatives), "
                                              "added after the listed variants")
    dev_queries: int = Field(0, ge=0, description="train queries held out (never trained on) to choose the best variant")
    dev_seed: int = 0
    dev_split: str | None = Field(None, description="a real dev split of the dataset (e.g. NFCorpus 'dev') instead "
                                  "of held-out train queries")
    best_seeds: list[int] | None = Field(None, description="extra seeds for the best hardneg variant on dev and the "
                                         "baseline(s)")
    cache_dir: str | None = None
    eval_encoder: str = Field("auto", description="the encoder every evaluation uses (one of mining's --encoder "
                              "values); --quick uses torch, which exports nothing per trained model")
    eval_max_length: int | None = Field(None, gt=0, description="the token limit of every evaluation's encoding "
                                        "[default: the model's own]; --quick uses 64")
    permutations: int = Field(10000, description="resamples of the paired randomisation test and of the paired "
                                                "bootstrap confidence interval")

    @field_validator("eval_encoder")
    @classmethod
    def _known_encoder(cls, v: str) -> str:
        if v not in ENCODERS:
            raise ValueError(f"unknown encoder '{v}' (use {', '.join(ENCODERS)})")
        return v

    @model_validator(mode="after")
    def _expand_grid(self) -> ExperimentConfig:
        if self.grid:
            import itertools

            keys = sorted(self.grid)
            for values in itertools.product(*(self.grid[k] for k in keys)):
                opts = dict(zip(keys, values))
                # A folder name: only word characters, '.', '=', '+' and '-'.
                name = re.sub(r"[^\w.=+-]+", "_", "grid-" + "-".join(f"{k}={v}" for k, v in opts.items()))
                self.variants.append(Variant(name=name, mine=opts))
            self.grid = None  # expanded once: a dumped config reloads to the same variants
        if not self.variants:
            raise ValueError("no variants: list some under 'variants' or give a 'grid'")
        if self.dev_split and self.dev_queries:
            raise ValueError("give dev_split or dev_queries, not both")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate variant names: {sorted({n for n in names if names.count(n) > 1})}")
        return self

    @property
    def baselines(self) -> list[str]:
        """The baseline variant names (none, one or several)."""
        if self.baseline is None:
            return []
        return [self.baseline] if isinstance(self.baseline, str) else list(self.baseline)

    def with_seeds(self, seeds: list[int]) -> ExperimentConfig:
        """The same grid run with only these seeds for every variant (no dev-chosen extra seeds): a grid split
        over processes or machines, one seed each, merges by rerunning the full config on the joined folders."""
        if not seeds:
            raise ConfigError("--seeds: give at least one seed")
        variants = [v.model_copy(update={"seeds": None}) for v in self.variants]
        return self.model_copy(update={"seeds": list(seeds), "best_seeds": None, "variants": variants})

    def with_variants(self, only: list[str]) -> ExperimentConfig:
        """The same grid restricted to these variants (and the baseline, if one is set)."""
        unknown = set(only) - {v.name for v in self.variants}
        if unknown:
            raise ConfigError(f"unknown variant(s): {', '.join(sorted(unknown))}")
        keep = set(only) | set(self.baselines)
        return self.model_copy(update={"variants": [v for v in self.variants if v.name in keep]})

    @classmethod
    def from_file(cls, path: str | Path) -> ExperimentConfig:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: experiment file not found")
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        # Paths are relative to the file where such a file or folder exists there, else to the working directory.
        places = [(data, "dataset"), (data, "test_dataset")]
        places += [(v["train"], "generated") for v in data.get("variants") or [] if isinstance(v.get("train"), dict)]
        for holder, key in places:
            if isinstance(holder.get(key), str) and not Path(holder[key]).is_absolute():
                cand = (p.parent / holder[key]).resolve()
                holder[key] = str(cand) if cand.exists() else holder[key]
        return cls(**data)


def quick_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """CI-sized: tiny budget, one seed; an ST baseline that mines with another model (``st.model``)
    mines with the base model instead (a check of the pipeline, not a measurement)."""
    small = cfg.model_copy(deep=True)
    small.budget = Budget(batch_size=8, max_steps=3, max_length=64, learning_rate=1e-4, warmup_ratio=0.0)
    small.seeds = [0]
    small.permutations = 500
    small.best_seeds = [0, 1] if cfg.best_seeds else None
    small.dev_queries = min(cfg.dev_queries, 10)
    small.dev_split = cfg.dev_split
    small.eval_encoder, small.eval_max_length = "torch", 64
    for v in small.variants:
        v.seeds = None
        if v.kind == "st" and v.st.get("model"):
            v.st = {**v.st, "model": None}
    return small
