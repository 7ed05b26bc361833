"""What an expansion does to the model: new experts on top of the frozen FFN (expert 0) or of the experts a
previous expansion added, xavier-normal routers for the new rows, the LayerMoE classifiers, and which parameters
are experts, routers or classifiers (the stages' trainable sets)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from transformers import AutoModelForCausalLM

from langmoe.errors import LangmoeError
from langmoe.models.moe import moe_blocks
from langmoe.models.moe_format import moe_structure
from langmoe.models.moe_io import tied_keys
from langmoe.models.routers import router_weight
from langmoe.models.upcycle import add_expert, apply_moe_structure, is_moe_model, parameter_counts, upcycle

__all__ = ["new_token_rows", "expand_model", "xavier_router_init", "set_classifiers", "block_parts", "trainable_selector",
           "experts_per_layer", "params_of"]

Selector = Callable[[str, torch.nn.Parameter], bool]


def new_token_rows(new_blocks, old_blocks, vocab_size: int) -> torch.Tensor:
    """Bool `[vocab_size]`: the tokens that occur in `new_blocks` (padding left out) and nowhere in `old_blocks`
    (`--train-new-embeddings`: the only embedding rows stage 1 may move)."""

    def seen(blocks) -> torch.Tensor:
        out = torch.zeros(vocab_size, dtype=torch.bool)
        if blocks is not None and len(blocks):
            b = blocks.batch(range(len(blocks)))
            out[b["input_ids"][b["labels"] != -100].unique()] = True
        return out

    return seen(new_blocks) & ~seen(old_blocks)


def experts_per_layer(model) -> dict[int, int]:
    return {b.layer_idx: b.num_experts for b in moe_blocks(model)}


@torch.no_grad()
def xavier_router_init(model, seed: int, rows: Mapping[int, int] | None = None) -> None:
    """Xavier-normal router weights (MoE-LPR, docs/methods.md §2): std = sqrt(2 / (D + E)).

    rows: `{layer: first row}` re-initialises only rows >= first (experts added on top in a lifelong expansion);
    default: all rows of every MoE layer.
    """
    gen = torch.Generator().manual_seed(seed)
    for b in moe_blocks(model):
        w = router_weight(b)
        first = 0 if rows is None else rows.get(b.layer_idx, w.shape[0])
        if first >= w.shape[0]:
            continue
        std = math.sqrt(2.0 / (w.shape[0] + w.shape[1]))
        fresh = torch.randn(w.shape, generator=gen) * std
        w[first:] = fresh[first:].to(w)


def expand_model(model, new_experts: Mapping[int, int], top_k: int, seed: int) -> dict[int, int]:
    """Add `new_experts[l]` copies of the frozen FFN to layer l: upcycle dense layers (FFN = frozen expert 0),
    append experts on top of existing MoE layers (`add_expert`). Routers: xavier-normal for every new row.
    Returns the experts each layer had before (0 = was dense)."""
    before = experts_per_layer(model)
    dense = {int(i): int(n) + 1 for i, n in new_experts.items() if n > 0 and i not in before}
    if dense:
        upcycle(model, sorted(dense), dense, {i: min(top_k, n) for i, n in dense.items()}, frozen_expert0=True,
                seed=seed)
    for i, n in sorted(new_experts.items()):
        if i in before:
            for _ in range(int(n)):
                add_expert(model, int(i), 0)
    xavier_router_init(model, seed, rows={**dict.fromkeys(dense, 0), **before})
    return before


def set_classifiers(model, layers: Sequence[int], mode: str = "token", seed: int = 0):
    """Return the model with old/new classifiers (route overrides) exactly in `layers`, all other MoE weights
    carried over.

    LayerMoE adds its classifiers at stage 2, so the model is rebuilt from its config with the new structure
    (`apply_moe_structure`) and the state dict reloaded; the new classifier weights get xavier-normal (seeded: the
    rebuild draws them from torch's random state after `manual_seed(seed)`), removed ones are dropped.
    """
    struct = moe_structure(model)
    if struct is None:
        raise LangmoeError("set_classifiers needs an MoE model")
    layers = sorted({int(x) for x in layers})
    bad = [x for x in layers if x not in struct.layers]
    if bad:
        raise LangmoeError(f"classifier layers {bad} are not MoE layers {sorted(struct.layers)}")
    wanted = {i: {"kind": "classifier", "mode": mode} if i in layers else None for i in struct.layers}
    if all(struct.layers[i].route_override == wanted[i] for i in struct.layers):
        return model
    struct = struct.model_copy(deep=True)
    for i, spec in struct.layers.items():
        spec.route_override = wanted[i]
    config = copy.deepcopy(model.config)
    config.langmoe = None
    torch.manual_seed(seed)
    fresh = AutoModelForCausalLM.from_config(config).to(next(model.parameters()).dtype)
    apply_moe_structure(fresh, struct)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    tied = tied_keys(fresh)
    missing = [k for k in missing if k not in tied]
    if any("router.override." not in k for k in list(missing) + list(unexpected)):
        raise RuntimeError(f"set_classifiers: unexpected state-dict mismatch {missing[:3]} {unexpected[:3]}")
    if tied:
        fresh.tie_weights()
    for k, v in vars(model.config).items():  # keep extra attributes (expansion lineage)
        if k not in ("langmoe",) and not hasattr(fresh.config, k):
            setattr(fresh.config, k, copy.deepcopy(v))
    fresh.to(next(model.parameters()).device)
    fresh.train(model.training)
    return fresh


def block_parts(block) -> dict[str, list[torch.nn.Parameter]]:
    """Parameters of one MoE block by role: router, classifier (its route override), experts (the rest)."""
    cls = list(block.override.parameters()) if block.override is not None else []
    router = [p for p in block.router.parameters() if all(p is not c for c in cls)]  # the router holds the override
    taken = {id(p) for p in router + cls}
    experts = [p for p in block.parameters() if id(p) not in taken]
    return {"router": router, "classifier": cls, "experts": experts}


def trainable_selector(model, trainable: str | set[int] | Selector, parts: Sequence[str]) -> Selector:
    """The trainer's `trainable` selector: "moe" (the MoE `parts` of every block), "all", parameter ids, or a
    selector as it is."""
    if trainable == "all":
        return lambda _n, _p: True
    if trainable == "moe":
        trainable = {id(p) for b in moe_blocks(model) for part in parts for p in block_parts(b)[part]}
    if isinstance(trainable, set):
        ids = trainable
        return lambda _name, p: id(p) in ids
    if callable(trainable):
        return trainable
    raise LangmoeError(f"unknown trainable selector {trainable!r}")


def params_of(model) -> dict[str, int]:
    if is_moe_model(model):
        return parameter_counts(model)
    n = sum(p.numel() for p in model.parameters())
    return {"total": n, "active_per_token": n}
