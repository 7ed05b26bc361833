"""Router losses computed by hand (plain Python on small tensors) and against transformers' own Switch loss."""

import math

import pytest
import torch

from langmoe.train.router_losses import (
    classifier_loss,
    load_balancing_loss,
    lpr_loss,
    router_classification_loss,
    z_loss,
)

L1 = [[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 3.0, -1.0], [0.5, 0.5, 2.0]]  # 4 tokens, 3 experts
L2 = [[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 4.0], [3.0, 1.0, 1.0]]


def softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def nll(row, label):
    return -math.log(softmax(row)[label])


def lse(row):
    m = max(row)
    return m + math.log(sum(math.exp(x - m) for x in row))


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_router_ce_mean_over_tokens_then_layers():
    labels = [0, 2, -1, 2]  # token 2 ignored
    per_layer = [sum(nll(L[i], labels[i]) for i in (0, 1, 3)) / 3 for L in (L1, L2)]
    got = router_classification_loss([t(L1), t(L2)], torch.tensor(labels))
    assert got.item() == pytest.approx(sum(per_layer) / 2, rel=1e-6)
    assert router_classification_loss(t(L1), torch.tensor([1, -100, -100, -100])).item() == pytest.approx(
        nll(L1[0], 1), rel=1e-6)


def hand_switch(logits, k, mask=None, idx=None):
    """E * sum_e f_e P_e with f_e = top-k assignments to e / (N k), P_e = mean probability."""
    rows = [r for i, r in enumerate(logits) if mask is None or mask[i]]
    chosen = [c for i, c in enumerate(idx) if mask is None or mask[i]] if idx is not None else None
    E, N = len(logits[0]), len(rows)
    probs = [softmax(r) for r in rows]
    counts = [0] * E
    for n, p in enumerate(probs):
        top = chosen[n] if chosen is not None else sorted(range(E), key=lambda e: -p[e])[:k]
        for e in top:
            counts[e] += 1
    f = [c / (N * k) for c in counts]
    P = [sum(p[e] for p in probs) / N for e in range(E)]
    return E * sum(fe * pe for fe, pe in zip(f, P, strict=True))


@pytest.mark.parametrize("k", [1, 2])
def test_load_balancing_by_hand(k):
    got = load_balancing_loss([t(L1), t(L2)], top_k=k)
    assert got.item() == pytest.approx((hand_switch(L1, k) + hand_switch(L2, k)) / 2, rel=1e-6)


def test_load_balancing_with_mask_and_given_assignments():
    mask = torch.tensor([True, False, True, True])
    idx = [[2, 0], [1, 0], [0, 2], [1, 2]]  # not the top-2 of the logits: f must count these
    got = load_balancing_loss(t(L1), topk_idx=torch.tensor(idx), mask=mask)
    assert got.item() == pytest.approx(hand_switch(L1, 2, mask=mask.tolist(), idx=idx), rel=1e-6)
    assert got.item() != pytest.approx(hand_switch(L1, 2, mask=mask.tolist()), rel=1e-3)


@pytest.mark.parametrize("k", [1, 2])
def test_load_balancing_is_transformers_switch_loss_over_k(k):
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    g = torch.Generator().manual_seed(k)
    logits = torch.randn(12, 4, generator=g)
    theirs = load_balancing_loss_func((logits,), num_experts=4, top_k=k)
    assert load_balancing_loss(logits, top_k=k).item() * k == pytest.approx(theirs.item(), rel=1e-5)


def test_lpr_pushes_only_old_tokens_to_expert_zero():
    is_old = torch.tensor([True, False, True, False])
    expected = [(nll(L[0], 0) + nll(L[2], 0)) / 2 for L in (L1, L2)]
    got = lpr_loss([t(L1), t(L2)], is_old)
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    ints = lpr_loss([t(L1), t(L2)], torch.tensor([1, 0, 1, -100]))  # 1 = old; 0, -100 excluded
    assert ints.item() == pytest.approx(got.item(), rel=1e-6)


def test_classifier_loss_by_hand():
    logits = [[1.0, -1.0], [0.0, 2.0], [0.5, 0.5]]
    got = classifier_loss(t(logits), torch.tensor([0, 1, -1]))
    assert got.item() == pytest.approx((nll(logits[0], 0) + nll(logits[1], 1)) / 2, rel=1e-6)


def test_z_loss_by_hand_with_mask():
    got = z_loss([t(L1), t(L2)])
    expected = [sum(lse(r) ** 2 for r in L) / 4 for L in (L1, L2)]
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    m = torch.tensor([False, True, True, False])
    got_m = z_loss(t(L1), mask=m)
    assert got_m.item() == pytest.approx((lse(L1[1]) ** 2 + lse(L1[2]) ** 2) / 2, rel=1e-6)
