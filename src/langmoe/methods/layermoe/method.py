"""LayerMoE (docs/methods.md §3): MoE-LPR with experts allocated per layer by cross-lingual similarity (fewer in layers
where new and old languages look alike) and an old/new routing classifier in the K most similar layers.

Plan (before any training or writing): measure `S^i` on the current model (dense for G0 -> G1, the expanded model
for a lifelong step), allocate the budget of new experts (`budget`, or `budget_fraction` × MoE-LPR's uniform count
`(uniform_experts - 1) × layers`; or an explicit `delta`), pick the top-K layers for classifiers. Then the shared
flow: expand, stage 1 (new experts + routers, `+ lb_weight · L_LB`; earlier experts frozen), add the classifiers,
stage 2 (routers + classifiers, `+ lpr_weight · L_LPR + cls_weight · L_cls`).
Ablations: `allocation="random"` (same total), `top_k_cls=0` (no classifier).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from langmoe.errors import LangmoeError
from langmoe.methods.layermoe.allocation import allocate, random_allocation, solve_delta, top_k_layers
from langmoe.train.expansion import (
    ExpansionConfig,
    ExpansionPlan,
    ExpansionResult,
    parse_config,
    run_moe_expansion,
)


class LayerMoEConfig(ExpansionConfig):
    """LayerMoE settings. The budget counts new experts over all layers (paper: 48 vs MoE-LPR's 120)."""

    budget: int | None = Field(None, ge=1, description="new experts in total; default budget_fraction x uniform")
    budget_fraction: float = Field(0.4, gt=0, le=1, description="of MoE-LPR's uniform count of new experts")
    uniform_experts: int = Field(4, ge=2, description="MoE-LPR's experts per layer (incl. frozen) for the fraction")
    delta: float | None = Field(None, gt=0, description="explicit δ instead of a budget (layers with N<=1 stay dense)")
    allocation: Literal["similarity", "random"] = "similarity"
    top_k_cls: int = Field(1, ge=0, description="classifiers in the K most similar MoE layers (paper: 7 of 24)")
    classifier_mode: Literal["token", "sequence"] = "token"
    cls_weight: float = Field(0.1, ge=0)
    similarity_tokens_per_lang: int = Field(4096, ge=16, description="train tokens per language (paper: 100K)")


def budget_of(cfg: LayerMoEConfig, n_layers: int) -> int:
    if cfg.budget is not None:
        return cfg.budget
    return max(1, round(cfg.budget_fraction * (cfg.uniform_experts - 1) * n_layers))


def measure_similarity(model, tokenizer, corpus, cfg: LayerMoEConfig, known_old: list[str]) -> dict[str, Any]:
    """`S^i` per decoder layer on train text of the new and the old languages."""
    from langmoe.data.packing import pack_corpus
    from langmoe.methods.layermoe.similarity import ffn_input_mean_units, layer_similarity

    langs = list(dict.fromkeys(cfg.new + known_old))
    blocks = pack_corpus(corpus, tokenizer, langs, "train", cfg.block_len,
                         max_tokens_per_lang=cfg.similarity_tokens_per_lang)
    means = ffn_input_mean_units(model, blocks, batch_size=cfg.eval.batch_size)
    return layer_similarity(means, cfg.new, known_old)


def make_plan(cfg: LayerMoEConfig, base, corpus) -> ExpansionPlan:
    from langmoe.models.adapters import get_adapter
    from langmoe.models.moe import moe_blocks

    n_layers = len(get_adapter(base.model).layers(base.model))
    if cfg.top_k_cls > n_layers:
        raise LangmoeError(f"--top-k-cls {cfg.top_k_cls} is larger than the model's {n_layers} layers")
    known_old = list(dict.fromkeys(list(base.lineage.get("known_langs", [])) + cfg.old))
    known_old = [x for x in known_old if x not in cfg.new]
    sim = measure_similarity(base.model, base.tokenizer, corpus, cfg, known_old)
    S = sim["S"]
    record: dict[str, Any] = {"similarity": sim, "allocation": cfg.allocation}
    if cfg.delta is not None:
        if cfg.allocation == "random":
            raise LangmoeError("an explicit delta needs allocation='similarity' (random allocation takes a budget)")
        N = allocate(S, cfg.delta)
        new = {i: n - 1 for i, n in enumerate(N) if n >= 2}
        if not new:
            raise LangmoeError(f"delta {cfg.delta} allocates no new expert (every layer gets N<=1): raise delta")
        record.update({"delta": cfg.delta, "N": N})
    else:
        budget = budget_of(cfg, n_layers)
        if cfg.allocation == "random":
            alloc = random_allocation(n_layers, budget, seed=cfg.seed)
        else:
            delta, alloc = solve_delta(S, budget)
            record["delta"] = delta
        new = dict(enumerate(alloc))
        record.update({"budget": budget, "N": [a + 1 for a in alloc]})
    record["uniform_new_total"] = (cfg.uniform_experts - 1) * n_layers
    existing = {b.layer_idx for b in moe_blocks(base.model)}
    moe_layers = sorted(set(new) | existing)
    cls = top_k_layers(S, cfg.top_k_cls, moe_layers) if cfg.top_k_cls else []
    return ExpansionPlan(new_experts=new, classifier_layers=cls, classifier_mode=cfg.classifier_mode,
                         cls_weight=cfg.cls_weight if cls else 0.0, record=record)


def run(config: LayerMoEConfig | dict[str, Any], out: str | Path, corpus=None) -> ExpansionResult:
    """Expand `config.model` (dense, or a langmoe expansion for a lifelong step) to `config.new`; writes a native
    MoE folder + expansion.json to `out`."""
    cfg = parse_config(LayerMoEConfig, config)

    def plan(base, data, corpus, expert0):
        return make_plan(cfg, base, corpus)

    return run_moe_expansion(cfg, out, "layermoe", plan, corpus=corpus)
