"""Upcycling preserves the function of every supported architecture; structure, accounting, add_expert."""

import copy

import pytest
import torch
from moe_fixtures import ARCHS, tiny_model, tokens

from langmoe.errors import LangmoeError
from langmoe.models.adapters import get_adapter
from langmoe.models.moe import MoEBlock, moe_blocks
from langmoe.models.routing import routing
from langmoe.models.upcycle import add_expert, ffn_input_centroids, parameter_counts, upcycle

torch.set_num_threads(1)


def _logits(model, x):
    with torch.no_grad():
        return model(x).logits


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "layers,experts,top_k",
    [([1], 4, 1), ("all", 4, 2), ([0, 2], {0: 2, 2: 8}, 2), ("all", {0: 3, 1: 6, 2: 8}, 1)],
)
def test_function_preservation(arch, layers, experts, top_k):
    dense = tiny_model(arch)
    x = tokens()
    ref = _logits(dense, x)
    moe = upcycle(copy.deepcopy(dense), layers, experts, top_k=top_k)
    n_moe = 3 if layers == "all" else len(layers)
    assert len(moe_blocks(moe)) == n_moe
    assert (_logits(moe, x) - ref).abs().max().item() <= 1e-5
    # hard routing of a one-label batch is the dense FFN too
    # (label 1 is valid in every layer: all have >= 2 experts)
    with routing(moe, route_labels=torch.ones_like(x)):
        assert (_logits(moe, x) - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dispatch", ["loop", "grouped"])
def test_preservation_with_both_dispatches(dispatch):
    dense = tiny_model("llama")
    x = tokens()
    moe = upcycle(copy.deepcopy(dense), "all", 8, top_k=2, dispatch=dispatch)
    assert (_logits(moe, x) - _logits(dense, x)).abs().max().item() <= 1e-5


def test_structure_recorded_and_counts():
    dense = tiny_model("llama")
    before = parameter_counts(dense)
    moe = upcycle(copy.deepcopy(dense), [0, 2], {0: 4, 2: 2}, top_k=1)
    s = moe.config.langmoe
    assert s["layers"]["0"]["num_experts"] == 4 and s["layers"]["2"]["top_k"] == 1
    after = parameter_counts(moe)
    blk = moe_blocks(moe)[0]
    per_expert = 3 * 16 * 32
    assert after["experts"] == per_expert * 6
    assert after["router"] == 16 * 6
    # total grows by the extra experts + routers; active per token adds only the routers (top-1)
    assert after["total"] == before["total"] + per_expert * (3 + 1) + 16 * 6
    assert after["active_per_token"] == before["total"] + 16 * 6
    assert blk.top_k == 1


def test_add_expert_copies_weights_and_router_row():
    moe = upcycle(tiny_model("gpt2"), [1], 2, top_k=1)
    blk = moe_blocks(moe)[0]
    with torch.no_grad():
        blk.experts.up_proj[1].add_(torch.randn_like(blk.experts.up_proj[1]))
    new = add_expert(moe, 1, source_expert=1)
    assert new == 2 and blk.num_experts == 3
    e = blk.experts
    assert torch.equal(e.up_proj[2], e.up_proj[1]) and torch.equal(e.down_proj_bias[2], e.down_proj_bias[1])
    assert torch.equal(blk.router.weight[2], blk.router.weight[1])
    assert moe.config.langmoe["layers"]["1"]["num_experts"] == 3
    x = tokens()
    with routing(moe, route_labels=torch.full_like(x, 2)):
        a = _logits(moe, x)
    with routing(moe, route_labels=torch.full_like(x, 1)):
        b = _logits(moe, x)
    assert torch.equal(a, b)


def test_centroid_router_init():
    dense = tiny_model("qwen2")
    cent = torch.randn(3, 16)
    moe = upcycle(dense, [1], 3, top_k=1, router_init=cent)
    w = moe_blocks(moe)[0].router.weight
    assert torch.allclose(w, cent / cent.norm(dim=-1, keepdim=True))
    with pytest.raises(LangmoeError, match="centroids must have shape"):
        upcycle(tiny_model("qwen2"), [1], 4, router_init=cent)


def test_bad_inputs():
    with pytest.raises(LangmoeError, match="out of range"):
        upcycle(tiny_model("llama"), [5], 2)
    with pytest.raises(LangmoeError, match="top_k"):
        upcycle(tiny_model("llama"), [0], 2, top_k=3)
    m = upcycle(tiny_model("llama"), [0], 2)
    with pytest.raises(LangmoeError, match="already an MoE layer"):
        upcycle(m, [0], 2)
    with pytest.raises(LangmoeError, match="frozen_expert0"):
        upcycle(tiny_model("llama"), [0], 2, classifier_layers=[0])


def test_unsupported_architecture():
    import transformers as tf

    cfg = tf.MixtralConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                           intermediate_size=32, num_local_experts=2, vocab_size=64)
    model = tf.AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(LangmoeError, match="'mixtral' is already a Mixture-of-Experts"):
        upcycle(model, [0], 2)
    with pytest.raises(LangmoeError, match="routing analysis"):
        get_adapter(model)


def test_adapter_reads_gpt2_conv1d_transposed():
    model = tiny_model("gpt2")
    ad = get_adapter(model)
    mlp = ad.get_mlp(ad.layers(model)[0])
    ffn = ad.extract(mlp)
    x = torch.randn(5, 16)
    ref = mlp(x)
    got = ffn.act(x @ ffn.w_in + ffn.b_in) @ ffn.w_out + ffn.b_out
    assert torch.allclose(got, ref, atol=1e-6)
    assert isinstance(moe_blocks(upcycle(model, [0], 2))[0], MoEBlock)


def test_ffn_input_centroids_feed_router_init():
    dense = tiny_model("llama")
    groups = [tokens(2, 6, seed=1), [tokens(1, 6, seed=2), tokens(1, 4, seed=3)]]
    seen = []
    ad = get_adapter(dense)
    h = ad.get_mlp(ad.layers(dense)[1]).register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, 16)))
    cents = ffn_input_centroids(dense, [1, 2], groups)
    h.remove()
    assert set(cents) == {1, 2} and cents[1].shape == (2, 16)
    assert torch.allclose(cents[1][0], seen[0].mean(0), atol=1e-6)
    assert torch.allclose(cents[1][1], torch.cat(seen[1:]).mean(0), atol=1e-6)
    moe = upcycle(dense, [1, 2], 2, top_k=1, router_init=cents)
    w = moe_blocks(moe)[0].router.weight
    assert torch.allclose(w[0], cents[1][0] / cents[1][0].norm(), atol=1e-6)
