"""The MoE block on small tensors: learned routing, dispatch paths, frozen expert 0, router outputs (the route
overrides: tests/models/overrides/)."""

import pytest
import torch
from moe_fixtures import block as _block
from moe_fixtures import ffn_ref as _ffn_ref
from moe_fixtures import last_output as _last
from moe_fixtures import recorded as _recorded
from moe_fixtures import reference as _reference
from moe_fixtures import tiny_model, tokens

from langmoe.errors import LangmoeError
from langmoe.models.moe import (
    FrozenExpert0,
    GatedExperts,
    LinearExperts,
    MoEBlock,
    TopKRouter,
    build_moe_block,
)
from langmoe.models.router_recorder import router_outputs
from langmoe.models.routing import routing
from langmoe.models.upcycle import upcycle

torch.set_num_threads(1)


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("dispatch", ["loop", "grouped"])
@pytest.mark.parametrize("k", [1, 2])
def test_learned_topk_matches_reference(gated, dispatch, k):
    b = _recorded(_block(E=6, k=k, gated=gated, dispatch=dispatch))
    x = torch.randn(3, 5, 8)
    y = b(x)
    h = x.reshape(-1, 8)
    probs = torch.softmax(h @ b.router.weight.T, -1)
    w, idx = probs.topk(k, -1)
    w = w / w.sum(-1, keepdim=True)
    assert torch.allclose(y.reshape(-1, 8), _reference(b, h, idx, w), atol=1e-5)
    ro = _last(b)
    assert torch.equal(ro.topk_idx, idx) and ro.logits.shape == (15, 6)


def test_no_renormalisation_uses_raw_probs():
    b = _block(E=4, k=2, renormalize=False)
    x = torch.randn(7, 8)
    y = b(x)
    probs = torch.softmax(x @ b.router.weight.T, -1)
    w, idx = probs.topk(2, -1)
    assert torch.allclose(y, _reference(b, x, idx, w), atol=1e-5)


def test_grouped_and_loop_agree_in_value_and_gradient():
    xs = torch.randn(40, 8)
    grads = []
    for d in ("loop", "grouped"):
        b = _block(E=8, k=2, dispatch=d)
        x = xs.clone().requires_grad_(True)
        b(x).sum().backward()  # broadcast incoming grad: grouped path must cope
        grads.append((x.grad, b.experts.gate_up_proj.grad, b.router.weight.grad))
    for a, c in zip(*grads, strict=True):
        assert torch.allclose(a, c, atol=1e-5)


def test_restricted_routing_never_picks_masked_expert():
    b = _recorded(_block(E=6, k=2))
    x = torch.randn(200, 8)
    b(x)
    assert set(_last(b).topk_idx.unique().tolist()) - {1, 4}  # unrestricted uses others
    with routing(b, allowed_experts=[1, 4]):
        b(x)
    assert set(_last(b).topk_idx.unique().tolist()) <= {1, 4}
    with routing(b, allowed_experts=[3]):
        y = b(x)
    ro = _last(b)
    assert ro.topk_idx.shape == (200, 1) and bool((ro.topk_idx == 3).all())
    assert torch.allclose(y, _ffn_ref(b, x, 3), atol=1e-6)
    with pytest.raises(LangmoeError, match="out of range"), routing(b, allowed_experts=[7]):
        pass


def test_restricted_routing_per_layer_in_model():
    moe = upcycle(tiny_model("llama"), [0, 2], 4, top_k=2)
    x = tokens()
    with routing(moe, allowed_experts={2: torch.tensor([False, True, False, True])}):
        moe(x)
    outs = {o.layer: o for o in router_outputs(moe)}
    assert set(outs[2].topk_idx.unique().tolist()) <= {1, 3}
    assert outs[0].topk_idx.shape[1] == 2
    with pytest.raises(LangmoeError, match="not MoE layers"), routing(moe, allowed_experts={1: [0]}):
        pass


def test_routing_context_restores_state():
    b = _block(E=3)
    with routing(b, route_labels=torch.zeros(1, 2, dtype=torch.long)):
        with routing(b, mode="learned"):
            assert b.router._state.mode == "learned"
        assert b.router._state.mode == "labels"
    assert b.router._state is None


def test_frozen_expert0_bit_identical_after_adamw_with_weight_decay():
    moe = upcycle(tiny_model("llama"), "all", 3, top_k=2, frozen_expert0=True)
    frozen = {k: v.clone() for k, v in moe.state_dict().items() if ".experts.frozen." in k}
    assert len(frozen) == 3 * 2  # gate_up_proj and down_proj of each of the 3 layers
    opt = torch.optim.AdamW([p for p in moe.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    moe.train()
    x = tokens()
    for _ in range(3):
        out = moe(x, labels=x)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    for k, v in frozen.items():
        assert torch.equal(moe.state_dict()[k], v), k
    # trainable experts did move
    blk = [m for m in moe.modules() if isinstance(m, MoEBlock)][0]
    assert not torch.equal(blk.experts.trainable.gate_up_proj[0], blk.experts.frozen.gate_up_proj[0])
    assert not any(".frozen." in n for n, _ in moe.named_parameters())


def test_frozen_expert0_preserves_function():
    dense = tiny_model("qwen3")
    x = tokens()
    with torch.no_grad():
        ref = dense(x).logits
    moe = upcycle(dense, "all", 4, top_k=2, frozen_expert0=True)
    with torch.no_grad():
        assert (moe(x).logits - ref).abs().max() <= 1e-5


def test_bf16_autocast_grouped_path_runs():
    b = _block(E=8, k=2, dispatch="grouped")
    x = torch.randn(16, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = b(x)
    y.float().sum().backward()
    ref = b.__class__.forward(_loop_copy(b), x.detach())
    assert torch.allclose(y.float(), ref, atol=0.1)


def _loop_copy(b):
    b.experts.dispatch = "loop"
    return b


def test_auto_dispatch_rule():
    from langmoe.models.moe import GROUPED_MAX_TOKENS_PER_EXPERT, LOOP_MAX_EXPERTS

    x = torch.zeros(1, 8)
    small = build_moe_block(8, 16, LOOP_MAX_EXPERTS, 1).experts
    many = build_moe_block(8, 16, 8, 1).experts
    odd = build_moe_block(6, 10, 8, 1).experts
    assert not small._use_grouped(x, 16)
    assert many._use_grouped(x, 16)
    assert not many._use_grouped(x, 8 * GROUPED_MAX_TOKENS_PER_EXPERT)  # big groups: the loop is faster
    assert not odd._use_grouped(x, 16)  # grouped_mm needs 16-byte aligned sizes
    with pytest.raises(LangmoeError, match="divisible"):
        build_moe_block(6, 10, 8, 1, dispatch="grouped").experts._use_grouped(x, 16)


def test_gradient_checkpointing_recompute_keeps_label_routing():
    """The trainer runs backward outside the routing context; checkpointing recomputes the layer there."""
    import copy

    base = upcycle(tiny_model("llama"), "all", 3, top_k=2)
    x = tokens()
    labels = torch.tensor([[0, 1, 2, 2, 1, 0, 0], [2, 2, 2, 1, 1, 1, 0]])
    grads = []
    for ckpt in (False, True):
        m = copy.deepcopy(base)
        m.train()
        if ckpt:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        with routing(m, route_labels=labels):
            loss = m(x, labels=x).loss
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


@pytest.mark.parametrize("k,norm", [(1, True), (2, True), (2, False)])
def test_gated_experts_match_transformers_qwen3_moe_block(k, norm):
    """Same names, layout and math as transformers' own fused experts: copy tensors by name, equal outputs."""
    import transformers as tf
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    cfg = tf.Qwen3MoeConfig(hidden_size=8, moe_intermediate_size=16, num_experts=5, num_experts_per_tok=k,
                            norm_topk_prob=norm)
    torch.manual_seed(0)
    stock = Qwen3MoeSparseMoeBlock(cfg)
    with torch.no_grad():
        stock.experts.gate_up_proj.normal_(0, 0.3)
        stock.experts.down_proj.normal_(0, 0.3)
        stock.gate.weight.normal_(0, 1.0)
    ours = build_moe_block(8, 16, 5, k, renormalize=norm)
    assert dict(ours.experts.named_parameters()).keys() == dict(stock.experts.named_parameters()).keys()
    ours.experts.load_state_dict(stock.experts.state_dict())
    ours.router.load_state_dict(stock.gate.state_dict())
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        assert torch.allclose(ours(x), stock(x), atol=1e-5)


def test_parts_compose_like_the_builder():
    torch.manual_seed(0)
    built = build_moe_block(8, 16, 4, 2, frozen_expert0=True)
    composed = MoEBlock(TopKRouter(8, 4, 2), FrozenExpert0(GatedExperts(3, 8, 16)))
    assert built.state_dict().keys() == composed.state_dict().keys()
    composed.load_state_dict(built.state_dict())
    x = torch.randn(2, 3, 8)
    assert torch.equal(built(x), composed(x))
    assert isinstance(build_moe_block(8, 16, 2, 1, gated=False).experts, LinearExperts)
    with pytest.raises(LangmoeError, match="router has 3 experts"):
        MoEBlock(TopKRouter(8, 3, 1), GatedExperts(4, 8, 16))


def test_no_weight_method_and_stock_parameter_names():
    """peft's target_parameters looks modules and parameters up by name: nothing may shadow them."""
    b = build_moe_block(8, 16, 3, 2)
    assert not callable(getattr(b, "weight", None))
    assert sorted(n for n, _ in b.named_parameters()) == ["experts.down_proj", "experts.gate_up_proj", "router.weight"]
    assert b.experts.gate_up_proj.shape == (3, 32, 8) and b.experts.down_proj.shape == (3, 8, 16)
    nb = build_moe_block(8, 16, 3, 2, gated=False, bias_in=True, bias_out=True)
    assert sorted(n for n, _ in nb.experts.named_parameters()) == [
        "down_proj", "down_proj_bias", "up_proj", "up_proj_bias"]


def test_add_expert_to_frozen_block_copies_the_frozen_expert():
    b = _block(E=3, k=2, frozen_expert0=True)
    new = b.add_expert(0)
    assert new == 3 and b.num_experts == 4 and b.experts.trainable.num_experts == 3
    x = torch.randn(5, 8)
    assert torch.equal(_ffn_ref(b, x, 3), _ffn_ref(b, x, 0))
    assert torch.equal(b.router.weight[3], b.router.weight[0])
    with routing(b, route_labels=torch.full((5,), 3)):
        assert torch.allclose(b(x), _ffn_ref(b, x, 0), atol=1e-6)
