"""The LayerMoE classifier as a route override: outputs computed by hand (old tokens to expert 0 alone, the others
learned top-k), built like the builder composes it, an exact save/load round trip, and generation that asks the
override whether it needs the whole prefix (sequence mode does)."""

import pytest
import torch
from moe_fixtures import block, ffn_ref, last_output, recorded, reference
from override_fixtures import generation_cache_flags, round_trip, tiny_base

from langmoe.errors import LangmoeError
from langmoe.models.moe import (
    FrozenExpert0,
    GatedExperts,
    MoEBlock,
    TopKRouter,
    build_moe_block,
    needs_full_prefix,
)
from langmoe.models.moe_format import moe_structure
from langmoe.models.overrides.classifier import RoutingClassifier
from langmoe.models.upcycle import upcycle

torch.set_num_threads(1)


@pytest.mark.parametrize("mode", ["token", "sequence"])
def test_classifier_sends_old_tokens_to_expert0(mode):
    b = recorded(block(E=4, k=2, frozen_expert0=True, override=lambda: RoutingClassifier(8, mode)))
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        b.override.weight.normal_()
    y = b(x)
    ro = last_output(b)
    h = x.reshape(-1, 8)
    if mode == "token":
        cl = h @ b.override.weight.T
        old = cl.argmax(-1) == 0
        assert ro.override_logits_of("classifier").shape == (10, 2)
    else:
        cl = x.mean(1) @ b.override.weight.T
        old = (cl.argmax(-1) == 0).repeat_interleave(5)
        assert ro.override_logits_of("classifier").shape == (2, 2)
    assert ro.override == "classifier" and ro.override_logits_of("language_gate") is None
    probs = torch.softmax(h @ b.router.weight.T, -1)
    w, idx = probs.topk(2, -1)
    w = w / w.sum(-1, keepdim=True)
    ref = reference(b, h, idx, w)
    ref[old] = ffn_ref(b, h[old], 0) if old.any() else ref[old]
    assert 0 < int(old.sum()) < old.numel() or mode == "sequence"  # token mode: both paths checked
    assert torch.allclose(y.reshape(-1, 8), ref, atol=1e-5)
    assert bool((ro.topk_idx[old] == 0).all())


def test_parts_compose_like_the_builder():
    torch.manual_seed(0)
    built = build_moe_block(8, 16, 4, 2, frozen_expert0=True, override=RoutingClassifier(8, "sequence"))
    router = TopKRouter(8, 4, 2, override=RoutingClassifier(8, "sequence"))
    composed = MoEBlock(router, FrozenExpert0(GatedExperts(3, 8, 16)))
    assert built.state_dict().keys() == composed.state_dict().keys()
    assert "router.override.weight" in built.state_dict()
    composed.load_state_dict(built.state_dict())
    x = torch.randn(2, 3, 8)
    assert torch.equal(built(x), composed(x))
    with pytest.raises(LangmoeError, match="token' or 'sequence"):
        RoutingClassifier(8, "prefix")


@pytest.mark.parametrize("mode", ["token", "sequence"])
def test_classifier_round_trip_is_exact_and_generation_asks_the_override(tmp_path, mode):
    dense, tok = tiny_base(tmp_path)
    model = upcycle(dense, [0, 2], 3, 2, frozen_expert0=True, classifier_layers=[2], classifier_mode=mode)
    spec = moe_structure(model).layers[2].route_override
    assert spec == {"kind": "classifier", "mode": mode} and moe_structure(model).layers[0].route_override is None
    with torch.no_grad():
        model.model.layers[2].mlp.override.weight.normal_()
    loaded, ref, got = round_trip(model, tok, tmp_path / "m")
    assert torch.equal(got, ref)
    assert isinstance(loaded.model.layers[2].mlp.override, RoutingClassifier)
    # sequence mode averages the whole sequence: no KV cache (saved, and asked again at generation)
    assert needs_full_prefix(loaded) == (mode == "sequence")
    assert (loaded.generation_config.use_cache is False) == (mode == "sequence")
    assert generation_cache_flags(loaded, tok) == [mode != "sequence"]
