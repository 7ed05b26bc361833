"""`--protect gate`: after stage 2 every router gets a fitted, calibrated expansion gate; an old-language token
whose whole prefix stays in the gate's old class is scored exactly as by the base (up to matmul layout); the
measured intrusion respects the bound on the calibration half; the trained experts moved; a lifelong step keeps
the earlier group's router rows and gives the gate one class per group."""

from __future__ import annotations

import pytest
import torch
from expansion_world import fast_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from langmoe.data.corpus import open_corpus
from langmoe.data.packing import pack_corpus
from langmoe.errors import LangmoeError
from langmoe.methods import layermoe, moe_lpr
from langmoe.methods.expansion.protect import gate_classes, group_firsts
from langmoe.models.moe import moe_blocks
from langmoe.models.moe_io import load_moe_pretrained
from langmoe.models.overrides.expansion_gate import ExpansionGate
from langmoe.models.router_recorder import RouterRecorder
from langmoe.models.routers import router_weight


def test_classes_and_groups_follow_the_lineage():
    lineage = {"generations": [{"new": ["es"], "experts": {"0": 2, "1": 1}}]}
    assert gate_classes(["en"], lineage, ["it"], ["en", "es", "de"]) == {"en": 0, "de": 0, "es": 1, "it": 2}
    assert group_firsts(lineage, {0: 1, 1: 2}, [0, 1]) == {0: [1, 3], 1: [1, 2]}
    assert group_firsts({}, {0: 3}, [0]) == {0: [1]}


def _old_positions_kept(model, ids):
    """(per position: every layer's gate class is 0 at this position and at every earlier one; the share of
    positions whose every layer's class is 0)."""
    with RouterRecorder(model, accumulate=False) as rec, torch.no_grad():
        model(input_ids=ids)
        outs = rec.last_outputs()
    old = torch.ones(ids.shape, dtype=torch.bool)
    for o in outs:
        cls = o.override_logits_of("expansion_gate").argmax(-1).reshape(ids.shape)
        old &= cls == 0
    return old.int().cumprod(dim=1).bool(), float(old.float().mean())


def test_gate_keeps_old_tokens_on_the_base_function(tmp_path):
    cfg = fast_config(tmp_path, num_experts=3, protect="gate", max_intrusion=0.05)
    res = moe_lpr.run(cfg, tmp_path / "out")
    rec = res.record
    assert rec["protect"]["kind"] == "gate" and set(rec["protect"]["layers"]) == {"0", "1"}
    assert rec["protect"]["mode"] == "sum"  # the default: evidence adds up over the context (issue 22)
    for layer in rec["protect"]["layers"].values():
        assert all(v <= 0.05 + 1e-9 for v in layer["old_intrusion"].values())  # on the calibration half
    model = load_moe_pretrained(tmp_path / "out").eval()
    assert all(isinstance(b.override, ExpansionGate) and b.override.mode == "sum" for b in moe_blocks(model))
    base = AutoModelForCausalLM.from_pretrained(cfg["model"]).eval()
    # held-out old-language text (test split), scored per position
    tok = AutoTokenizer.from_pretrained(cfg["model"])
    blocks = pack_corpus(open_corpus(cfg["corpus"]), tok, ["en", "de"], "test", 16, max_tokens_per_lang=400)
    ids = blocks.tokens[: min(16, len(blocks))]
    kept, share = _old_positions_kept(model, ids)
    assert share > 0.9  # held-out old tokens stay in the old class (calibrated bound 5% per layer, 2 layers)
    assert int(kept.sum()) >= 64  # positions whose whole prefix stayed old: scored exactly as the base below
    with torch.no_grad():
        got, ref = model(input_ids=ids).logits, base(input_ids=ids).logits
    torch.testing.assert_close(got[kept], ref[kept], rtol=1e-5, atol=1e-5)
    # the trained experts moved away from the FFN they copied
    b = moe_blocks(model)[0]
    x = torch.randn(5, b.hidden_size)
    assert not torch.allclose(b.expert_forward(x, 1), b.expert_forward(x, 0))


def test_gate_needs_stage2(tmp_path):
    with pytest.raises(LangmoeError, match="protect gate"):
        moe_lpr.run(fast_config(tmp_path, protect="gate", stage2={"steps": 0}, replay_share=0.0), tmp_path / "o")


def test_lifelong_gate_keeps_the_earlier_groups_router_rows(tmp_path):
    cfg1 = fast_config(tmp_path, budget=2, protect="gate", max_intrusion=0.05)
    layermoe.run(cfg1, tmp_path / "g1")
    g1 = load_moe_pretrained(tmp_path / "g1")
    assert layermoe.run(cfg1 | {"model": str(tmp_path / "g1"), "new": ["fr"], "old": ["en", "de", "es", "it"],
                                "budget": 2}, tmp_path / "g2").record["protect"]["classes"]["fr"] == 2
    g2 = load_moe_pretrained(tmp_path / "g2")
    for b1, b2 in zip(moe_blocks(g1), moe_blocks(g2), strict=True):
        n = b1.num_experts
        assert torch.equal(router_weight(b2)[:n], router_weight(b1)[:n])  # frozen in both G2 stages
        assert b2.override.group_first == [1, n] and b2.override.weight.shape[0] == 3
