"""How each router family picks its top-k, and masking the routing of any MoE model to allowed experts.

The routers themselves are found by `langmoe.models.routers.iter_router_layers` (one `RouterLayer` per MoE
layer: decoder-layer index, router module, the fused expert parameters with the expert axis first, E, top-k,
family), re-exported here for this package.

Router families (transformers 5.24; each router returns `(logits [T, E], weights [T, k], indices [T, k])`):

- `softmax_topk` (olmoe, qwen2_moe, qwen3_moe, mixtral): softmax over all logits, top-k, optional renormalise;
- `topk_softmax` (granitemoe, gpt_oss with its router bias): top-k logits, softmax over those k;
- `sigmoid_group` (deepseek_v3): sigmoid scores + correction bias, group-limited top-k, renormalise, scale;
- `sparsemixer` (phimoe): the model's own `sparsemixer` (always 2 experts);
- `langmoe`: `langmoe.models.moe.MoEBlock` (masking goes through `langmoe.models.routing.routing`).

`route(layer, logits, allowed)` recomputes a family's (weights, indices) from logits masked to the allowed
experts; with every expert allowed it reproduces the router's own output (tested against transformers' modules).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.routers import FAMILIES, RouterLayer, iter_router_layers, require_moe
from langmoe.models.routing import routing

__all__ = ["RouterLayer", "FAMILIES", "iter_router_layers", "require_moe", "route", "route_scores", "mask_routing",
           "reinit_routers"]

# ------------------------------------------------------------------------------------------------- routing math


def _phimoe_sparsemixer(router: nn.Module):
    import sys

    mod = sys.modules[type(router).__module__]
    return mod.sparsemixer


def route_scores(layer: RouterLayer, logits: torch.Tensor) -> torch.Tensor:
    """Soft routing probabilities [T, E] of a layer (what the router's weights are derived from)."""
    logits = logits.float()
    if layer.family == "sigmoid_group":
        s = logits.sigmoid()
        return s / s.sum(-1, keepdim=True).clamp_min(1e-20)
    return torch.softmax(logits, dim=-1)


def route(layer: RouterLayer, logits: torch.Tensor, allowed: torch.Tensor | None = None,
          hidden_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights [T, k'], indices [T, k']) as the layer's router computes them, restricted to `allowed` (bool [E]).

    k' = min(top_k, allowed experts): a masked expert is never picked (phimoe's sparsemixer needs 2 allowed).
    """
    r, fam = layer.router, layer.family
    E = logits.shape[-1]
    mask = None
    k = layer.top_k
    if allowed is not None:
        mask = allowed.to(logits.device)
        k = min(k, int(mask.sum()))
    if fam == "softmax_topk":
        masked = logits if mask is None else logits.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(masked, dtype=torch.float, dim=-1)
        w, idx = torch.topk(probs, k, dim=-1)
        renorm = getattr(r, "norm_topk_prob", None)
        if renorm is None:  # mixtral always renormalises
            renorm = True
        if renorm:
            w = w / w.sum(dim=-1, keepdim=True)
        return w.to(logits.dtype), idx
    if fam == "topk_softmax":
        lg = logits.float() if type(r).__name__.startswith("GraniteMoe") else logits
        masked = lg if mask is None else lg.masked_fill(~mask, float("-inf"))
        top, idx = masked.topk(k, dim=-1)
        if type(r).__name__.startswith("GraniteMoe"):
            w = torch.softmax(top, dim=-1).type(hidden_dtype or logits.dtype)
        else:
            w = torch.softmax(top, dim=1, dtype=top.dtype)
        return w, idx
    if fam == "sigmoid_group":
        scores = logits.float().sigmoid()
        choice = scores + r.e_score_correction_bias
        if mask is not None:
            choice = choice.masked_fill(~mask, float("-inf"))
        G = r.num_group
        grouped = choice.view(-1, G, E // G)
        top2 = grouped.topk(min(2, E // G), dim=-1)[0]
        if mask is None:
            group_scores = top2.sum(dim=-1)
        else:  # a group with one allowed expert scores by that one; a group with none is never chosen
            finite = torch.isfinite(top2)
            group_scores = torch.where(finite, top2, torch.zeros_like(top2)).sum(-1)
            group_scores = group_scores.masked_fill(~finite.any(-1), float("-inf"))
        n_groups = r.topk_group
        if mask is not None:
            n_groups = max(n_groups, _groups_needed(mask, G, k))
        group_idx = torch.topk(group_scores, k=min(n_groups, G), dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E)
        choice = choice.masked_fill(~score_mask.bool(), float("-inf"))
        idx = torch.topk(choice, k=k, dim=-1, sorted=False)[1]
        w = scores.gather(1, idx)
        if r.norm_topk_prob:
            w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
        return w * r.routed_scaling_factor, idx
    if fam == "sparsemixer":
        if mask is not None and int(mask.sum()) < 2:
            raise LangmoeError(f"layer {layer.layer}: phimoe routes every token to 2 experts; allow at least 2")
        masked = logits if mask is None else logits.masked_fill(~mask, float("-inf"))
        w, idx = _phimoe_sparsemixer(r)(masked, jitter_eps=r.router_jitter_noise, training=r.training, top_k=2)
        return w, idx
    raise LangmoeError(f"router family {fam!r} (model type of {layer.name}) cannot be masked: unsupported MoE type")


def _groups_needed(mask: torch.Tensor, groups: int, k: int) -> int:
    """Fewest groups whose allowed experts add up to k (so the group limit never starves the top-k)."""
    per_group = sorted(mask.view(groups, -1).sum(-1).tolist(), reverse=True)
    total = 0
    for i, n in enumerate(per_group, 1):
        total += n
        if total >= k:
            return i
    return groups


# --------------------------------------------------------------------------------------------------- masking


def _masks(layers: Sequence[RouterLayer], allowed: Mapping[int, Sequence[int]]) -> dict[int, torch.Tensor]:
    by_layer = {r.layer: r for r in layers}
    out = {}
    for li, ids in allowed.items():
        if li not in by_layer:
            raise LangmoeError(f"layer {li} is not an MoE layer (MoE layers: {sorted(by_layer)})")
        E = by_layer[li].num_experts
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < E]
        if bad or not ids:
            raise LangmoeError(f"layer {li}: allowed experts {ids} must be a non-empty subset of [0, {E})")
        m = torch.zeros(E, dtype=torch.bool)
        m[ids] = True
        out[li] = m
    return out


@contextmanager
def mask_routing(model: nn.Module, allowed: Mapping[int, Sequence[int]]) -> Iterator[None]:
    """Inside the `with`, the routers of the named layers may pick only `allowed[layer]` (others' logits = -inf).

    Stock routers get a forward hook that recomputes weights and indices from the masked logits (and returns the
    masked logits, so an auxiliary loss sees the same distribution); langmoe blocks use `models.routing.routing`.
    """
    layers = iter_router_layers(model)
    masks = _masks(layers, allowed)
    if not masks:
        yield
        return
    with ExitStack() as stack:
        if layers[0].family == "langmoe":
            stack.enter_context(routing(model, allowed_experts=masks))
        else:
            for r in layers:
                if r.layer in masks:
                    stack.callback(r.router.register_forward_hook(_mask_hook(r, masks[r.layer])).remove)
        yield


def _mask_hook(layer: RouterLayer, mask: torch.Tensor):
    def hook(module, args, output):
        logits = output[0]
        hidden = args[0] if args else None
        w, idx = route(layer, logits, mask, hidden_dtype=None if hidden is None else hidden.dtype)
        return (logits.masked_fill(~mask.to(logits.device), float("-inf")), w, idx)

    return hook


@torch.no_grad()
def reinit_routers(model: nn.Module, seed: int = 0, std: float | None = None) -> list[str]:
    """Re-initialise every MoE router of `model` in place (weights N(0, std), std = the config's
    `initializer_range` or 0.02; router biases 0), leaving every other parameter as it is: the random-router
    control on the same backbone. Returns the names of the parameters re-drawn."""
    layers = require_moe(model, "a random-router control")
    std = float(std if std is not None else getattr(getattr(model, "config", None), "initializer_range", 0.02))
    gen = torch.Generator().manual_seed(seed)
    done = []
    for r in layers:
        for name, p in r.router_params.items():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std).to(p.dtype))
            else:
                p.zero_()
            done.append(name)
    if not done:
        raise LangmoeError("no router parameters found to re-initialise: unsupported MoE layout")
    return done
