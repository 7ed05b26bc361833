"""Model folders of a run's stages: dense Hugging Face folders and langmoe MoE folders, and parameter counts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from langmoe.models.moe import moe_blocks
from langmoe.models.moe_io import MAX_SHARD_SIZE, load_model_any, load_moe_pretrained, save_moe_pretrained
from langmoe.models.upcycle import parameter_counts
from langmoe.precision import load_dtype


def save_dense(tokenizer) -> Callable[[Any, Path], None]:
    """`save(model, dest)`: a plain Hugging Face folder (safetensors + tokenizer)."""

    def save(m, dest: Path) -> None:
        m.save_pretrained(str(dest), max_shard_size=MAX_SHARD_SIZE)
        tokenizer.save_pretrained(str(dest))

    return save


def load_dense(path: Path):

    return load_model_any(path, dtype=load_dtype(torch.float32))[0]  # langmoe's one loader


def save_moe(tokenizer) -> Callable[[Any, Path], None]:
    """`save(model, dest)`: an MoE folder whose config.json records the MoE structure (`langmoe.models.moe_io`)."""

    def save(model, dest: Path) -> None:
        save_moe_pretrained(model, tokenizer, dest)

    return save


def load_moe(path: str | Path):
    """The MoE model saved by `save_moe`, exact weights, in training mode (stages continue training it)."""

    model = load_moe_pretrained(path, dtype=load_dtype(torch.float32))
    model.train()
    return model


def dense_params(model) -> dict[str, int]:
    n = sum(p.numel() for p in model.parameters())
    return {"total": n, "active": n}


def moe_params(model, hard: bool = False) -> dict[str, int]:
    """Total and active-per-token parameters of an MoE model (hard routing: one expert per token)."""

    c = parameter_counts(model)
    active = c["active_per_token"]
    if hard:
        for b in moe_blocks(model):
            per_expert = b.params_per_expert
            active -= per_expert * (b.top_k - 1)
    return {"total": int(c["total"]), "active": int(active)}
