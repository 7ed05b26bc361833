"""The one router discovery and the kit every method uses: a router's weight, frozen expert rows (bit-identical
under AdamW with weight decay 0, on langmoe blocks with and without a frozen expert 0, and on a stock MoE)."""

import pytest
import torch
import transformers as tf
from moe_fixtures import tiny_model, tokens

from langmoe.errors import LangmoeError
from langmoe.models.moe import moe_blocks
from langmoe.models.routers import (
    find_routers,
    freeze_expert_rows,
    iter_router_layers,
    require_moe,
    router_weight,
)
from langmoe.models.upcycle import upcycle

torch.set_num_threads(1)


def _qwen3_moe():
    torch.manual_seed(0)
    cfg = tf.Qwen3MoeConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, max_position_embeddings=64, moe_intermediate_size=8,
                            num_experts=4, num_experts_per_tok=2, intermediate_size=16, head_dim=8)
    return tf.AutoModelForCausalLM.from_config(cfg)


def test_one_discovery_for_langmoe_and_stock_models():
    moe = upcycle(tiny_model("llama"), [0, 2], 3, 2, frozen_expert0=True)
    layers = iter_router_layers(moe)
    assert [r.layer for r in layers] == [0, 2] and all(r.family == "langmoe" and r.expert_offset == 1 for r in layers)
    assert [router_weight(r) for r in layers] == [b.router.weight for b in moe_blocks(moe)]
    assert router_weight(moe_blocks(moe)[0]) is moe_blocks(moe)[0].router.weight  # a block is enough
    assert find_routers(moe) == {0: moe_blocks(moe)[0].router, 2: moe_blocks(moe)[1].router}
    stock = _qwen3_moe()
    layers = iter_router_layers(stock)
    assert [r.layer for r in layers] == [0, 1] and layers[0].family == "softmax_topk"
    assert router_weight(layers[0]) is stock.model.layers[0].mlp.gate.weight
    with pytest.raises(LangmoeError, match="no MoE router"):
        require_moe(tiny_model("llama"))


def _adamw_steps(model, steps: int = 3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=tokens()).logits.pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("frozen_expert0", [False, True])
def test_frozen_expert_rows_stay_bit_identical_and_the_others_train(frozen_expert0):
    moe = upcycle(tiny_model("llama"), [0, 1], 4, 2, frozen_expert0=frozen_expert0)
    layers = iter_router_layers(moe)
    before = {n: p.detach().clone() for r in layers for n, p in {**r.expert_params, **r.router_params}.items()}
    handles = freeze_expert_rows(moe, {0: 2, 1: 3}, router_rows=True)
    _adamw_steps(moe)
    for h in handles:
        h.remove()
    for r in layers:
        n = {0: 2, 1: 3}[r.layer]
        for name, p in r.expert_params.items():  # rows of experts 1.. when expert 0 is a buffer
            k = n - r.expert_offset
            assert torch.equal(p[:k], before[name][:k]) and not torch.equal(p[k:], before[name][k:]), name
        w = router_weight(r)
        name = next(k for k, v in r.router_params.items() if v is w)
        assert torch.equal(w[:n], before[name][:n]) and not torch.equal(w[n:], before[name][n:])


def test_freezing_expert_rows_of_a_stock_moe():
    stock = _qwen3_moe()
    layers = iter_router_layers(stock)
    before = {n: p.detach().clone() for r in layers for n, p in r.expert_params.items()}
    assert before  # the fused expert tensors were found
    handles = freeze_expert_rows(stock, 1)
    _adamw_steps(stock)
    for h in handles:
        h.remove()
    for r in layers:
        for name, p in r.expert_params.items():
            assert torch.equal(p[:1], before[name][:1]), name
    assert any(not torch.equal(p[1:], before[n][1:]) for r in layers for n, p in r.expert_params.items())
