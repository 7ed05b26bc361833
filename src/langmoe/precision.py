"""Precision and memory settings of one training command, set once at its edge and read where they act.

A command's `--dtype`, `--mixed-precision`, `--gradient-checkpointing` and `--attn-implementation` (see
`langmoe.commands._options`) become a `Precision` that is active while the command runs (`use_precision`). Two
places read it, so every training path honours it without each method passing it along:

* the model loaders (`load_dtype`): the dtype the weights are loaded and trained in (`--dtype bfloat16` halves
  weights, gradients and AdamW state; fp32 stays the default and the safe choice for small learning rates);
* the trainer (`apply_to_config`, `prepare_model`): bf16 autocast over the weights (`--mixed-precision bf16`),
  non-reentrant activation checkpointing, and the attention kernel (SDPA, transformers' default, unless asked).

A field left at None keeps what the command or recipe says; recipe stages add the fields that change results to
their cache keys (`cache_fields`), so a bf16 rerun does not reuse an fp32 stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from langmoe.errors import LangmoeError

__all__ = ["Precision", "active", "apply_to_config", "cache_fields", "load_dtype", "prepare_model",
           "use_precision"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Precision(BaseModel):
    """How a command holds and computes its model; None keeps the command's (or recipe's) own setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dtype: Literal["float32", "bfloat16"] | None = None
    mixed_precision: Literal["no", "bf16"] | None = None
    gradient_checkpointing: bool | None = None
    attn_implementation: Literal["sdpa", "eager"] | None = None


_NONE_SET = Precision()
_ACTIVE: ContextVar[Precision | None] = ContextVar("langmoe_precision", default=None)


def active() -> Precision:
    """The settings of the command now running (all None outside a command)."""
    return _ACTIVE.get() or _NONE_SET


@contextmanager
def use_precision(settings: Precision) -> Iterator[Precision]:
    """Make `settings` active inside the `with` (restored on exit)."""
    token = _ACTIVE.set(settings)
    try:
        yield settings
    finally:
        _ACTIVE.reset(token)


def load_dtype(default: torch.dtype | None) -> torch.dtype | None:
    """The dtype a loader should give the weights: the active `--dtype`, else `default` (None: the folder's)."""
    name = active().dtype
    return DTYPES[name] if name is not None else default


def apply_to_config(config: Any) -> Any:
    """`config` (a TrainConfig) with the active mixed precision / checkpointing / attention in place of its own."""
    p = active()
    update = {k: v for k in ("mixed_precision", "gradient_checkpointing", "attn_implementation")
              if (v := getattr(p, k)) is not None and getattr(config, k) != v}
    return config.model_copy(update=update) if update else config


def cache_fields() -> dict[str, str]:
    """Active settings that change a stage's result (for its cache key); empty when none is set."""
    p = active()
    return {k: v for k in ("dtype", "mixed_precision", "attn_implementation") if (v := getattr(p, k)) is not None}


def prepare_model(model: torch.nn.Module, gradient_checkpointing: bool,
                  attn_implementation: str | None) -> Callable[[], None]:
    """Switch on activation checkpointing and the attention kernel for training; returns the undo.

    Checkpointing is PyTorch's non-reentrant kind: it keeps the RNG state (dropout) and works with frozen inputs,
    and langmoe's routers replay the routing of the first forward when a layer is recomputed in backward."""
    undo: list[Callable[[], None]] = []
    if attn_implementation is not None:
        config = getattr(model, "config", None)
        before = getattr(config, "_attn_implementation", None)
        if before != attn_implementation:
            if not hasattr(model, "set_attn_implementation"):
                raise LangmoeError(f"{type(model).__name__} cannot switch its attention kernel: drop "
                                   "--attn-implementation")
            model.set_attn_implementation(attn_implementation)
            if before is not None:
                undo.append(lambda: model.set_attn_implementation(before))
    if gradient_checkpointing:
        undo.append(_enable_checkpointing(model))

    def restore() -> None:
        for f in reversed(undo):
            f()

    return restore


def _enable_checkpointing(model: torch.nn.Module) -> Callable[[], None]:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise LangmoeError(f"{type(model).__name__} does not support gradient checkpointing: drop "
                           "--gradient-checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
        if getattr(model, "is_activation_checkpointing", False):
            return lambda: None
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        return model.activation_checkpointing_disable
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model.gradient_checkpointing_disable
