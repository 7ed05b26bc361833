"""Structural adapter discovery: edge cases the architecture matrix does not reach.

Custom MLPs check that what shape alone cannot settle (gate vs up, fused order, an inline activation) is read right,
and that FFNs the MoE block cannot express are refused with one line instead of upcycling silently wrong.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import transformers as tf
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.adapters import ADAPTERS, ffn_forward, get_adapter, register_adapter
from langmoe.models.moe import moe_blocks
from langmoe.models.upcycle import upcycle

torch.set_num_threads(1)
D, FF = 16, 24


def llama(**kw):
    torch.manual_seed(0)
    cfg = dict(hidden_size=D, intermediate_size=FF, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
               vocab_size=64, max_position_embeddings=32)
    return tf.LlamaForCausalLM(tf.LlamaConfig(**{**cfg, **kw})).eval()


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


# ---- custom MLPs -------------------------------------------------------------------------------------------------


class NeutralNames(nn.Module):
    """Mixtral-style w1/w2/w3 names registered up-first: only running it tells which one is the gate."""

    def __init__(self):
        super().__init__()
        self.w3 = nn.Linear(D, FF, bias=True)  # up (registered first)
        self.w1 = nn.Linear(D, FF, bias=False)  # gate
        self.w2 = nn.Linear(FF, D, bias=True)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class FusedUpGate(nn.Module):
    """A fused projection with the up half first (Phi-3 puts the gate first)."""

    def __init__(self):
        super().__init__()
        self.gate_up = nn.Linear(D, 2 * FF)
        self.down = nn.Linear(FF, D)

    def forward(self, x):
        up, gate = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.gelu(gate) * up)


class InlineAct(nn.Module):
    """No stored activation: F.relu inline."""

    def __init__(self):
        super().__init__()
        self.fc_in, self.fc_out = nn.Linear(D, FF), nn.Linear(FF, D)

    def forward(self, x):
        return self.fc_out(F.relu(self.fc_in(x)))


class InnerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.norm, self.act = nn.Linear(D, FF), nn.Linear(FF, D), nn.LayerNorm(FF), nn.GELU()

    def forward(self, x):
        return self.fc2(self.norm(self.act(self.fc1(x))))


class AddNotMultiply(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(D, FF), nn.Linear(D, FF), nn.Linear(FF, D)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) + self.up_proj(x))


def _check_reading(mlp: nn.Module):
    ffn = get_adapter(llama()).extract(mlp)
    x = torch.randn(3, D) * 3
    with torch.no_grad():
        assert torch.allclose(ffn_forward(ffn, x), mlp(x), atol=1e-5)
    return ffn


def test_gate_is_found_by_running_the_mlp_not_by_name():
    torch.manual_seed(1)
    mlp = NeutralNames()
    ffn = _check_reading(mlp)
    assert ffn.gated and ffn.extra["gate"] == "w1" and ffn.extra["up"] == "w3"
    assert torch.equal(ffn.w_gate, mlp.w1.weight.t())
    assert torch.equal(ffn.b_gate, torch.zeros(FF)) and torch.equal(ffn.b_up, mlp.w3.bias)  # both or neither


def test_fused_halves_in_either_order():
    torch.manual_seed(2)
    mlp = FusedUpGate()
    ffn = _check_reading(mlp)
    assert ffn.extra["layout"] == "fused-up-gate"
    assert torch.equal(ffn.w_up, mlp.gate_up.weight[:FF].t()) and torch.equal(ffn.w_gate, mlp.gate_up.weight[FF:].t())
    assert torch.equal(ffn.b_gate, mlp.gate_up.bias[FF:])


def test_phi3_fused_gate_up_split_by_hand():
    torch.manual_seed(3)
    model = tf.Phi3ForCausalLM(tf.Phi3Config(hidden_size=D, intermediate_size=FF, num_hidden_layers=1,
                                             num_attention_heads=2, vocab_size=64, pad_token_id=0))
    ad = get_adapter(model)
    mlp = ad.get_mlp(ad.layers(model)[0])
    ffn = ad.extract(mlp)
    w = mlp.gate_up_proj.weight  # [2F, D]: gate rows first
    assert ffn.extra["layout"] == "fused-gate-up"
    assert torch.equal(ffn.w_gate, w[:FF].t()) and torch.equal(ffn.w_up, w[FF:].t())
    assert torch.equal(ffn.w_out, mlp.down_proj.weight.t())


def test_inline_activation_is_found():
    torch.manual_seed(4)
    ffn = _check_reading(InlineAct())
    assert not ffn.gated and ffn.extra["layout"] == "two-matrix"


def test_inexpressible_ffns_are_refused_in_one_line():
    ad = get_adapter(llama())
    with pytest.raises(LangmoeError, match="internal norm") as e:
        ad.extract(InnerNorm())
    one_line_error(e)
    with pytest.raises(LangmoeError, match="cannot express") as e:
        ad.extract(AddNotMultiply())
    one_line_error(e)


def test_intermediate_equal_to_hidden():
    """F == D: every projection is square, the output one is told by name/order."""
    dense = llama(intermediate_size=D)
    x = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        ref = dense(x).logits
        moe = upcycle(copy.deepcopy(dense), "all", 2, top_k=2)
        assert (moe(x).logits - ref).abs().max().item() <= 1e-5


def test_bf16_model_reads_with_a_relative_tolerance():
    model = llama().to(torch.bfloat16)
    ad = get_adapter(model)
    ffn = ad.extract(ad.get_mlp(ad.layers(model)[0]))
    assert ffn.w_gate.dtype == torch.bfloat16 and ffn.gated


# ---- layers, overrides, configs, existing MoEs ------------------------------------------------------------------


class ToyLayer(nn.Module):
    def __init__(self, mlp_cls=NeutralNames, second: str | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(D)
        self.block = mlp_cls()
        if second:
            setattr(self, second, InlineAct())

    def forward(self, x):
        return x + self.block(self.norm(x))


class ToyModel(nn.Module):
    """Not a transformers model at all: an embedding, a ModuleList of layers, a head and a config namespace."""

    def __init__(self, second: str | None = None):
        super().__init__()
        self.config = SimpleNamespace(model_type="toy_decoder", hidden_size=D, num_hidden_layers=3)
        self.emb = nn.Embedding(40, D)
        self.stack = nn.ModuleList(ToyLayer(second=second) for _ in range(3))
        self.head = nn.Linear(D, 40)

    def forward(self, input_ids):
        h = self.emb(input_ids)
        for layer in self.stack:
            h = layer(h)
        return self.head(h)


def test_any_module_tree_is_discovered_and_upcycled():
    torch.manual_seed(5)
    model = ToyModel().eval()
    ad = get_adapter(model)
    assert ad.layers_path == ("stack",) and ad.mlp_attr == "block" and ad.gated
    x = torch.randint(0, 40, (2, 5))
    with torch.no_grad():
        ref = model(x)
        upcycle(model, [0, 2], 3, top_k=2)
        assert (model(x) - ref).abs().max().item() <= 1e-5
    assert [b.layer_idx for b in moe_blocks(model)] == [0, 2]


def test_ambiguous_ffn_children_need_an_override():
    torch.manual_seed(6)
    model = ToyModel(second="side")
    with pytest.raises(LangmoeError, match="several children look like an FFN") as e:
        get_adapter(model)
    one_line_error(e)
    register_adapter("toy_decoder", mlp_attr="side")
    try:
        ad = get_adapter(ToyModel(second="side"))
        assert ad.mlp_attr == "side" and not ad.gated
    finally:
        ADAPTERS.pop("toy_decoder")


class MaskedSide(InlineAct):
    """FFN-shaped but needs a mask, like an attention block with fused qkv + output projections."""

    def forward(self, x, attention_mask):
        return super().forward(x) * attention_mask


def test_ffn_shaped_child_that_needs_more_inputs_is_not_the_ffn():
    model = ToyModel()
    for layer in model.stack:
        layer.side = MaskedSide()
    assert get_adapter(model).mlp_attr == "block"


def test_config_only_matches_the_model():
    model = tf.AutoModelForCausalLM.from_config(tf.GPTNeoXConfig(hidden_size=D, intermediate_size=FF,
                                                                 num_hidden_layers=2, num_attention_heads=2,
                                                                 vocab_size=64))
    a, b = get_adapter(model), get_adapter(model.config)
    assert (a.layers_path, a.mlp_attr, a.gated) == (b.layers_path, b.mlp_attr, b.gated) == (
        ("gpt_neox", "layers"), "mlp", False)


def test_adapter_of_an_upcycled_model_finds_the_moe_blocks():
    moe = upcycle(llama(), "all", 2)
    ad = get_adapter(copy.deepcopy(moe))  # fresh discovery: every MLP is already an MoE block
    assert ad.layers_path == ("model", "layers") and ad.mlp_attr == "mlp" and ad.gated


def test_ffn_projections_directly_in_the_layer_are_refused():
    cfg = tf.OPTConfig(hidden_size=D, ffn_dim=FF, num_hidden_layers=2, num_attention_heads=2, vocab_size=64,
                       word_embed_proj_dim=D, max_position_embeddings=32)
    with pytest.raises(LangmoeError, match=r"keeps its FFN projections \(fc1, fc2\) directly") as e:
        get_adapter(tf.AutoModelForCausalLM.from_config(cfg))
    one_line_error(e)


@pytest.mark.parametrize("make", [
    lambda: tf.MixtralConfig(hidden_size=D, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                             intermediate_size=FF, num_local_experts=2, vocab_size=64),
    lambda: tf.Qwen2MoeConfig(hidden_size=D, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                              intermediate_size=FF, moe_intermediate_size=8, shared_expert_intermediate_size=8,
                              num_experts=4, num_experts_per_tok=2, vocab_size=64),
    lambda: tf.OlmoeConfig(hidden_size=D, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                           intermediate_size=FF, num_experts=4, num_experts_per_tok=2, vocab_size=64),
])
def test_existing_moe_is_refused(make):
    cfg = make()
    for obj in (tf.AutoModelForCausalLM.from_config(cfg), cfg):
        with pytest.raises(LangmoeError, match="already a Mixture-of-Experts.*routing analysis") as e:
            get_adapter(obj)
        assert f"'{cfg.model_type}'" in one_line_error(e)


@pytest.mark.parametrize(("make", "p"), [
    (lambda: tf.FalconConfig(hidden_size=D, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                             hidden_dropout=0.3), 0.0),  # FalconMLP stores hidden_dropout but never applies it
    (lambda: tf.BloomConfig(hidden_size=D, n_layer=1, n_head=2, vocab_size=64, hidden_dropout=0.3), 0.3),
    (lambda: tf.Starcoder2Config(hidden_size=D, intermediate_size=FF, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=2, vocab_size=64, residual_dropout=0.2), 0.2),
    (lambda: tf.GPT2Config(n_embd=D, n_layer=1, n_head=2, vocab_size=64, resid_pdrop=0.15), 0.15),
])
def test_dropout_is_what_the_mlp_applies(make, p):
    model = tf.AutoModelForCausalLM.from_config(make())
    ad = get_adapter(model)
    assert ad.dropout(model.config) == pytest.approx(p)
    upcycle(model, [0], 2)
    assert moe_blocks(model)[0].dropout_p == pytest.approx(p)
