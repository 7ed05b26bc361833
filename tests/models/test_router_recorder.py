"""RouterRecorder: the same API on langmoe MoE blocks and on stock transformers MoE models."""

import pytest
import torch
import transformers as tf
from moe_fixtures import tiny_model, tokens

from langmoe.errors import LangmoeError
from langmoe.models.adapters import get_adapter
from langmoe.models.moe import moe_blocks
from langmoe.models.router_recorder import RouterRecorder, find_routers, router_outputs
from langmoe.models.routing import routing
from langmoe.models.upcycle import upcycle

torch.set_num_threads(1)

_COMMON = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
               max_position_embeddings=64)
STOCK = {
    "qwen2_moe": lambda: tf.Qwen2MoeConfig(moe_intermediate_size=8, shared_expert_intermediate_size=8, num_experts=4,
                                           num_experts_per_tok=2, intermediate_size=16, **_COMMON),
    "qwen3_moe": lambda: tf.Qwen3MoeConfig(moe_intermediate_size=8, num_experts=4, num_experts_per_tok=2,
                                           intermediate_size=16, head_dim=8, **_COMMON),
    "mixtral": lambda: tf.MixtralConfig(intermediate_size=8, num_local_experts=4, num_experts_per_tok=2, **_COMMON),
    "olmoe": lambda: tf.OlmoeConfig(intermediate_size=8, num_experts=4, num_experts_per_tok=2, **_COMMON),
}


@pytest.mark.parametrize("arch", sorted(STOCK))
def test_stock_moe_models_match_transformers_own_router_logits(arch):
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(STOCK[arch]()).eval()
    x = tokens()
    with torch.no_grad():
        ref = model(x, output_router_logits=True).router_logits  # transformers' own capture, per layer
        with RouterRecorder(model) as rec:
            model(x)
    assert sorted(rec.logits) == [0, 1]
    for layer, logits in rec.logits.items():
        assert logits.shape == (x.numel(), 4)
        assert torch.equal(logits, ref[layer].reshape(-1, 4))
        # the experts it used are the top-2 by logit (softmax is monotone)
        assert torch.equal(rec.selected[layer].sort(-1).values, rec.topk(2)[layer].sort(-1).values)
    ours = [h for r in find_routers(model).values() for h in r._forward_hooks.values()
            if getattr(getattr(h, "func", None), "__self__", None) is rec]
    assert not ours  # our hooks are removed on exit (transformers keeps its own)


def test_langmoe_blocks_record_logits_computed_by_hand():
    model = upcycle(tiny_model("llama"), [0, 2], 4, top_k=2)
    with torch.no_grad():
        for b in moe_blocks(model):
            b.router.weight.normal_(0, 1.0)
    layers = get_adapter(model).layers(model)
    inputs = {}
    hooks = [layers[i].mlp.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0])) for i in (0, 2)]
    x = tokens()
    with torch.no_grad(), RouterRecorder(model) as rec:
        model(x)
        model(x[:1])  # a second forward is appended
    for h in hooks:
        h.remove()
    assert sorted(rec.logits) == [0, 2]
    for i in (0, 2):
        w = layers[i].mlp.router.weight
        by_hand = inputs[i].reshape(-1, 16) @ w.T  # inputs[i]: the last forward (x[:1])
        assert rec.logits[i].shape == (x.numel() + x.shape[1], 4)
        assert torch.allclose(rec.logits[i][x.numel():], by_hand, atol=1e-6)
        assert rec.selected[i].shape == (x.numel() + x.shape[1], 2)
    rec.clear()
    assert rec.logits == {}


def test_recorder_sees_label_routing_and_skips_checkpoint_recompute():
    model = upcycle(tiny_model("llama"), "all", 3, top_k=2)
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    x = tokens()
    labels = torch.randint(0, 3, x.shape, generator=torch.Generator().manual_seed(0))
    with RouterRecorder(model) as rec:
        with routing(model, route_labels=labels):
            loss = model(x, labels=x).loss
        loss.backward()  # recomputes every layer inside backward: not recorded again
    for layer in range(3):
        assert rec.logits[layer].shape == (x.numel(), 3)
        assert torch.equal(rec.selected[layer][:, 0], labels.reshape(-1))
    outs = router_outputs(model)  # the persistent recorder of the losses: last forward, graph kept
    assert [o.layer for o in outs] == [0, 1, 2] and all(o.mode == "labels" for o in outs)
    assert outs[0].logits.requires_grad


def test_recorder_refuses_a_dense_model():
    with pytest.raises(LangmoeError, match="no MoE router"):
        RouterRecorder(tiny_model("llama")).start()


def test_router_outputs_follow_add_expert_and_deepcopy():
    import copy

    from langmoe.models.upcycle import add_expert

    model = upcycle(tiny_model("qwen2"), [1], 2, top_k=1)
    add_expert(model, 1, 0)
    x = tokens()
    model(x)
    assert router_outputs(model)[0].logits.shape == (x.numel(), 3)
    twin = copy.deepcopy(model)  # a copy after a forward with graph: works, and records its own outputs
    with torch.no_grad():
        twin(x[:1])
    assert router_outputs(twin)[0].logits.shape == (x.shape[1], 3)
    assert router_outputs(model)[0].logits.shape == (x.numel(), 3)
