"""`--protect gate`: a guarantee for the old languages beyond the papers' recipe.

After stage 2, every MoE layer's router gets an `ExpansionGate`: the language gate of `add-language` (a
class-balanced logistic regression on the layer's input, fitted on half of each language's training blocks) whose
old class is then calibrated on the other half, so that in *every* expert-0 language at most `max_intrusion` of
the tokens leave class 0. A class-0 token goes to the frozen expert 0 alone: its output in the layer is the input
model's, so an old-language text whose tokens stay in class 0 is scored exactly as before the expansion. One class
per group of new languages (G1, G2, ...): the earlier groups' tokens keep to expert 0 and their own experts (the
official lifelong restriction), the newest group uses every expert.

A lifelong step removes the gates first (stage 1 trains the new experts with plain learned routing), freezes the
router rows of the earlier experts in both stages (so an earlier group's routing among its own experts stays as
it was) and fits new gates with one more class at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langmoe.models.moe import moe_blocks
from langmoe.models.overrides.expansion_gate import ExpansionGate
from langmoe.models.upcycle import record_structure
from langmoe.train.gate_fit import calibrate_gates, fit_gates

__all__ = ["gate_classes", "group_firsts", "strip_gates", "add_gates", "protect_with_gate", "has_gates"]


def has_gates(model) -> bool:
    return any(isinstance(b.override, ExpansionGate) for b in moe_blocks(model))


def strip_gates(model) -> bool:
    """Remove every expansion gate (in place, structure recorded); whether there was one."""
    found = False
    for b in moe_blocks(model):
        if isinstance(b.override, ExpansionGate):
            b.router.override = None
            found = True
    if found:
        record_structure(model)
    return found


def gate_classes(expert0: Sequence[str], lineage: Mapping[str, Any], new: Sequence[str], old: Sequence[str]
                 ) -> dict[str, int]:
    """`{language: class}`: 0 the expert-0 languages (and any other old language no generation learned), g the
    languages of the g-th expansion generation, the last class this expansion's new languages."""
    gens = [list(g.get("new", [])) for g in lineage.get("generations", [])]
    classes = {x: 0 for x in list(expert0) + list(old)}
    for g, langs in enumerate(gens, start=1):
        classes.update({x: g for x in langs})
    classes.update({x: len(gens) + 1 for x in new})
    return classes


def group_firsts(lineage: Mapping[str, Any], new_experts: Mapping[int, int], layers: Sequence[int]
                 ) -> dict[int, list[int]]:
    """Per MoE layer, the first expert of each generation's group (experts are appended generation by
    generation after the frozen expert 0; a generation that added none to a layer has an empty group there)."""
    gens = [{int(k): int(v) for k, v in g.get("experts", {}).items()} for g in lineage.get("generations", [])]
    gens.append({int(k): int(v) for k, v in new_experts.items()})
    out = {}
    for layer in layers:
        first, firsts = 1, []
        for g in gens:
            firsts.append(first)
            first += g.get(layer, 0)
        out[layer] = firsts
    return out


def add_gates(model, firsts: Mapping[int, list[int]], mode: str = "prefix") -> None:
    """An all-zero `ExpansionGate` on every MoE layer's router (in place, structure recorded)."""
    for b in moe_blocks(model):
        w = b.router.weight
        b.router.override = ExpansionGate(b.hidden_size, firsts[b.layer_idx], b.num_experts, mode).to(w.device, w.dtype)
    record_structure(model)


def protect_with_gate(model, run, classes: Mapping[str, int], expert0: Sequence[str], new: Sequence[str],
                      firsts: Mapping[int, list[int]], max_intrusion: float, blocks_per_lang: int = 64,
                      mode: str = "sum") -> dict[str, Any]:
    """Add, fit and calibrate the gates on training blocks (fit and calibration on disjoint halves); returns
    per layer the fit and each expert-0 language's measured intrusion."""
    model.eval()
    add_gates(model, firsts, mode)
    for p in (q for b in moe_blocks(model) for q in b.override.parameters()):
        p.requires_grad_(False)
    cap = 2 * blocks_per_lang * run.recipe.data.block_len
    blocks = run.blocks(list(classes), "train", max_tokens_per_lang=cap)
    fit = fit_gates(model, [(blocks, dict(classes))], blocks_per_lang=blocks_per_lang)
    old_blocks = run.blocks(list(expert0), "train", max_tokens_per_lang=cap)
    new_blocks = run.blocks(list(new), "train", max_tokens_per_lang=cap)
    cal = calibrate_gates(model, old_blocks, new_blocks, max_intrusion, blocks_per_lang=blocks_per_lang)
    return {"max_intrusion": max_intrusion, "mode": mode, "classes": dict(classes),
            "layers": {str(k): {**fit.get(k, {}), **cal.get(k, {})} for k in sorted(cal)}}
