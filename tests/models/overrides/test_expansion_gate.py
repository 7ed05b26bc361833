"""The expansion gate (`--protect gate`): class 0 sends a token to the frozen expert 0 alone, an earlier group keeps
to expert 0 and its own experts, the newest group uses every expert; it round-trips through the native folder and
a stock export refuses it in one line."""

from __future__ import annotations

import pytest
import torch
from override_fixtures import round_trip, tiny_base

from langmoe.errors import LangmoeError
from langmoe.models.moe import build_moe_block, moe_blocks
from langmoe.models.overrides.expansion_gate import ExpansionGate


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _block(seed: int = 0):
    torch.manual_seed(seed)
    b = build_moe_block(16, 32, 5, 2)  # expert 0, G1 = experts 1-2, G2 = experts 3-4
    b.router.override = ExpansionGate(16, [1, 3], 5, mode="token")
    with torch.no_grad():
        b.router.override.weight.normal_()
    return b


def test_each_class_routes_to_its_experts():
    b = _block()
    x = torch.randn(3, 11, 16)
    gate = b.router.override
    _, cls = gate.classes(x)
    assert set(cls.tolist()) == {0, 1, 2}  # every class is exercised
    dec = b.router(x)
    idx, w = dec.topk_idx, dec.topk_weight
    old, g1, g2 = cls == 0, cls == 1, cls == 2
    assert bool((idx[old, 0] == 0).all()) and torch.equal(w[old, 0], torch.ones(int(old.sum())))
    assert bool((w[old, 1:] == 0).all())
    assert bool(torch.isin(idx[g1], torch.tensor([0, 1, 2])).all())  # the lifelong restriction
    # the newest group: exactly the router's own top-2 (renormalised) over every expert
    ref = torch.softmax(dec.logits[g2].float(), -1).topk(2, -1)
    assert torch.equal(idx[g2], ref.indices)
    torch.testing.assert_close(w[g2], ref.values / ref.values.sum(-1, keepdim=True))
    # an old token's block output is expert 0's output alone
    y = b(x).reshape(-1, 16)
    torch.testing.assert_close(y[old], b.expert_forward(x.reshape(-1, 16)[old], 0), rtol=1e-5, atol=1e-6)


def test_an_untrained_gate_keeps_every_token_on_expert0():
    torch.manual_seed(1)
    b = build_moe_block(16, 32, 3, 2)
    b.router.override = ExpansionGate(16, [1], 3)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(b(x).reshape(-1, 16), b.expert_forward(x.reshape(-1, 16), 0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["sum", "prefix"])
def test_sum_mode_adds_up_evidence_over_the_context(mode):
    """Issue 22: with the running mean ("prefix") a weak per-token sign of the new language never outgrows the old
    class's calibrated bias, however long the context; with the running sum it adds up, so the later positions of
    a long new-language text reach the new experts (the early ones stay on expert 0)."""
    D = 8
    gate = ExpansionGate(D, [1], 3, mode=mode)
    v = torch.zeros(D)
    v[0] = 1.0
    with torch.no_grad():
        gate.weight[1] = v
        gate.bias[0] = 1.0  # the old class's calibration shift
    x = torch.zeros(1, 6, D)
    x[..., 0] = 0.4  # each token: +0.4 of evidence for the new class
    _, cls = gate.classes(x)
    assert gate.needs_full_prefix  # both read every earlier position: no KV cache
    if mode == "sum":
        assert cls.tolist() == [0, 0, 1, 1, 1, 1]  # 0.4 t > 1 from t = 3
    else:
        assert cls.tolist() == [0] * 6
    assert ExpansionGate.from_spec(gate.spec(), D, 3).mode == mode


def test_bad_groups_are_one_line():
    for groups in ([0], [2, 1], [], [1, 9]):
        with pytest.raises(LangmoeError, match="expansion gate groups"):
            ExpansionGate(16, groups, 5)


def test_a_gated_model_round_trips_and_export_refuses_it(tmp_path):
    from langmoe.models.export import export_stock
    from langmoe.models.upcycle import record_structure, upcycle

    model, tok = tiny_base(tmp_path)
    upcycle(model, [0, 1], {0: 3, 1: 3}, {0: 2, 1: 2}, frozen_expert0=True, seed=0)
    for b in moe_blocks(model):
        b.router.override = ExpansionGate(b.hidden_size, [1], 3)
        with torch.no_grad():
            b.router.override.weight.normal_()
    record_structure(model)
    loaded, ref, got = round_trip(model, tok, tmp_path / "native")
    assert torch.equal(ref, got)
    assert isinstance(moe_blocks(loaded)[0].override, ExpansionGate)
    with pytest.raises(LangmoeError, match="expansion gate"):
        export_stock(model, tmp_path / "stock", verify=False)
