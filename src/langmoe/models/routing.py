"""Routing per call, and a forward over held-out blocks that hands each batch's router outputs to the caller.

`with routing(model, route_labels=..., allowed_experts=...)` sets a state on every langmoe router for the forwards
inside the `with`, without touching the Hugging Face forward signature: an allowed-experts mask for the learned
top-k and/or hard routing by labels (the `LabelRouting` override, per call).

`iter_routing(model, blocks)` is what every method does to measure routing: eval-mode, no-grad forwards over
packed blocks, yielding each batch, its real-token mask and the routers' outputs (langmoe or stock models).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.moe import RoutingState, TopKRouter, moe_blocks
from langmoe.models.overrides.labels import LabelRouting
from langmoe.models.router_recorder import RouterOutput, RouterRecorder

__all__ = ["routing", "iter_routing", "MODES"]

MODES = ("learned", "labels")


def _to_mask(spec, num_experts: int, layer: int) -> torch.Tensor:
    if isinstance(spec, torch.Tensor) and spec.dtype == torch.bool:
        if spec.numel() != num_experts:
            raise LangmoeError(f"layer {layer}: allowed-experts mask has {spec.numel()} entries, need {num_experts}")
        mask = spec.reshape(-1).clone()
    else:
        ids = [int(i) for i in (spec.tolist() if isinstance(spec, torch.Tensor) else spec)]
        bad = [i for i in ids if not 0 <= i < num_experts]
        if bad:
            raise LangmoeError(f"layer {layer}: allowed experts {bad} out of range [0, {num_experts})")
        mask = torch.zeros(num_experts, dtype=torch.bool)
        mask[ids] = True
    if not bool(mask.any()):
        raise LangmoeError(f"layer {layer}: allowed_experts allows no expert")
    return mask


def _masks(routers: list[TopKRouter], allowed_experts) -> dict[int, torch.Tensor]:
    """`{layer: bool mask}` from one spec for every layer or `{layer_idx: spec}` (layers not named: unrestricted)."""
    masks: dict[int, torch.Tensor] = {}
    if allowed_experts is None:
        return masks
    per_layer = isinstance(allowed_experts, Mapping)
    if per_layer:
        unknown = sorted(set(allowed_experts) - {r.layer_idx for r in routers})
        if unknown:
            raise LangmoeError(f"allowed_experts names layers {unknown} that are not MoE layers "
                               f"{sorted(r.layer_idx for r in routers)}")
    for r in routers:
        spec = allowed_experts.get(r.layer_idx) if per_layer else allowed_experts
        if spec is not None:
            masks[r.layer_idx] = _to_mask(spec, r.num_experts, r.layer_idx)
    return masks


@contextmanager
def routing(
    model: nn.Module,
    route_labels: torch.Tensor | None = None,
    allowed_experts=None,
    mode: str | None = None,
) -> Iterator[None]:
    """Set the routing of every MoE router for the forwards inside the `with` (restored on exit, nestable).

    route_labels: LongTensor shaped like input_ids, expert per token (hard routing; implies mode='labels').
    allowed_experts: experts the learned router may pick; either one spec for all MoE layers or
        `{layer_idx: spec}` (layers not named are unrestricted). A spec is a list of expert ids or a bool mask [E].
    mode: 'learned' | 'labels' (default: 'labels' when route_labels is given, else 'learned').
    """
    routers = [b.router for b in moe_blocks(model)]
    if mode is None:
        mode = "labels" if route_labels is not None else "learned"
    if mode not in MODES:
        raise LangmoeError(f"routing mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "labels" and route_labels is None:
        raise LangmoeError("routing mode 'labels' needs route_labels")
    masks = _masks(routers, allowed_experts)
    override = LabelRouting(route_labels) if mode == "labels" else None
    previous = [r._state for r in routers]
    state = RoutingState(allowed=masks or None, override=override)
    for r in routers:
        r._state = state
    try:
        yield
    finally:
        for r, s in zip(routers, previous, strict=True):
            r._state = s


@torch.no_grad()
def iter_routing(model: nn.Module, blocks, batch_size: int = 8, indices: Iterable[int] | None = None,
                 group_of: Mapping[str, int] | None = None
                 ) -> Iterator[tuple[dict[str, Any], torch.Tensor, list[RouterOutput]]]:
    """Eval-mode forwards of `blocks[indices]` (default: all), `batch_size` blocks at a time; yields `(batch, valid,
    outputs)`: the batch (`blocks.batch`, with `group_ids` when `group_of` is given), the flat bool mask of its
    real (non-padding) tokens and the router outputs of its forward, one per MoE layer in layer order."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    indices = list(range(len(blocks)) if indices is None else indices)
    extra = {"group_of": dict(group_of)} if group_of is not None else {}
    try:
        with RouterRecorder(model, accumulate=False) as rec:
            for start in range(0, len(indices), batch_size):
                batch = blocks.batch(indices[start:start + batch_size], **extra)
                model(input_ids=batch["input_ids"].to(device), use_cache=False)
                yield batch, (batch["labels"] != -100).reshape(-1), rec.last_outputs()
    finally:
        model.train(was)
