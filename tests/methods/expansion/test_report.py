"""The expansion report's diagnosis: old languages scored as trained, top-1 and hard-routed to expert 0 (the last
must be the base's function exactly), beside the per-layer routing shares."""

from __future__ import annotations

import math

import pytest
import torch
from expansion_world import fast_config

from langmoe.methods import layermoe, moe_lpr
from langmoe.methods.expansion.report import top1_routing
from langmoe.models.moe import moe_blocks
from langmoe.models.moe_io import load_moe_pretrained
from langmoe.models.routing import routing


@pytest.mark.parametrize("module, over", [(moe_lpr, {"num_experts": 3}), (layermoe, {"budget": 3, "top_k_cls": 1})])
def test_old_languages_hard_routed_to_expert0_score_exactly_as_the_base(tmp_path, module, over):
    rec = module.run(fast_config(tmp_path, **over), tmp_path / "out").record
    ways = rec["old_ways"]
    assert set(ways) == {"trained", "top1", "expert0"}
    for lang in ("en", "de"):
        assert ways["expert0"]["langs"][lang]["ppl"] == rec["before"]["ppl"][lang]  # exactly, not close
        assert ways["trained"]["langs"][lang]["ppl"] == rec["after"]["ppl"][lang]
        assert math.isfinite(ways["top1"]["langs"][lang]["ppl"])
    # the trained experts moved: as trained, the old languages are not scored as the base
    assert any(ways["trained"]["langs"][x]["ppl"] != rec["before"]["ppl"][x] for x in ("en", "de"))
    layer = rec["routing"]["layers"]["0"]
    assert 0.0 <= layer["old_to_expert0"] <= 1.0 and 0.0 <= layer["old_expert0_weight"] <= 1.0


def test_top1_routing_keeps_the_first_choice_alone_and_restores_top_k(tmp_path):
    moe_lpr.run(fast_config(tmp_path, num_experts=3, evaluate=False), tmp_path / "out")
    model = load_moe_pretrained(tmp_path / "out").eval()
    ids = torch.arange(1, 17).reshape(1, 16)
    with torch.no_grad():
        as_trained = model(input_ids=ids).logits
        with top1_routing(model):
            assert [b.router.top_k for b in moe_blocks(model)] == [1, 1]
            first = model(input_ids=ids).logits
    assert [b.router.top_k for b in moe_blocks(model)] == [2, 2]
    assert not torch.equal(first, as_trained)
    with torch.no_grad(), routing(model, route_labels=torch.zeros_like(ids)):
        zero = model(input_ids=ids).logits
    assert not torch.equal(zero, first)
