"""Expansion surgery: xavier-normal routers, and the LayerMoE classifiers placed as route overrides while every
other weight is carried over."""

from __future__ import annotations

import math

import pytest
import torch
from expansion_world import expansion_run
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.errors import LangmoeError
from langmoe.methods.expansion.surgery import expand_model, set_classifiers, xavier_router_init
from langmoe.models.upcycle import upcycle


def test_xavier_normal_router_init():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=16, hidden_size=256, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(cfg)
    upcycle(model, "all", 8, 2, frozen_expert0=True)
    xavier_router_init(model, seed=1)
    w = dict(model.named_parameters())["model.layers.0.mlp.router.weight"]
    assert w.shape == (8, 256)
    assert float(w.detach().std()) == pytest.approx(math.sqrt(2 / (256 + 8)), rel=0.06)
    assert abs(float(w.detach().mean())) < 0.01


def test_set_classifiers_keeps_weights_and_places_classifiers(tmp_path):
    run, _cfg = expansion_run(tmp_path)
    model = run.base()
    expand_model(model, {0: 2, 1: 1}, 2, seed=0)
    before = model.state_dict()
    new = set_classifiers(model, [1], seed=1)
    after = new.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    extra = set(after) - set(before)
    assert extra == {"model.layers.1.mlp.router.override.weight"}
    layers = new.config.langmoe["layers"]
    assert layers["1"]["route_override"] == {"kind": "classifier", "mode": "token"}
    assert layers["0"]["route_override"] is None
    with pytest.raises(LangmoeError, match="not MoE layers"):
        set_classifiers(model, [5])
