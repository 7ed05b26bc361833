"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

A picklable callable object (not a closure) so `LambdaLR.state_dict()` records it and resume is exact.
"""

from __future__ import annotations

import math

import torch

from langmoe.errors import LangmoeError


class WarmupCosine:
    """LR multiplier for 0-based optimizer step `s` of `total_steps`.

    Steps `0..warmup_steps-1` ramp linearly to 1 (step 0 already gets `1/warmup_steps`, so no step is wasted at
    lr 0); the remaining steps follow a half cosine from 1 down to `min_lr_ratio`, reached exactly on the last step.

    `offset` shifts the call's steps (step `s` is evaluated at `s + offset`): one schedule spread over several
    `train` calls, e.g. DMoE stage 2 continuing stage 1's warmup-cosine instead of restarting it.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_lr_ratio: float, offset: int = 0):
        if total_steps < 1:
            raise LangmoeError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise LangmoeError(f"warmup_steps must be in [0, {total_steps}], got {warmup_steps}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise LangmoeError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        if not 0 <= offset < total_steps:
            raise LangmoeError(f"schedule offset must be in [0, {total_steps}), got {offset}")
        self.offset = offset

    def __call__(self, step: int) -> float:
        step = step + self.offset
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps - 1
        progress = min(1.0, (step - self.warmup_steps) / decay_steps) if decay_steps > 0 else 0.0
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR with `WarmupCosine`; warmup length is `round(warmup_ratio * total_steps)`."""
    warmup = min(total_steps, int(round(warmup_ratio * total_steps)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup, min_lr_ratio))


def continued_warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, min_lr_ratio: float, offset: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """The part of one warmup-cosine over `total_steps` that starts at global step `offset` (0: the whole one)."""
    warmup = min(total_steps, int(round(warmup_ratio * total_steps)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup, min_lr_ratio, offset))
