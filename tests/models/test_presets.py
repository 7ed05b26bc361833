from __future__ import annotations

import pytest
import torch

from langmoe.errors import LangmoeError
from langmoe.models.presets import PRESET_VOCAB, PRESETS, count_parameters, create_model, preset_config


def test_preset_sizes():
    torch.set_num_threads(1)
    tiny = count_parameters(create_model("tiny", vocab_size=4096))
    # 4 x (4*128^2 + 3*128*512) + norms (2*128 per layer + final 128)
    assert tiny["non_embedding"] == 4 * (4 * 128 * 128 + 3 * 128 * 512 + 2 * 128) + 128
    assert tiny["embedding"] == 2 * 4096 * 128
    assert tiny["total"] == tiny["embedding"] + tiny["non_embedding"]
    small = preset_config("small", 8192)
    assert small.num_hidden_layers == 6 and small.hidden_size == 256
    assert set(PRESET_VOCAB) == set(PRESETS)


def test_small_is_about_five_million():
    cfg = preset_config("small", 8192)
    body = cfg.num_hidden_layers * (4 * cfg.hidden_size**2 + 3 * cfg.hidden_size * cfg.intermediate_size)
    assert 4.5e6 < body < 5.5e6


def test_create_model_is_seeded_and_sized():
    torch.set_num_threads(1)
    a = create_model("tiny", vocab_size=300, max_positions=512, seed=3)
    b = create_model("tiny", vocab_size=300, max_positions=512, seed=3)
    c = create_model("tiny", vocab_size=300, max_positions=512, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])
    assert a.config.max_position_embeddings == 512 and a.config.vocab_size == 300
    assert a.config.eos_token_id == 0
    out = a(input_ids=torch.randint(0, 300, (2, 9)))
    assert out.logits.shape == (2, 9, 300)


def test_count_parameters_tied():
    m = create_model("tiny", vocab_size=100)
    m.lm_head.weight = m.model.embed_tokens.weight
    n = count_parameters(m)
    assert n["embedding"] == 100 * 128
    assert n["total"] == n["embedding"] + n["non_embedding"]


def test_bad_preset_and_sizes():
    with pytest.raises(LangmoeError, match="unknown preset"):
        create_model("huge", 100)
    with pytest.raises(LangmoeError):
        preset_config("tiny", 1)
    with pytest.raises(LangmoeError):
        preset_config("tiny", 100, max_positions=0)


def test_tiny_moe_preset_is_a_stock_qwen3_moe_with_tinys_active_size():
    """The MoE base is plain transformers (Qwen3-MoE, 8 experts, top-2) and one token uses as many parameters
    as the dense tiny preset: the two active experts together are tiny's MLP."""
    from transformers import Qwen3MoeForCausalLM

    from langmoe.models.presets import active_parameters

    moe = create_model("tiny-moe", vocab_size=300)
    dense = create_model("tiny", vocab_size=300)
    assert isinstance(moe, Qwen3MoeForCausalLM)
    assert (moe.config.num_experts, moe.config.num_experts_per_tok) == (8, 2)
    n_moe, n_dense = active_parameters(moe), active_parameters(dense)
    assert active_parameters(dense) == count_parameters(dense)["total"]
    # the routers (4 x 128 x 8) and Qwen3's q/k norms are the only active extras over the dense tiny preset
    extras = 4 * (128 * 8 + 2 * 32)
    assert n_moe == n_dense + extras
    assert count_parameters(moe)["total"] > 3 * n_dense  # the MoE holds far more than it uses per token
