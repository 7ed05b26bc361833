"""LayerMoE similarity and allocation against hand computations."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
import torch

from langmoe.errors import LangmoeError
from langmoe.methods.layermoe.allocation import (
    allocate,
    new_experts_at,
    random_allocation,
    solve_delta,
    top_k_layers,
)
from langmoe.methods.layermoe.similarity import layer_similarity, mean_pair_cosine, mean_unit


def test_mean_pair_cosine_hand_values():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([[3.0, 3.0]])
    # cos(x1, y) = cos(x2, y) = 1/sqrt(2)
    assert mean_pair_cosine(x, y) == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    # x with itself: pairs (1,1)=1, (1,2)=0, (2,1)=0, (2,2)=1 -> 0.5
    assert mean_pair_cosine(x, x) == pytest.approx(0.5, abs=1e-12)
    z = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # cosines of the x rows with the z rows: [-1, 0, 1/√2] and [0, 1, 1/√2]
    hand = (-1 + 0 + 1 / math.sqrt(2) + 0 + 1 + 1 / math.sqrt(2)) / 6
    assert mean_pair_cosine(x, z) == pytest.approx(hand, abs=1e-12)


def test_mean_pair_cosine_matches_all_pairs_loop():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 5, generator=g).double(), torch.randn(4, 5, generator=g).double()
    loop = np.mean([float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for a, b in product(x, y)])
    assert mean_pair_cosine(x, y) == pytest.approx(loop, abs=1e-9)


def test_layer_similarity_hand_values():
    # one layer, 2-D mean unit vectors chosen by hand
    means = {"n1": torch.tensor([[1.0, 0.0]]), "n2": torch.tensor([[0.0, 1.0]]), "o1": torch.tensor([[0.5, 0.5]])}
    out = layer_similarity(means, ["n1", "n2"], ["o1"])
    # new-old: n1·o1 = 0.5, n2·o1 = 0.5 -> 0.5; new-new: n1·n2 = 0 -> S = (0.5 + 0)/2
    assert out["S"] == [pytest.approx(0.25)]
    assert out["pairs"][0]["n1-n2"] == 0.0
    one_new = layer_similarity(means, ["n1"], ["o1", "n2"])  # one new language: new-old pairs only
    assert one_new["S"] == [pytest.approx((0.5 + 0.0) / 2)]


def test_mean_unit_is_mean_of_normalised_rows():
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    assert torch.allclose(mean_unit(x), torch.tensor([0.3, -0.1], dtype=torch.float64))


def test_allocate_hand_values():
    S = [0.5, 0.25, 1.0]  # 1/S = 2, 4, 1 -> shares 2/7, 4/7, 1/7
    assert allocate(S, 7) == [2, 4, 1]
    assert allocate(S, 14) == [4, 8, 2]
    assert allocate(S, 3.5) == [1, 2, 1]  # ceil(1.0)=1, ceil(2.0)=2, ceil(0.5)=1


def test_solve_delta_hand_case():
    S = [0.5, 0.25, 1.0]
    delta, alloc = solve_delta(S, 5)
    # new experts = max(1, ceil(w δ) - 1): for δ in (5.25, 7] -> [1, 3, 1]; at δ <= 5.25 only 4
    assert alloc == [1, 3, 1]
    assert 5.25 < delta <= 7
    assert sum(new_experts_at(S, 5.25)) == 4


@pytest.mark.parametrize("seed", range(6))
def test_solve_delta_meets_budget_or_smallest_over(seed):
    rng = np.random.default_rng(seed)
    S = list(rng.uniform(0.05, 0.9, size=int(rng.integers(2, 7))))
    budget = int(rng.integers(len(S), 4 * len(S)))
    delta, alloc = solve_delta(S, budget)
    assert alloc == new_experts_at(S, delta) and min(alloc) >= 1
    grid = np.linspace(1e-3, budget + 3 * len(S), 6_000)
    totals = {sum(new_experts_at(S, d)) for d in grid}
    reachable = sorted(t for t in totals if t >= budget)
    assert sum(alloc) == reachable[0]  # exactly the budget when some δ gives it, else the smallest total over it
    # no smaller δ reaches the budget with another allocation: δ lies in the first interval that reaches it
    for d in grid[grid < delta]:
        got = new_experts_at(S, d)
        assert sum(got) < budget or got == alloc


def test_budget_too_small_and_bad_similarity():
    with pytest.raises(LangmoeError, match="smaller than one per MoE layer"):
        solve_delta([0.5, 0.5, 0.5], 2)
    with pytest.raises(LangmoeError, match="smaller than one per MoE layer"):
        random_allocation(3, 2)
    with pytest.raises(LangmoeError, match="positive"):
        solve_delta([0.5, -0.1], 4)


def test_random_allocation_same_total():
    a = random_allocation(5, 13, seed=3)
    assert sum(a) == 13 and min(a) >= 1 and a == random_allocation(5, 13, seed=3)


def test_top_k_layers():
    S = [0.2, 0.9, 0.5, 0.9]
    assert top_k_layers(S, 2) == [1, 3]
    assert top_k_layers(S, 1, layers=[0, 2]) == [2]
    with pytest.raises(LangmoeError, match="more than"):
        top_k_layers(S, 5)
