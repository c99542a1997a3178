"""The training precision: bfloat16 autocast where it was measured faster at equal quality, fp32 elsewhere."""

from __future__ import annotations

import warnings

from ..candidates.encoders import cpu_bf16
from ..errors import HardnegWarning

EMULATED_BF16 = ("bf16 training was asked for on a CPU without native bf16 (no AVX512-BF16 or AMX) and no GPU: torch "
                 "emulates it, 188-201 s a step where native bf16 took 8-10 (docs/benchmarks.md, \"Generate\"); set "
                 "bf16 false, or leave it unset to choose by the machine")


def has_gpu() -> bool:
    """Whether torch sees a CUDA device (the trainer then trains on it)."""
    import torch

    return bool(torch.cuda.is_available())


def training_bf16(requested: bool | None) -> bool:
    """Whether to train with bf16 autocast: ``requested`` when given; by default (None) yes on a CPU with
    native bf16 (AVX512-BF16 or AMX) and no GPU, where it took 0.63x fp32's time per step and gave the same dev
    nDCG@10 (docs/benchmarks.md, "bf16 autocast"). Elsewhere fp32: a CPU without native bf16 emulates it slowly,
    and on a GPU it has not been measured."""
    if requested is not None:
        return requested
    return cpu_bf16() and not has_gpu()


def warn_if_emulated(bf16: bool) -> None:
    """Warn (:class:`~hardneg.errors.HardnegWarning`) when bf16 training would run emulated: asked for
    explicitly (an experiment's ``bf16: true`` written on another machine, ``--bf16``) on a CPU without native
    bf16 and no GPU. The run goes on in bf16, as asked: the precision is part of the model's settings key."""
    if bf16 and not cpu_bf16() and not has_gpu():
        warnings.warn(HardnegWarning(EMULATED_BF16), stacklevel=2)
