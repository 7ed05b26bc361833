"""DMoE step D: build the DMoE model from the dense base (docs/methods.md §1 D), and add a new language's expert (G).

In each selected layer the FFN becomes K exact copies (one expert per language group) behind a bias-free router
initialised N(0, 0.02) (seeded); other layers stay dense. Right after building, the model computes the same
function as the base (renormalised top-k of identical experts, or hard routing). MoE folders are saved and loaded
by `langmoe.models.moe_io` (see `langmoe.pipeline.models.save_moe / load_moe`).
"""

from __future__ import annotations

from collections.abc import Sequence

from langmoe.errors import LangmoeError
from langmoe.models.moe import is_expert_param, moe_blocks
from langmoe.models.overrides.gate import add_gated_expert
from langmoe.models.upcycle import add_expert, record_structure, upcycle

__all__ = ["build_dmoe", "add_language_expert", "is_expert_param", "is_router_param"]


def build_dmoe(model, layers: Sequence[int], num_groups: int, top_k: int = 2, seed: int = 0):
    """Upcycle `layers` of the dense `model` (in place) into `num_groups` experts each, learned top-k routing."""
    layers = sorted({int(x) for x in layers})
    if not layers:
        raise LangmoeError("no MoE layers selected: lower epsilon or give moe_layers")
    if not 1 <= top_k <= num_groups:
        raise LangmoeError(f"top_k must be between 1 and num_groups={num_groups}, got {top_k}")
    return upcycle(model, layers, num_groups, top_k, router_init="normal", seed=seed)


def add_language_expert(model, source_expert: int, gate_mode: str | None = None) -> int:
    """Copy `source_expert` (weights + router row) into a new last expert in every MoE layer; its index.
    `gate_mode`: reach it through a `LanguageGate` ("prefix" | "token") instead of the router row."""
    if gate_mode is None:
        new = {add_expert(model, b.layer_idx, source_expert) for b in moe_blocks(model)}
    else:
        new = {add_gated_expert(b, source_expert, gate_mode) for b in moe_blocks(model)}
        record_structure(model)
    if len(new) != 1:
        raise LangmoeError(f"MoE layers have different numbers of experts ({sorted(new)}): cannot add one index")
    return new.pop()


def is_router_param(name: str) -> bool:
    return name.endswith("router.weight")
