"""Save/load round trips are exact: same state dict, same logits, for gated, non-gated and frozen-expert models."""

import pytest
import torch
from moe_fixtures import tiny_model, tokens

from langmoe.errors import LangmoeError
from langmoe.models.moe import moe_blocks
from langmoe.models.moe_io import load_moe_pretrained, save_moe_pretrained
from langmoe.models.routing import routing
from langmoe.models.upcycle import add_expert, upcycle

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "arch,kw",
    [
        ("llama", dict(layers=[0, 2], num_experts={0: 2, 2: 5}, top_k=2)),
        ("gpt2", dict(layers="all", num_experts=3, top_k=1)),
        ("bloom", dict(layers=[1], num_experts=2, top_k=1)),
        ("qwen3", dict(layers="all", num_experts=3, top_k=2, frozen_expert0=True, classifier_layers=[1])),
    ],
)
def test_save_load_exact(tmp_path, arch, kw):
    model = upcycle(tiny_model(arch), **kw)
    with torch.no_grad():  # make experts differ so a mix-up would show
        for b in moe_blocks(model):
            for t in b.experts.parameters():
                t.add_(torch.randn_like(t) * 0.1)
    add_expert(model, moe_blocks(model)[0].layer_idx, 1)
    out = save_moe_pretrained(model, None, tmp_path / "m")
    loaded = load_moe_pretrained(out)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert loaded.config.langmoe == model.config.langmoe
    x = tokens()
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
        with routing(model, route_labels=torch.ones_like(x)):
            ra = model(x).logits
        with routing(loaded, route_labels=torch.ones_like(x)):
            rb = loaded(x).logits
    assert torch.equal(ra, rb)


def test_save_overwrites_atomically_and_load_errors(tmp_path):
    model = upcycle(tiny_model("llama"), [1], 2, top_k=1)
    save_moe_pretrained(model, None, tmp_path / "m")
    save_moe_pretrained(model, None, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with pytest.raises(LangmoeError, match="upcycle it first"):
        save_moe_pretrained(tiny_model("llama"), None, tmp_path / "d")
    tiny_model("llama").save_pretrained(tmp_path / "dense")
    with pytest.raises(LangmoeError, match="no 'langmoe'"):
        load_moe_pretrained(tmp_path / "dense")
    with pytest.raises(LangmoeError, match="no config.json"):
        load_moe_pretrained(tmp_path / "nothing")


def test_bf16_round_trip_is_exact(tmp_path):
    model = upcycle(tiny_model("qwen2"), [0, 1], 3, top_k=2).to(torch.bfloat16)
    save_moe_pretrained(model, None, tmp_path / "m")
    loaded = load_moe_pretrained(tmp_path / "m")
    for k, v in model.state_dict().items():
        assert loaded.state_dict()[k].dtype == torch.bfloat16 and torch.equal(loaded.state_dict()[k], v), k
