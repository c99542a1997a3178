"""TrainConfig: every training setting, its default and its help text, in one place (the trainer's
keyword arguments, the ``hardneg train`` options and, field for field, an experiment's budget)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

LOSSES = ("mnrl", "mnrl-hn", "cached-mnrl", "gist", "gist-scores", "margin-mse", "kl", "mnrl-kl", "mochi", "cet",
          "adore", "mnrl-idmask", "graded-wasserstein", "graded-softmax")


class TrainConfig(BaseModel):
    """How to fine-tune. Equal configs on the same run and base model give the same model."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(description="run folder from `hardneg mine` (or the table the rows came from)")
    out: str = Field(description="folder for the trained model")
    model: str | None = Field(None, description="base model path or id [default: packaged MiniLM]")
    loss: str = Field("mnrl-hn", description=" | ".join(LOSSES))
    num_negatives: int | None = Field(None, ge=1, description="use the first k mined negatives [default: all]")
    batch_size: int = Field(32, ge=2, description="batch size")
    epochs: float = Field(1.0, gt=0, description="epochs")
    max_steps: int = Field(-1, description="stop after this many steps (overrides epochs)")
    learning_rate: float = Field(2e-5, description="learning rate")
    warmup_ratio: float = Field(0.1, description="share of the steps spent warming up the learning rate")
    seed: int = Field(0, description="seed")
    max_length: int | None = Field(None, ge=8, description="token limit for queries and documents")
    guide: str | None = Field(None, description="guide model for the gist loss")
    hardness_strength: float = Field(0.0, description="hardness weighting of mined negatives (MNRL family)")
    mini_batch_size: int = Field(16, ge=1, description="mini-batch size of cached-mnrl (GradCache)")
    teacher_scores: str | None = Field(None, description="soft labels of kl / margin-mse: the run's teachers "
                                       "fused per row, e.g. dense+e5+bm25_stem or all (mine with --score-with) "
                                       "[default: the filter teacher's raw scores]")
    teacher_norm: str = Field("zscore", description="per-row normalisation of --teacher-scores before fusing: "
                              "zscore | none")
    teacher_temperature: float = Field(1.0, gt=0, description="kl: softmax temperature of the teacher's scores")
    student_temperature: float | None = Field(None, gt=0, description="kl / mnrl-kl / graded-*: softmax temperature "
                                              "of the student's cosines [default: kl 1.0 (as sentence-transformers), "
                                              "mnrl-kl and graded-* 0.05 (MNRL's scale 20)]")
    distill_weight: float = Field(1.0, ge=0, description="mnrl-kl: weight of the KL term")
    infonce_weight: float = Field(1.0, ge=0, description="mnrl-kl: weight of the InfoNCE (MNRL) term")
    teacher_scale: float = Field(1.0, gt=0, description="margin-mse: fused teacher margins are multiplied by this")
    bf16: bool | None = Field(None, description="bfloat16 autocast [default: on for a CPU with native bf16 "
                              "(AVX512-BF16/AMX) and no GPU, where it is faster at equal quality; fp32 elsewhere]")
    mochi_hard: int = Field(16, ge=1, description="mochi: the N hardest negatives per query the synthetic ones mix")
    mochi_mix: int = Field(16, ge=0, description="mochi: s, mixes of two hard negatives per query")
    mochi_query_mix: int = Field(8, ge=0, description="mochi: s', mixes of the query with a hard negative per query")
    mochi_beta_max: float = Field(0.5, gt=0, le=0.5, description="mochi: the query's largest weight in a query mix")
    hard_batches: bool = Field(False, description="NGAME hard batches: batches of whole clusters of similar queries")
    cluster_size: int = Field(8, ge=1, description="queries per cluster of --hard-batches")
    recluster_every: int = Field(0, ge=0, description="re-cluster --hard-batches with the current model every N "
                                 "steps [default 0: once, with the base model]")
    query_balanced: bool = Field(False, description="each pass serves every query once, with one of its positives "
                                 "drawn at random (DPR / Tevatron), instead of one row per (query, positive): a "
                                 "query with many positives weighs no more than one with a single positive")

    remine_every: int = Field(0, ge=0, description="re-encode the corpus with the current student and re-mine the "
                              "negatives with the run's settings every N optimiser steps (ANCE; dense teacher; 0 = off)")
    adore_depth: int = Field(200, ge=1, description="loss adore: non-positive documents retrieved per query and step "
                             "from the fixed corpus index")
    adore_negatives: int | None = Field(None, ge=1, description="loss adore: how many of the top retrieved documents "
                                        "enter the loss [default: all adore_depth]")
    graded_positives: int | None = Field(None, ge=1, description="graded-*: up to N positives per query in its list, "
                                         "spread over its qrels grade levels [default: 4]")
    grade_temperature: float | None = Field(None, gt=0, description="graded-*: the target is softmax(grade / T) over "
                                            "the list [default: grades normalised to sum 1, negatives 0]")
    graded_in_batch: bool = Field(True, description="graded-*: the batch's other documents join each list as grade 0")
    graded_judged_zeros: bool = Field(True, description="graded-*: a query's judged grade-0 documents (qrels score 0, "
                                      "e.g. the level-0 documents of 'generate graded') take its first negative "
                                      "slots, before the mined negatives")
    wasserstein_form: str = Field("list", description="graded-wasserstein: list (each query's 1-D W1 along the grade "
                                  "axis) | gaussian (the SyCL code's: 2-Wasserstein between Gaussians fitted over the "
                                  "batch)")
    negatives: str = Field("mined", description="mined | generated | both | generated-else-mined: the negative slots "
                           "hold the run's mined negatives, the LLM-written ones of --generated (k = num_negatives or its "
                           "per_query), the mined ones then every generated one (k + per_query), or the generated ones "
                           "with the mined one of the slot where none was kept; a query short of any is left out. "
                           "Without --run, --negatives RUN is the run folder (its old name)")
    generated: str | None = Field(None, description="folder from `hardneg generate negatives` (for --negatives "
                                  "generated | both | generated-else-mined); its fingerprint enters the model's settings key")
    checkpoint_every: int = Field(50, ge=0, description="save a checkpoint every N optimiser steps beside --out, so that "
                                  "a killed run resumes from it with the same result (0 = off; not for --hard-batches)")


    def fingerprint_settings(self) -> dict[str, Any]:
        """The settings that make the model. Options added later enter only when set away from their
        default, so a model trained without them keeps its key. The trainer resolves ``bf16`` first
        (:func:`~hardneg.training.precision.training_bf16`), so the key holds the precision that was used."""
        unset = {k for k in _LATER if getattr(self, k) == TrainConfig.model_fields[k].default}
        if self.bf16 is False:  # fp32, the default before bf16 became one: an fp32 model keeps its key
            unset.add("bf16")
        if self.hard_batches:  # the sampler's settings are all part of a hard-batch model's key
            unset -= {"cluster_size", "recluster_every"}
        # generated: its content's key; checkpoint_every: where a run may resume, not what it makes
        return self.model_dump(exclude={"out", "run", "generated", "checkpoint_every"} | unset)


_LATER = ("teacher_scores", "teacher_norm", "teacher_temperature", "student_temperature", "distill_weight",
          "infonce_weight", "teacher_scale", "bf16", "mochi_hard", "mochi_mix", "mochi_query_mix", "mochi_beta_max",
          "remine_every", "adore_depth", "adore_negatives", "hard_batches", "cluster_size", "recluster_every",
          "graded_positives", "grade_temperature", "graded_in_batch", "wasserstein_form", "graded_judged_zeros",
          "negatives", "generated", "query_balanced")
