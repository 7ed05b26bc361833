"""Router discovery and masking on every supported stock MoE family and on langmoe's own blocks."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from routing_fixtures import STOCK, tiny_langmoe, tiny_moe, tokens

from langmoe.errors import LangmoeError
from langmoe.methods.routing.routers import (
    iter_router_layers,
    mask_routing,
    reinit_routers,
    require_moe,
    route,
)
from langmoe.models.router_recorder import router_outputs

torch.set_num_threads(1)


def _experts_inputs(model):
    """Forward pre-hooks on each MoE layer's experts module: the expert indices it really receives."""
    seen, handles = {}, []
    for r in iter_router_layers(model):
        def pre(module, args, kwargs, layer=r.layer):
            idx = args[1] if len(args) > 1 else next(v for k, v in kwargs.items() if "ind" in k)
            seen[layer] = idx.detach().clone()
        handles.append(r.block.experts.register_forward_pre_hook(pre, with_kwargs=True))
    return seen, handles


@pytest.mark.parametrize("arch", STOCK)
def test_discovery_and_route_matches_the_router(arch):
    model = tiny_moe(arch)
    layers = iter_router_layers(model)
    assert [r.layer for r in layers] == ([1, 2] if arch == "deepseek_v3" else [0, 1, 2])
    assert all(r.num_experts == 8 and r.top_k == 2 for r in layers)
    assert all(p.shape[0] == 8 for r in layers for p in r.expert_params.values())
    assert any("gate_up_proj" in n for n in layers[0].expert_params)
    got = {}
    hs = [r.router.register_forward_hook(lambda m, a, o, r=r: got.__setitem__(r.layer, (o, a[0])))
          for r in layers]
    with torch.no_grad():
        model(tokens())
    for h in hs:
        h.remove()
    for r in layers:
        (logits, w0, i0), x = got[r.layer]
        w1, i1 = route(r, logits, None, x.dtype)
        i0s, o0 = i0.sort(-1)
        i1s, o1 = i1.sort(-1)
        assert torch.equal(i0s, i1s), arch
        assert torch.equal(w0.gather(-1, o0), w1.gather(-1, o1)), arch


@pytest.mark.parametrize("arch", STOCK)
def test_masked_experts_receive_no_tokens(arch):
    model = tiny_moe(arch)
    layers = iter_router_layers(model)
    last = layers[-1].layer
    allowed = [1, 6]  # two groups of deepseek's 2 groups x 4 experts: the group limit must not starve top-k
    x = tokens(batch=3, length=16)
    seen, hs = _experts_inputs(model)
    with torch.no_grad():
        model(x)
        free = dict(seen)
        with mask_routing(model, {last: allowed}):
            model(x)
        masked = dict(seen)
        model(x)  # hooks removed on exit: routing is free again
    for h in hs:
        h.remove()
    assert set(free[last].unique().tolist()) - set(allowed), "the test needs free routing to use other experts"
    assert set(masked[last].unique().tolist()) <= set(allowed)
    assert masked[last].shape[-1] == 2
    for r in layers[:-1]:  # other layers untouched
        assert torch.equal(masked[r.layer], free[r.layer])
    assert torch.equal(seen[last], free[last])


def test_single_allowed_expert_lowers_k():
    model = tiny_moe("qwen3_moe")
    seen, hs = _experts_inputs(model)
    with torch.no_grad(), mask_routing(model, {2: [3]}):
        model(tokens())
    assert seen[2].unique().tolist() == [3] and seen[2].shape[-1] == 1
    phi = tiny_moe("phimoe")  # sparsemixer always picks 2 experts
    with pytest.raises(LangmoeError, match="at least 2"), torch.no_grad(), mask_routing(phi, {2: [3]}):
        phi(tokens())


def test_langmoe_blocks_discovered_and_masked():
    model = tiny_langmoe()
    layers = iter_router_layers(model)
    assert [r.family for r in layers] == ["langmoe"] * 3 and layers[0].num_experts == 4
    with torch.no_grad(), mask_routing(model, {2: [0, 3]}):
        model(tokens())
    assert set(router_outputs(model)[2].topk_idx.unique().tolist()) <= {0, 3}
    with torch.no_grad():
        model(tokens())
    assert set(router_outputs(model)[2].topk_idx.unique().tolist()) - {0, 3}


def test_dense_and_bad_masks_refused():
    cfg = tf.Qwen3Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    dense = tf.AutoModelForCausalLM.from_config(cfg)
    assert iter_router_layers(dense) == []
    with pytest.raises(LangmoeError, match="no MoE router"):
        require_moe(dense)
    model = tiny_moe("olmoe")
    with pytest.raises(LangmoeError, match="not an MoE layer"), mask_routing(model, {7: [0]}):
        pass
    with pytest.raises(LangmoeError, match="non-empty subset"), mask_routing(model, {1: [9]}):
        pass


def test_reinit_routers_changes_only_router_weights_and_is_seeded():
    model = tiny_moe("qwen3_moe")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = reinit_routers(model, seed=3, std=0.02)
    assert names and all(".gate." in n or "router" in n for n in names)
    for n, p in model.named_parameters():
        if n in names:
            assert not torch.equal(p, before[n]) and abs(float(p.detach().std()) - 0.02) < 0.01, n
        else:
            assert torch.equal(p, before[n]), n  # the backbone is untouched
    again = tiny_moe("qwen3_moe")
    reinit_routers(again, seed=3, std=0.02)
    assert all(torch.equal(again.get_parameter(n), model.get_parameter(n)) for n in names)
