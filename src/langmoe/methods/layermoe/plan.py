"""LayerMoE's plan (docs/methods.md §3), before any training or writing: measure the cross-lingual similarity `S^i`
per layer on the current model (dense for G0 -> G1, the expanded model for a lifelong step), allocate the budget of
new experts (`budget`, or `budget_fraction` × MoE-LPR's uniform count `(uniform_experts - 1) × layers`; or an
explicit `delta`), fewer where new and old languages look alike, and put the old/new classifiers in the K most
similar MoE layers. Ablations: `allocation="random"` (same total), `top_k_cls=0` (no classifier)."""

from __future__ import annotations

from typing import Any

from langmoe.errors import LangmoeError
from langmoe.methods.expansion.stages import ExpansionPlan, PlanInputs
from langmoe.methods.layermoe.allocation import allocate, random_allocation, solve_delta, top_k_layers
from langmoe.methods.layermoe.config import LayerMoEConfig
from langmoe.methods.layermoe.similarity import ffn_input_mean_units, layer_similarity
from langmoe.models.adapters import get_adapter
from langmoe.models.moe import moe_blocks

__all__ = ["budget_of", "classifier_count", "measure_similarity", "make_plan"]


def budget_of(cfg: LayerMoEConfig, n_layers: int) -> int:
    if cfg.budget is not None:
        return cfg.budget
    return max(1, round(cfg.budget_fraction * (cfg.uniform_experts - 1) * n_layers))


def classifier_count(cfg: LayerMoEConfig, n_layers: int) -> int:
    """K: `top_k_cls` when given, else the official share of the layers (7 of 24), at least one."""
    if cfg.top_k_cls is not None:
        return cfg.top_k_cls
    return max(1, round(cfg.cls_share * n_layers))


def measure_similarity(model, blocks, cfg: LayerMoEConfig, known_old: list[str]) -> dict[str, Any]:
    """`S^i` per decoder layer on train `blocks` of the new and the old languages."""
    means = ffn_input_mean_units(model, blocks, batch_size=cfg.eval.batch_size)
    return layer_similarity(means, cfg.new, known_old)


def _allocation(cfg: LayerMoEConfig, S: list[float], n_layers: int) -> tuple[dict[int, int], dict[str, Any]]:
    """New experts per layer and what decided them (delta, budget, N)."""
    record: dict[str, Any] = {}
    if cfg.delta is not None:
        if cfg.allocation == "random":
            raise LangmoeError("an explicit delta needs allocation='similarity' (random allocation takes a budget)")
        N = allocate(S, cfg.delta)
        new = {i: n - 1 for i, n in enumerate(N) if n >= 2}
        if not new:
            raise LangmoeError(f"delta {cfg.delta} allocates no new expert (every layer gets N<=1): raise delta")
        return new, {"delta": cfg.delta, "N": N}
    budget = budget_of(cfg, n_layers)
    if cfg.allocation == "random":
        alloc = random_allocation(n_layers, budget, seed=cfg.seed)
    else:
        record["delta"], alloc = solve_delta(S, budget)
    return dict(enumerate(alloc)), {**record, "budget": budget, "N": [a + 1 for a in alloc]}


def make_plan(inputs: PlanInputs) -> ExpansionPlan:
    cfg, model, run = inputs.cfg, inputs.model, inputs.run
    n_layers = len(get_adapter(model).layers(model))
    k_cls = classifier_count(cfg, n_layers)
    if k_cls > n_layers:
        raise LangmoeError(f"--top-k-cls {k_cls} is larger than the model's {n_layers} layers")
    known_old = [x for x in dict.fromkeys(inputs.input.known_langs + cfg.old) if x not in cfg.new]
    blocks = run.blocks(list(dict.fromkeys(cfg.new + known_old)), "train",
                        max_tokens_per_lang=cfg.similarity_tokens_per_lang)
    sim = measure_similarity(model, blocks, cfg, known_old)
    new, decided = _allocation(cfg, sim["S"], n_layers)
    record: dict[str, Any] = {"similarity": sim, "allocation": cfg.allocation, **decided,
                              "uniform_new_total": (cfg.uniform_experts - 1) * n_layers}
    moe_layers = sorted(set(new) | {b.layer_idx for b in moe_blocks(model)})
    cls = top_k_layers(sim["S"], k_cls, moe_layers) if k_cls else []
    return ExpansionPlan(new_experts=new, classifier_layers=cls, classifier_mode=cfg.classifier_mode,
                         cls_weight=cfg.cls_weight if cls else 0.0, record=record)
