"""Upcycling: turn chosen dense FFNs of a Hugging Face decoder into MoE blocks whose experts are exact copies.

Right after `upcycle` the model computes the same function as before (with renormalised top-k or hard routing):
every expert equals the dense FFN and the combine weights sum to 1. The MoE structure is recorded in
`model.config.langmoe` (a plain dict, schema `moe_format.MoEStructure`) and `apply_moe_structure` rebuilds it on
a fresh dense model, which is how `load_moe_pretrained` works. Both make the model an instance of its native class
(`moe_format.make_native`: saves in the `langmoe_moe` format) and attach the router recorder that
`moe.router_outputs` reads. The surgery layer: it builds on the saved format's schema (`moe_format`) and is what
the loader (`moe_io`) calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.adapters import get_adapter
from langmoe.models.moe import MoEBlock, RouteOverride, build_moe_block, moe_blocks
from langmoe.models.moe_format import MoELayerSpec, MoEStructure, make_native, moe_structure
from langmoe.models.overrides.kinds import build_override
from langmoe.models.router_recorder import attach_router_recorder

__all__ = [
    "upcycle",
    "apply_moe_structure",
    "add_expert",
    "set_route_override",
    "record_structure",
    "parameter_counts",
    "is_moe_model",
    "ffn_input_centroids",
]


def _per_layer(value, layers: list[int], what: str) -> dict[int, Any]:
    if isinstance(value, Mapping):
        missing = [i for i in layers if i not in value]
        if missing:
            raise LangmoeError(f"{what} given per layer but missing layers {missing}")
        extra = sorted(int(i) for i in value if int(i) not in layers)
        if extra:
            raise LangmoeError(f"{what} given for layers {extra} that are not upcycled (MoE layers: {layers}): "
                               "drop those entries or add the layers")
        return {i: value[i] for i in layers}
    return dict.fromkeys(layers, value)


def _resolve_layers(layers, n_layers: int) -> list[int]:
    if isinstance(layers, str):
        if layers != "all":
            raise LangmoeError(f"layers must be a list of indices or 'all', got {layers!r}")
        return list(range(n_layers))
    out = [int(i) for i in layers]
    if not out:
        raise LangmoeError("no layers to upcycle: give at least one layer index")
    bad = [i for i in out if not 0 <= i < n_layers]
    if bad:
        raise LangmoeError(f"layer indices {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    if len(set(out)) != len(out):
        raise LangmoeError(f"duplicate layer indices in {out}")
    return sorted(out)


def is_moe_model(model: nn.Module) -> bool:
    return bool(getattr(model.config, "langmoe", None)) or bool(moe_blocks(model))


def _build_block(model, layer_idx: int, spec: MoELayerSpec, dispatch: str, copy_weights: bool = True) -> MoEBlock:
    adapter = get_adapter(model)
    layer = adapter.layers(model)[layer_idx]
    mlp = adapter.get_mlp(layer)
    if isinstance(mlp, MoEBlock):
        raise LangmoeError(f"layer {layer_idx} is already an MoE layer")
    ffn = adapter.extract(mlp)
    ref = ffn.w_out
    block = build_moe_block(
        ffn.hidden_size,
        ffn.intermediate_size,
        spec.num_experts,
        spec.top_k,
        gated=ffn.gated,
        act=ffn.act,
        bias_in=(ffn.b_gate if ffn.gated else ffn.b_in) is not None,
        bias_out=ffn.b_out is not None,
        renormalize=spec.renormalize,
        frozen_expert0=spec.frozen_expert0,
        # built here, before the router: the order in which their weights draw from torch's random state
        override=build_override(spec.route_override, ffn.hidden_size, spec.num_experts) if spec.route_override
        else None,
        dropout=adapter.dropout(model.config),
        residual_in_mlp=adapter.residual_in_mlp,
        layer_idx=layer_idx,
        dispatch=dispatch,
    ).to(device=ref.device, dtype=ref.dtype)
    if copy_weights:
        block.load_ffn(ffn)
    block.train(mlp.training)
    adapter.set_mlp(layer, block)
    return block


def _finish(model: nn.Module, structure: MoEStructure) -> nn.Module:
    """Record the structure, make the model native (saves as `langmoe_moe`) and attach the router recorder."""
    model.config.langmoe = structure.to_config()
    make_native(model)
    attach_router_recorder(model)
    return model


def apply_moe_structure(model: nn.Module, structure: MoEStructure | Mapping, dispatch: str = "auto") -> nn.Module:
    """Rebuild the recorded MoE layers on a dense model (weights are copies of the FFN until a state dict loads)."""
    if not isinstance(structure, MoEStructure):
        structure = MoEStructure.parse(structure)
    n_layers = len(get_adapter(model).layers(model))
    bad = sorted(i for i in structure.layers if not 0 <= i < n_layers)
    if bad:
        raise LangmoeError(f"MoE structure names layers {bad} but the model has {n_layers} layers (0..{n_layers - 1})")
    for i, spec in sorted(structure.layers.items()):
        _build_block(model, i, spec, dispatch)
    return _finish(model, MoEStructure(layers=structure.layers))


def upcycle(
    model: nn.Module,
    layers: Iterable[int] | str,
    num_experts: int | Mapping[int, int],
    top_k: int | Mapping[int, int] = 2,
    *,
    router_init: str | torch.Tensor | Mapping[int, torch.Tensor] = "normal",
    renormalize: bool = True,
    frozen_expert0: bool = False,
    classifier_layers: Iterable[int] = (),
    classifier_mode: str = "token",
    dispatch: str = "auto",
    seed: int = 0,
) -> nn.Module:
    """Replace the chosen layers' MLP in place with MoE blocks whose experts are exact copies of it.

    num_experts / top_k: one value or `{layer: value}`. router_init: "normal" (N(0, 0.02), seeded) or centroids
    (`[E, D]` tensor for every layer, or `{layer: [E, D]}`): rows = normalised mean FFN input of each group.
    classifier_layers: layers that get the old/new classifier as route override (class 0 = old -> expert 0).
    """
    adapter = get_adapter(model)
    n_layers = len(adapter.layers(model))
    layer_ids = _resolve_layers(layers, n_layers)
    experts = _per_layer(num_experts, layer_ids, "num_experts")
    ks = _per_layer(top_k, layer_ids, "top_k")
    cls_layers = {int(i) for i in classifier_layers}
    if not cls_layers <= set(layer_ids):
        raise LangmoeError(f"classifier_layers {sorted(cls_layers - set(layer_ids))} are not among the MoE layers")
    if cls_layers and not frozen_expert0:
        raise LangmoeError("an old/new classifier routes 'old' tokens to expert 0: use it with frozen_expert0=True")
    existing = moe_structure(model)
    specs = dict(existing.layers) if existing else {}
    try:
        new_specs = {
            i: MoELayerSpec(
                num_experts=int(experts[i]), top_k=int(ks[i]), renormalize=renormalize,
                frozen_expert0=frozen_expert0,
                route_override={"kind": "classifier", "mode": classifier_mode} if i in cls_layers else None,
            )
            for i in layer_ids
        }
    except ValidationError as e:
        first = e.errors()[0]
        raise LangmoeError(f"invalid upcycle settings: {first['loc']}: {first['msg']}") from None
    gen = torch.Generator().manual_seed(seed)
    for i in layer_ids:
        block = _build_block(model, i, new_specs[i], dispatch)
        if isinstance(router_init, str):
            if router_init != "normal":
                raise LangmoeError(f"router_init must be 'normal' or a centroid tensor, got {router_init!r}")
            with torch.no_grad():
                w = torch.randn(block.router.weight.shape, generator=gen) * 0.02
                block.router.weight.copy_(w)
                for p in block.override.parameters() if block.override is not None else ():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        else:
            cent = router_init.get(i) if isinstance(router_init, Mapping) else router_init
            if cent is None:
                raise LangmoeError(f"router_init has no centroids for layer {i}")
            block.init_router_centroids(torch.as_tensor(cent))
        specs[i] = new_specs[i]
    return _finish(model, MoEStructure(layers=specs))


def _block_at(model: nn.Module, layer: int) -> MoEBlock:
    for b in moe_blocks(model):
        if b.layer_idx == layer:
            return b
    raise LangmoeError(f"layer {layer} is not an MoE layer; MoE layers: {[b.layer_idx for b in moe_blocks(model)]}")


def add_expert(model: nn.Module, layer: int, source_expert: int) -> int:
    """Copy expert `source_expert` of MoE layer `layer` (weights and router row) into a new last expert; its index.

    The router's route override is told (`RouteOverride.expert_appended`) and may refuse: a language gate owns its
    added experts (`overrides.gate.add_gated_expert`). Create the optimizer afterwards (parameters are replaced).
    """
    block = _block_at(model, layer)
    if block.override is not None:
        try:
            block.override.expert_appended(block.num_experts)
        except LangmoeError as e:
            raise LangmoeError(f"layer {layer}: {e}") from None
    new = block.add_expert(source_expert)
    if moe_structure(model) is not None:
        record_structure(model)
    return new


def set_route_override(model: nn.Module, layer: int, override: RouteOverride | None) -> None:
    """Put `override` (None: remove it) in MoE layer `layer`'s router and record the structure."""
    block = _block_at(model, layer)
    w = block.router.weight
    block.router.override = None if override is None else override.to(w.device, w.dtype)
    record_structure(model)


def record_structure(model: nn.Module) -> MoEStructure:
    """Write `model.config.langmoe` from the MoE blocks as they are now (experts added, overrides changed)."""
    structure = MoEStructure(layers={
        b.layer_idx: MoELayerSpec(num_experts=b.num_experts, top_k=b.top_k, renormalize=b.renormalize,
                                  frozen_expert0=b.frozen_expert0,
                                  route_override=b.override.spec() if b.override is not None else None)
        for b in moe_blocks(model)})
    model.config.langmoe = structure.to_config()
    return structure


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameter accounting: total (incl. frozen expert-0 buffers), active per token (top-k experts), parts."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    blocks = moe_blocks(model)
    frozen = sum(b.base_experts.frozen_numel for b in blocks if b.frozen_expert0)
    expert_total = router = override = inactive = 0
    for b in blocks:
        per_expert = b.params_per_expert
        expert_total += per_expert * b.num_experts
        router += b.router.weight.numel()
        override += sum(p.numel() for p in b.override.parameters()) if b.override is not None else 0
        inactive += per_expert * (b.num_experts - b.top_k)
    total = params + frozen
    return {
        "total": total,
        "active_per_token": total - inactive,
        "experts": expert_total,
        "router": router,
        "route_override": override,
        "frozen_expert0": frozen,
        "trainable": trainable,
        "moe_layers": len(blocks),
    }


@torch.no_grad()
def ffn_input_centroids(
    model: nn.Module, layers: Iterable[int], group_inputs: list[list[torch.Tensor] | torch.Tensor]
) -> dict[int, torch.Tensor]:
    """Mean FFN input of each group's calibration text, per layer: `{layer: [groups, D]}` for `router_init`.

    group_inputs[g] holds input_ids (one `[B, T]` tensor or a list of them) of group g. Runs the model as it is
    (dense or already MoE) with forward pre-hooks on the chosen layers' MLPs.
    """
    adapter = get_adapter(model)
    all_layers = adapter.layers(model)
    layer_ids = _resolve_layers(layers, len(all_layers))
    if not group_inputs:
        raise LangmoeError("no calibration text: give input_ids for at least one group")
    sums: dict[int, torch.Tensor] = {}
    count = [0]

    def hook_for(i):
        def hook(module, args):
            h = args[0].reshape(-1, args[0].shape[-1]).float()
            sums[i] = sums.get(i, 0) + h.sum(0)
            if i == layer_ids[0]:
                count[0] += h.shape[0]

        return hook

    handles = [adapter.get_mlp(all_layers[i]).register_forward_pre_hook(hook_for(i)) for i in layer_ids]
    out: dict[int, list[torch.Tensor]] = {i: [] for i in layer_ids}
    was = model.training
    model.eval()
    try:
        for g, batches in enumerate(group_inputs):
            sums.clear()
            count[0] = 0
            for ids in [batches] if isinstance(batches, torch.Tensor) else batches:
                model(input_ids=ids)
            if not count[0]:
                raise LangmoeError(f"group {g} has no calibration tokens")
            for i in layer_ids:
                out[i].append(sums[i] / count[0])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {i: torch.stack(v) for i, v in out.items()}
