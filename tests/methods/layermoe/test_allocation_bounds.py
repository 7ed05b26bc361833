"""LayerMoE's plan at its boundaries and default paths: a budget of exactly one expert per layer, the default
`budget_fraction` (every other test passes an explicit budget), an explicit δ, ties in the classifier layers, and a
lifelong plan that measures against every language the model already knows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from expansion_world import make_base

import langmoe.methods.layermoe.plan as plan_mod
from langmoe.methods.expansion.inputs import InputModel
from langmoe.methods.layermoe.allocation import (
    new_experts_at,
    random_allocation,
    solve_delta,
    top_k_layers,
)
from langmoe.methods.layermoe.config import LayerMoEConfig
from langmoe.methods.layermoe.plan import _allocation, budget_of

S3 = [0.5, 0.25, 1.0]  # shares 2/7, 4/7, 1/7


def test_budget_of_exactly_one_expert_per_layer_is_allowed():
    delta, alloc = solve_delta(S3, 3)
    assert alloc == [1, 1, 1] and delta > 0
    assert new_experts_at(S3, 1e-9) == [1, 1, 1]  # every layer gets at least one, even at a tiny δ


def test_random_allocation_gives_every_layer_one():
    for seed in range(5):
        a = random_allocation(4, 4, seed=seed)
        assert a == [1, 1, 1, 1]


def test_classifier_layer_ties_go_to_the_lower_layer():
    assert top_k_layers([0.7, 0.7, 0.1], 1) == [0]
    assert top_k_layers([0.1, 0.7, 0.7], 1) == [1]


def test_default_budget_fraction_path():
    """Defaults: budget None, budget_fraction 0.4 of MoE-LPR's uniform (uniform_experts - 1) x layers new experts."""
    cfg = LayerMoEConfig(new=["es"], old=["en"])
    assert cfg.budget is None and cfg.budget_fraction == 0.4 and cfg.uniform_experts == 4
    assert budget_of(cfg, 5) == round(0.4 * 3 * 5) == 6
    new, record = _allocation(cfg, [0.9, 0.1, 0.5, 0.5, 0.3], 5)
    assert record["budget"] == 6 and sum(new.values()) == 6 and min(new.values()) >= 1
    assert record["N"] == [new[i] + 1 for i in range(5)]  # N counts the frozen FFN
    assert max(new, key=new.get) == 1  # the least similar layer gets the most


def test_explicit_delta_path_counts_the_frozen_ffn():
    cfg = LayerMoEConfig(new=["es"], old=["en"], delta=7.0)
    new, record = _allocation(cfg, S3, 3)
    assert record["N"] == [2, 4, 1]  # ceil(2), ceil(4), ceil(1)
    assert new == {0: 1, 1: 3}  # N - 1 new experts; the layer with N = 1 stays as it is


def test_lifelong_plan_measures_against_every_known_language(tmp_path, monkeypatch):
    base = make_base(Path(tmp_path) / "base")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    cfg = LayerMoEConfig(model=str(base), new=["it"], old=["en"], budget=2, top_k_cls=1)
    seen = {}

    def blocks(langs, split, max_tokens_per_lang):
        seen["langs"] = langs
        return "blocks"

    def measure(model_, blocks_, cfg_, known_old):
        seen["old"] = known_old
        return {"S": [0.3, 0.6], "pairs": []}

    monkeypatch.setattr(plan_mod, "measure_similarity", measure)
    inputs = SimpleNamespace(cfg=cfg, model=model, run=SimpleNamespace(blocks=blocks),
                             input=InputModel(base, "expansion", {"known_langs": ["en", "de", "es"]}))
    plan = plan_mod.make_plan(inputs)
    assert seen["old"] == ["en", "de", "es"]  # G1's languages (de, es) are old for a G2 step too
    assert seen["langs"] == ["it", "en", "de", "es"]
    assert plan.new_experts == {0: 1, 1: 1} and plan.classifier_layers == [1]
    assert plan.record["uniform_new_total"] == 3 * 2


@pytest.mark.parametrize("fraction,layers,want", [(1.0, 2, 6), (0.01, 3, 1)])
def test_budget_fraction_bounds(fraction, layers, want):
    cfg = LayerMoEConfig(new=["es"], old=["en"], budget_fraction=fraction)
    assert budget_of(cfg, layers) == want  # the whole uniform count; at least one expert
