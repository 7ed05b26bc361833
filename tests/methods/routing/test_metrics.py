"""Routing metrics against hand computations on tiny count tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from langmoe.errors import LangmoeError
from langmoe.methods.routing import metrics as M

TWO = np.array([[[3.0, 1.0]], [[1.0, 3.0]]])  # 2 languages, 1 layer, 2 experts


def test_shares_and_entropy_by_hand():
    a = M.shares(TWO)
    assert np.allclose(a[0, 0], [0.75, 0.25]) and np.allclose(a[1, 0], [0.25, 0.75])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.5623 nats
    assert np.allclose(M.entropy(TWO), [[h], [h]])
    assert np.allclose(M.entropy(TWO, base=2), [[h / math.log(2)], [h / math.log(2)]])
    # an empty row has entropy 0 and shares 0, not NaN
    c = np.zeros((1, 1, 3))
    assert M.entropy(c)[0, 0] == 0 and not M.shares(c).any()


def test_jsd_by_hand_and_base():
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL(p || m), m = (0.5, 0.5); both sides equal
    j = M.jsd_matrix(TWO, 0)
    assert j[0, 0] == 0 and j[1, 1] == 0
    assert j[0, 1] == pytest.approx(kl, abs=1e-12) and j[1, 0] == j[0, 1]
    assert M.jsd_matrix(TWO, 0, base=2)[0, 1] == pytest.approx(kl / math.log(2), abs=1e-12)
    assert math.e == M.DEFAULT_BASE  # the paper's scipy default
    assert M.mean_pairwise_jsd(TWO)[0] == pytest.approx(kl)


def test_specialisation_by_hand():
    # H(L) = 1 bit; H(L|E) = H(0.75, 0.25) = 0.8113 bits for both experts
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert M.specialisation(TWO)[0] == pytest.approx(1 - h)
    # with equal token totals the information gain equals the base-2 JSD (a second, independent route)
    assert M.specialisation(TWO)[0] == pytest.approx(M.jsd_matrix(TWO, 0, base=2)[0, 1])
    layers = np.array([[[4, 0], [2, 2]], [[0, 4], [2, 2]]], dtype=float)  # layer 0 perfect, layer 1 none
    assert np.allclose(M.specialisation(layers), [1.0, 0.0])
    # unequal totals: table [[6, 2], [1, 1]] computed by hand
    t = np.array([[[6.0, 2.0]], [[1.0, 1.0]]])
    hl = -(0.8 * math.log2(0.8) + 0.2 * math.log2(0.2))
    h0 = -(6 / 7 * math.log2(6 / 7) + 1 / 7 * math.log2(1 / 7))
    h1 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert M.specialisation(t)[0] == pytest.approx((hl - (0.7 * h0 + 0.3 * h1)) / hl)


SHARES3 = np.array([[[5, 2, 2, 1]], [[1, 6, 2, 1]], [[1, 1, 5, 3]]], dtype=float)  # each row sums to 10


def test_specific_and_shared_experts_by_hand():
    langs = ["a", "b", "c"]
    # gaps to the runner-up: e0 a .5-.1=.4, e1 b .6-.2=.4, e2 c .5-.2=.3, e3 c .3-.1=.2
    assert M.specific_experts(SHARES3, langs, 0, 0.25) == {"a": [0], "b": [1], "c": [2]}
    assert M.specific_experts(SHARES3, langs, 0, 0.15) == {"a": [0], "b": [1], "c": [2, 3]}
    assert M.specific_experts(SHARES3, langs, 0, 0.45) == {"a": [], "b": [], "c": []}
    assert M.max_gap(SHARES3, 2, 0) == pytest.approx(0.3)
    # mean shares: e0 .233, e1 .3, e2 .3, e3 .167
    assert sorted(M.shared_experts(SHARES3, 0, 2)) == [1, 2]
    assert M.shared_experts(SHARES3, 0, 1)[0] in (1, 2)
    with pytest.raises(LangmoeError, match="at least 2 languages"):
        M.specific_experts(SHARES3[:1], ["a"], 0, 0.1)


def test_jaccard_and_correlation():
    ov = M.jaccard_matrix({"x": [1, 2, 3], "y": [2, 3, 4], "z": [9]}, ["x", "y", "z"])
    assert ov[0, 1] == pytest.approx(2 / 4) and ov[0, 2] == 0 and ov[1, 1] == 1
    n = 4
    iu = np.triu_indices(n, 1)
    x = np.zeros((n, n))
    y = np.zeros((n, n))
    x[iu] = [1, 2, 3, 4, 5, 6]
    y[iu] = np.array([1, 2, 3, 4, 5, 6]) ** 3  # monotone, not linear
    c = M.overlap_correlation(x, y)
    assert c["pairs"] == 6 and c["spearman_rho"] == pytest.approx(1.0) and c["pearson_r"] < 0.99
    assert 0 <= c["pearson_p"] < 0.05
    few = M.overlap_correlation(np.eye(2), np.eye(2))
    assert few["pearson_r"] is None and "needs" in few["note"]


def test_bad_counts():
    with pytest.raises(LangmoeError, match="languages, layers, experts"):
        M.shares(np.zeros((2, 3)))
    with pytest.raises(LangmoeError, match="non-negative"):
        M.shares(-np.ones((1, 1, 2)))
