"""The training precision: bfloat16 autocast where it was measured faster at equal quality, fp32 elsewhere."""

from __future__ import annotations

from ..candidates.encoders import cpu_bf16


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
