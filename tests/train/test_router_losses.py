"""Router losses against hand-computed values on small tensors."""

import math

import pytest
import torch

from langmoe.train import router_losses as rl
from langmoe.train.router_losses import (
    classifier_loss,
    load_balancing_loss,
    lpr_loss,
    router_classification_loss,
    z_loss,
)

LN2 = math.log(2)


def _log(p):
    return torch.tensor(p).log()


def test_router_ce_by_hand_ignores_minus_one_and_minus_100():
    layer1 = _log([[1.0, 3.0], [1.0, 1.0], [5.0, 1.0], [2.0, 1.0]])
    layer2 = torch.zeros(4, 2)
    labels = torch.tensor([1, 0, -100, -1])
    expected1 = (-math.log(0.75) + LN2) / 2
    assert router_classification_loss(layer1, labels).item() == pytest.approx(expected1, rel=1e-6)
    got = router_classification_loss([layer1, layer2], labels.reshape(2, 2))
    assert got.item() == pytest.approx((expected1 + LN2) / 2, rel=1e-6)


def test_load_balancing_top1_and_top2_by_hand():
    probs = [[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.6, 0.4]]
    logits = _log(probs)
    # top-1: f = [3/4, 1/4], P = [0.5875, 0.4125] -> 2 * (0.75*0.5875 + 0.25*0.4125)
    assert load_balancing_loss(logits, top_k=1).item() == pytest.approx(1.0875, rel=1e-6)
    # top-2 of 2 experts: f = [1/2, 1/2] -> 2 * 0.5 * (P0 + P1) = 1
    assert load_balancing_loss(logits, top_k=2).item() == pytest.approx(1.0, rel=1e-6)
    # explicit top-k indices and a mask (drop token 3): f = [2/3, 1/3], P0 = (0.75+0.75+0.25)/3
    idx = torch.tensor([[0], [0], [1], [1]])
    mask = torch.tensor([True, True, True, False])
    p0 = 1.75 / 3
    expected = 2 * (2 / 3 * p0 + 1 / 3 * (1 - p0))
    got = load_balancing_loss([logits, logits], topk_idx=[idx, idx], mask=mask)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_uniform_router_scores_one():
    assert load_balancing_loss(torch.zeros(8, 4), top_k=2).item() == pytest.approx(1.0)


def test_global_batch_uses_summed_statistics(monkeypatch):
    a = _log([[0.75, 0.25], [0.75, 0.25]]).requires_grad_(True)
    b = _log([[0.25, 0.75], [0.6, 0.4]])
    # statistics of the "other rank" (b): counts, prob sums, token count
    pb = torch.softmax(b, -1)
    other = torch.cat([torch.tensor([1.0, 1.0]), pb.sum(0), torch.tensor([2.0])])
    monkeypatch.setattr(rl, "_all_reduce_sum", lambda t: t + other)
    got = load_balancing_loss(a, top_k=1, global_batch=True)
    assert got.item() == pytest.approx(1.0875, rel=1e-6)  # same as the whole 4-token batch
    got.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_global_batch_single_process_group_equals_local(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        logits = torch.randn(10, 4)
        assert load_balancing_loss(logits, top_k=2, global_batch=True).item() == pytest.approx(
            load_balancing_loss(logits, top_k=2).item(), rel=1e-6
        )
    finally:
        dist.destroy_process_group()


def test_lpr_by_hand_excludes_new_tokens():
    logits = torch.stack([_log([1.0, 3.0]), _log([1.0, 1.0]), torch.zeros(2)])
    is_old = torch.tensor([True, False, True])
    assert lpr_loss(logits, is_old).item() == pytest.approx((math.log(4) + LN2) / 2, rel=1e-6)
    assert lpr_loss(logits, torch.tensor([1, 0, 1])).item() == pytest.approx(1.5 * LN2, rel=1e-6)
    none_old = lpr_loss(logits.requires_grad_(True), torch.zeros(3, dtype=torch.bool))
    assert none_old.item() == 0.0
    none_old.backward()


def test_classifier_loss_by_hand():
    logits = torch.stack([_log([3.0, 1.0]), _log([1.0, 1.0]), _log([1.0, 4.0])])
    labels = torch.tensor([0, -100, 1])
    assert classifier_loss(logits, labels).item() == pytest.approx(
        (-math.log(0.75) - math.log(0.8)) / 2, rel=1e-6
    )


def test_z_loss_by_hand():
    logits = torch.stack([torch.zeros(2), _log([1.0, 3.0])])
    assert z_loss(logits).item() == pytest.approx(2.5 * LN2**2, rel=1e-6)
    assert z_loss([logits, torch.zeros(2, 2)]).item() == pytest.approx((2.5 * LN2**2 + LN2**2) / 2, rel=1e-6)


def test_loss_terms_read_router_outputs():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
    from moe_fixtures import tiny_model, tokens

    from langmoe.models.router_recorder import router_outputs
    from langmoe.models.routing import routing
    from langmoe.models.upcycle import upcycle

    torch.manual_seed(0)
    model = upcycle(tiny_model("llama"), [0, 2], 3, top_k=2)
    x = tokens(2, 5)
    groups = torch.tensor([[0] * 5, [2] * 5])
    labels = x.clone()
    labels[1, 3:] = -100
    batch = {
        "input_ids": x,
        "labels": labels,
        "group_ids": groups,
        "lang_ids": torch.tensor([[4] * 5, [7] * 5]),
    }
    with routing(model, route_labels=groups):
        out = model(input_ids=x)
    outs = router_outputs(model)
    assert [o.layer for o in outs] == [0, 2]
    g = groups.reshape(-1).clone()
    g[5 + 3 :] = -100
    ce = rl.router_ce_term()(model, batch, out)
    assert ce.item() == pytest.approx(router_classification_loss([o.logits for o in outs], g).item())
    lpr = rl.lpr_term(old_ids=[7])(model, batch, out)
    is_old = torch.tensor([False] * 5 + [True] * 3 + [False] * 2)
    assert lpr.item() == pytest.approx(lpr_loss([o.logits for o in outs], is_old).item())
    assert rl.load_balance_term()(model, batch, out).item() > 0
    assert rl.z_loss_term()(model, batch, out).item() > 0
