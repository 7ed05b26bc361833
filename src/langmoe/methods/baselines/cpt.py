"""Dense continual pre-training (CPT): the base trained on the mixed multilingual data, same token budget as DMoE."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def train_cpt(model, blocks, train_config: Mapping[str, Any], out_dir: Path, tau: float = 0.3,
              fail_at: int | None = None):
    """Mixed micro-batches (languages ∝ size^tau), plain causal-LM loss, all parameters. Resumes."""
    from langmoe.data.samplers import TemperatureSampler
    from langmoe.methods.dmoe.stages import FailAfter
    from langmoe.train.trainer import train

    source = TemperatureSampler(blocks, train_config["micro_batch_size"], tau=tau, seed=train_config.get("seed", 0))
    if fail_at is not None:
        source = FailAfter(source, fail_at)
    return train(model, source, dict(train_config), out_dir)
