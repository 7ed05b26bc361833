"""Where a model keeps its routers: one `RouterLayer` per MoE layer, for langmoe's own blocks and for stock
transformers MoE models, and the two things every method does with them (read a router's weight, freeze expert
rows). The one router discovery of langmoe: the recorder, the routing kit and the routing method all use it.

`iter_router_layers(model)` finds langmoe's `MoEBlock`s, or the router class a transformers MoE model declares
for `output_router_logits` (`_can_record_outputs["router_logits"]`), so hooks on those modules see exactly the
logits and the top-k the model itself uses. Router families (how each picks its top-k) are named in `FAMILIES`;
`langmoe.methods.routing.routers` holds their routing math.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.moe import MoEBlock

__all__ = ["RouterLayer", "FAMILIES", "iter_router_layers", "require_moe", "find_routers", "router_weight",
           "freeze_expert_rows", "freeze_rows"]

FAMILIES: dict[str, str] = {
    "olmoe": "softmax_topk",
    "qwen2_moe": "softmax_topk",
    "qwen3_moe": "softmax_topk",
    "mixtral": "softmax_topk",
    "granitemoe": "topk_softmax",
    "gpt_oss": "topk_softmax",
    "deepseek_v3": "sigmoid_group",
    "phimoe": "sparsemixer",
}
_EXPERT_ATTRS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


@dataclass
class RouterLayer:
    """One MoE layer: its router, its experts (fused parameters, expert axis 0) and how it routes."""

    layer: int  # decoder-layer index
    name: str  # qualified name of the router module
    router: nn.Module
    block: nn.Module  # the MoE block holding router and experts
    num_experts: int
    top_k: int
    family: str
    expert_params: dict[str, nn.Parameter] = field(default_factory=dict)  # qualified name -> [E', ...]
    expert_offset: int = 0  # expert e lives at row e - offset (langmoe frozen expert 0: offset 1, e=0 a buffer)
    router_params: dict[str, nn.Parameter] = field(default_factory=dict)  # qualified name -> [E, ...] (rows)


def _router_class(model: nn.Module):
    rec = getattr(model, "_can_record_outputs", None) or {}
    spec = rec.get("router_logits") if isinstance(rec, Mapping) else None
    if spec is None:
        return None
    target = getattr(spec, "target_class", spec)
    return target if isinstance(target, type) else None


def _langmoe_expert_params(block, prefix: str) -> dict[str, nn.Parameter]:
    """The fused trainable expert tensors of a langmoe block (expert axis first), by qualified name. With a frozen
    expert 0 they hold experts 1..E-1 (expert 0 is a buffer), hence `expert_offset` 1."""
    if block.frozen_expert0:
        sub, part = block.base_experts.trainable, f"{prefix}.experts.trainable"
    else:
        sub, part = block.experts, f"{prefix}.experts"
    return {f"{part}.{n}": p for n, p in sub.named_parameters() if "." not in n}


def iter_router_layers(model: nn.Module) -> list[RouterLayer]:
    """Every MoE layer of `model` in layer order (empty for a dense model)."""
    names = {id(m): n for n, m in model.named_modules()}
    out: list[RouterLayer] = []
    blocks = sorted((m for m in model.modules() if isinstance(m, MoEBlock)), key=lambda m: m.layer_idx)
    for b in blocks:
        prefix = names[id(b)]
        params = _langmoe_expert_params(b, prefix)
        out.append(RouterLayer(b.layer_idx, f"{prefix}.router", b.router, b, b.num_experts, b.top_k, "langmoe",
                               params, 1 if b.frozen_expert0 else 0, {f"{prefix}.router.weight": b.router.weight}))
    if out:
        return out
    cls = _router_class(model)
    if cls is None:
        return []
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    family = FAMILIES.get(model_type, "generic")
    parents = {}
    for pname, parent in model.named_modules():
        for cname, child in parent.named_children():
            parents[id(child)] = (pname, parent, cname)
    for name, mod in model.named_modules():
        if not isinstance(mod, cls):
            continue
        m = _LAYER_RE.search("." + name + ".")
        if m is None:
            raise LangmoeError(f"cannot tell the decoder layer of router {name}: unsupported MoE layout")
        pname, parent, _ = parents[id(mod)]
        weight = getattr(mod, "weight", None)
        E = int(getattr(mod, "num_experts", 0) or (weight.shape[0] if weight is not None else 0))
        k = int(getattr(mod, "top_k", 0) or 0)
        if family == "sparsemixer":
            k = 2
        if E < 1 or k < 1:
            raise LangmoeError(f"router {name} does not say its number of experts / top-k: unsupported MoE layout")
        experts = getattr(parent, "experts", None)
        params = {}
        if experts is not None:
            eprefix = names[id(experts)]
            params = {f"{eprefix}.{n}": p for n, p in experts.named_parameters(recurse=False)
                      if p.ndim >= 2 and p.shape[0] == E}
        rparams = {f"{name}.{n}": p for n, p in mod.named_parameters(recurse=False) if p.shape[0] == E}
        out.append(RouterLayer(int(m.group(1)), name, mod, parent, E, k, family, params, 0, rparams))
    out.sort(key=lambda r: r.layer)
    return out


def require_moe(model: nn.Module, what: str = "this command") -> list[RouterLayer]:
    """The MoE layers, or a one-line refusal for a dense / unsupported model."""
    layers = iter_router_layers(model)
    if not layers:
        cfg = getattr(model, "config", None)
        mt = getattr(cfg, "model_type", type(model).__name__)
        n_exp = max((int(getattr(cfg, a, 0) or 0) for a in _EXPERT_ATTRS), default=0)
        if n_exp > 1:
            raise LangmoeError(
                f"model type {mt!r} has {n_exp} experts but its routers cannot be found: unsupported MoE layout "
                f"(supported: langmoe MoE blocks, {', '.join(sorted(FAMILIES))} and other transformers MoE models "
                "that record router_logits)"
            )
        raise LangmoeError(
            f"the model ({mt}) has no MoE router: {what} needs an MoE model (a transformers MoE such as olmoe/"
            "qwen3_moe/mixtral, or one made by `langmoe upcycle`)"
        )
    return layers


def find_routers(model: nn.Module) -> dict[int, nn.Module]:
    """`{layer: router module}` of every MoE layer (langmoe or stock), in layer order."""
    return {r.layer: r.router for r in iter_router_layers(model)}


def router_weight(layer: RouterLayer | MoEBlock) -> nn.Parameter:
    """The `[E, D]` router weight of one MoE layer (a langmoe block's `router.weight`; a stock router's `[E, D]`
    parameter)."""
    if isinstance(layer, MoEBlock):
        return layer.router.weight
    weights = [p for p in layer.router_params.values() if p.dim() == 2]
    if len(weights) != 1:
        raise LangmoeError(f"cannot tell the router weight of MoE layer {layer.layer} ({layer.name}): "
                           "unsupported MoE layout")
    return weights[0]


def freeze_expert_rows(model: nn.Module, frozen: Mapping[int, int] | int, router_rows: bool = False) -> list:
    """Zero the gradient of experts `0 .. n-1` of each MoE layer (`frozen`: `{layer: n}`, or one n for every layer)
    in its fused expert tensors, and with `router_rows` in its router weight. With zero gradients and weight decay
    0 for those tensors AdamW leaves the rows bit-identical. Returns the hook handles (`.remove()` each)."""
    handles = []
    for r in iter_router_layers(model):
        n = int(frozen.get(r.layer, 0) if isinstance(frozen, Mapping) else frozen)
        if n <= 0:
            continue
        rows = [(p, n - r.expert_offset) for p in r.expert_params.values()]
        if router_rows:
            rows.append((router_weight(r), n))
        for p, k in rows:
            if k > 0 and p.dim() > 0:
                handles.append(freeze_rows(p, torch.arange(p.shape[0]) < k))
    return handles


def freeze_rows(p: torch.Tensor, frozen: torch.Tensor):
    """A gradient hook on `p` that zeroes the rows (first axis) where the bool mask `frozen` is True; its handle."""
    keep = (~frozen).to(p.device).view(-1, *([1] * (p.dim() - 1)))
    return p.register_hook(lambda g: torch.where(keep, g, torch.zeros_like(g)))
