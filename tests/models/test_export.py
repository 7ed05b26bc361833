"""Export to stock transformers MoE architectures: vanilla from_pretrained gives equal logits."""

import pytest
import torch
from moe_fixtures import tiny_model, tokens

from langmoe.errors import LangmoeError
from langmoe.models.export import export_stock, max_logit_diff
from langmoe.models.moe import moe_blocks
from langmoe.models.upcycle import upcycle

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")


def _perturb(model):
    """Make experts and routers differ so routing matters and a wrong mapping would show."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for b in moe_blocks(model):
            for w in b.experts.parameters():
                w.add_(torch.randn(w.shape, generator=g) * 0.05)
            b.router.weight.normal_(0, 1.0, generator=g)
    return model


@pytest.mark.parametrize(
    "arch,src,layers,k,kw",
    [
        ("qwen2_moe", "llama", [0, 2], 2, {}),
        ("qwen2_moe", "qwen2", [1], 1, {}),
        ("qwen2_moe", "mistral", "all", 2, {"renormalize": False}),
        ("qwen3_moe", "qwen3", [0, 1], 2, {"frozen_expert0": True}),
        ("mixtral", "llama", "all", 2, {}),
        ("mixtral", "mistral", "all", 1, {}),
    ],
)
def test_export_equal_logits_in_vanilla_transformers(tmp_path, arch, src, layers, k, kw):
    from transformers import AutoModelForCausalLM

    model = _perturb(upcycle(tiny_model(src), layers, 4, top_k=k, **kw))
    used = export_stock(model, tmp_path / "out", arch=arch, verify=False)
    assert used == arch
    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert stock.config.model_type == arch
    assert max_logit_diff(model, stock, length=16) <= 1e-5
    x = tokens()
    with torch.no_grad():
        assert (model(x).logits - stock(x).logits).abs().max() <= 1e-5


def test_auto_arch_choice(tmp_path):
    assert export_stock(upcycle(tiny_model("llama"), "all", 2, top_k=1), tmp_path / "a") == "mixtral"
    assert export_stock(upcycle(tiny_model("llama"), [1], 2, top_k=1), tmp_path / "b") == "qwen2_moe"
    assert export_stock(upcycle(tiny_model("qwen3"), [1], 2, top_k=1), tmp_path / "c") == "qwen3_moe"


@pytest.mark.parametrize(
    "src,up,arch,msg",
    [
        ("gpt2", dict(layers=[0], num_experts=2), "auto", "gated FFNs"),
        ("llama", dict(layers=[0, 1], num_experts={0: 2, 1: 3}), "auto", "same experts"),
        ("llama", dict(layers=[0], num_experts=3, frozen_expert0=True, classifier_layers=[0]), "auto", "classifier"),
        ("llama", dict(layers=[0], num_experts=2), "mixtral", "every layer"),
        ("llama", dict(layers=[0], num_experts=2), "qwen3_moe", "cannot export model_type 'llama'"),
        ("gemma", dict(layers=[0], num_experts=2), "auto", "silu|no stock MoE export"),
    ],
)
def test_export_refuses_with_reason(tmp_path, src, up, arch, msg):
    model = upcycle(tiny_model(src), **up)
    with pytest.raises(LangmoeError, match=msg):
        export_stock(model, tmp_path / "x", arch=arch)
    assert not (tmp_path / "x").exists()
