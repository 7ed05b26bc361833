"""The language gate as a route override: old tokens keep their routing bit for bit, gated tokens go to the added
expert alone, the prefix features are causal running means, an untrained class sends nothing, a gated model
round-trips exactly through the native folder (and refuses a stock export), and generation asks the gate whether
it needs the whole prefix (prefix mode does, token mode does not)."""

import copy
import sys
from pathlib import Path

import pytest
import torch

from langmoe.errors import LangmoeError
from langmoe.models.moe import build_moe_block, moe_blocks, needs_full_prefix
from langmoe.models.overrides.gate import LanguageGate, add_gated_expert
from langmoe.models.upcycle import add_expert

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _gated_block(seed: int = 0, mode: str = "prefix"):
    torch.manual_seed(seed)
    b = build_moe_block(16, 32, 3, 2)
    x = torch.randn(2, 7, 16)
    before = b(x)
    assert add_gated_expert(b, 1, mode) == 3
    assert isinstance(b.override, LanguageGate) and (b.override.first_new, b.override.num_new) == (3, 1)
    return b, x, before


def test_old_class_keeps_the_old_routing_bit_for_bit():
    b, x, before = _gated_block()
    with torch.no_grad():  # a trained-looking gate whose old class always wins
        b.router.override.weight.normal_()
        b.router.override.bias[0] = 1e3
    assert torch.equal(b(x), before)


@pytest.mark.parametrize("mode", ["prefix", "token"])
def test_gated_tokens_use_the_added_expert_alone_and_the_others_are_unchanged(mode):
    b, x, before = _gated_block(1, mode)
    with torch.no_grad():
        b.router.override.weight.normal_()
    logits, target = b.router.override.classify(x)
    gated = target >= 0
    assert 0 < int(gated.sum()) < gated.numel()  # some of each, so both paths are checked
    assert set(target[gated].tolist()) == {3}
    y = b(x).reshape(-1, 16)
    flat = x.reshape(-1, 16)
    torch.testing.assert_close(y[gated], b.expert_forward(flat[gated], 3), rtol=1e-5, atol=1e-6)
    assert torch.equal(y[~gated], before.reshape(-1, 16)[~gated])


def test_prefix_features_are_causal_running_means():
    g = LanguageGate(16, 3, 1, "prefix")
    x = torch.randn(2, 6, 16)
    f = g.features(x).reshape(2, 6, 16)
    for t in range(6):
        torch.testing.assert_close(f[:, t], x[:, : t + 1].mean(dim=1), rtol=1e-5, atol=1e-6)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 2, 16)  # the future changes ...
    assert torch.equal(g.features(x2).reshape(2, 6, 16)[:, :4], f[:, :4])  # ... the past's features do not


def test_untrained_gate_and_a_new_class_send_nothing_to_the_added_experts():
    g = LanguageGate(16, 3, 1)
    x = torch.randn(3, 5, 16)
    assert bool((g.classify(x)[1] == -1).all())  # all-zero: classes tie, argmax takes class 0
    with torch.no_grad():
        g.weight.normal_()
    trained = g.classify(x)[1]
    assert g.add_class() == 4 and g.num_new == 2 and g.weight.shape == (3, 16)
    after = g.classify(x)[1]
    assert bool((after != 4).all()) and torch.equal(after, trained)  # the copied class ties with "old"


def test_gate_settings_are_checked():
    with pytest.raises(LangmoeError, match="prefix"):
        LanguageGate(16, 3, 1, "sequence")
    with pytest.raises(LangmoeError, match="does not match"):
        LanguageGate.from_spec({"kind": "language_gate", "first_new": 3, "num_new": 2}, 16, 3)
    b = build_moe_block(16, 32, 3, 2, override=LanguageGate(16, 2, 1))
    with pytest.raises(LangmoeError, match="token"):
        add_gated_expert(b, 0, "token")  # the gate is "prefix"


def test_gated_model_round_trips_and_refuses_stock_export(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))  # tiny_world, also when run alone
    from tiny_world import make_base
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langmoe.methods.dmoe import build
    from langmoe.models.export import export_stock
    from langmoe.models.moe_format import moe_structure
    from langmoe.models.moe_io import load_model_any, save_moe_pretrained

    base = make_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(str(base))
    dense = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model = build.build_dmoe(copy.deepcopy(dense), [0, 2], 2, 2)
    assert build.add_language_expert(model, 1, "prefix") == 2
    assert build.add_language_expert(model, 0, "prefix") == 3  # lifelong: one more class on the same gates
    with pytest.raises(LangmoeError, match="language gate"):
        build.add_language_expert(model, 0)  # mixing a gated expert with a router-row one is refused
    torch.manual_seed(0)
    with torch.no_grad():
        for b in moe_blocks(model):
            b.router.override.weight.normal_()
    spec = moe_structure(model).layers[0].route_override
    assert spec == {"kind": "language_gate", "first_new": 2, "num_new": 2, "mode": "prefix"}
    assert needs_full_prefix(model)
    with pytest.raises(LangmoeError, match="through the gate"):
        add_expert(model, 0, 0)  # upcycle's add_expert asks the override, which owns its added experts
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    model.eval()
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    save_moe_pretrained(model, tok, tmp_path / "gated")
    loaded, _ = load_model_any(tmp_path / "gated")
    loaded.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, ref)
    assert loaded.generation_config.use_cache is False  # the gate reads the whole prefix
    assert [b.override.num_new for b in moe_blocks(loaded)] == [2, 2]
    with pytest.raises(LangmoeError, match="language gate"):
        export_stock(loaded, tmp_path / "stock", "qwen2_moe", tokenizer=tok)
    assert not (tmp_path / "stock").exists()

    # generation sees the whole prefix at every step: greedy output = argmax of full forwards, token by token
    from langmoe.generate import encode_prompt, generate_text

    seen = []
    real = loaded.generate
    loaded.generate = lambda **kw: (seen.append(kw["generation_config"].use_cache), real(**kw))[1]
    out = generate_text(loaded, tok, "ab", max_new_tokens=6, greedy=True)[0]
    assert seen == [False]  # a cached step would show the gate one token, not the prefix
    ids = torch.tensor([encode_prompt(tok, "ab")])
    with torch.no_grad():
        for _ in range(len(out.token_ids)):
            ids = torch.cat([ids, loaded(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    assert out.token_ids == ids[0, -len(out.token_ids):].tolist() and len(out.token_ids) > 0


def test_token_gate_keeps_the_kv_cache(tmp_path):
    from override_fixtures import generation_cache_flags, round_trip, tiny_base

    from langmoe.methods.dmoe import build

    dense, tok = tiny_base(tmp_path)
    model = build.build_dmoe(dense, [0, 2], 2, 2)
    build.add_language_expert(model, 1, "token")
    with torch.no_grad():
        for b in moe_blocks(model):
            b.override.weight.normal_()
    loaded, ref, got = round_trip(model, tok, tmp_path / "m")
    assert torch.equal(got, ref) and not needs_full_prefix(loaded)
    assert loaded.generation_config.use_cache is not False
    assert generation_cache_flags(loaded, tok) == [True]
