"""Routing metrics against values computed by hand on a 2-language, 2- or 3-expert table, with the α boundary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from langmoe.methods.routing import metrics as M

# one layer; shares: a = [.75, .25], b = [.25, .75]
C = np.array([[[3.0, 1.0]], [[1.0, 3.0]]])


def _h(p, log=math.log):
    return -sum(x * log(x) for x in p if x > 0)


def test_entropy_natural_log_by_hand():
    assert M.entropy(C)[0, 0] == pytest.approx(_h([0.75, 0.25]), abs=1e-12)
    assert M.entropy(C, base=2)[0, 0] == pytest.approx(_h([0.75, 0.25], math.log2), abs=1e-12)


def test_jsd_is_the_squared_distance_by_hand():
    a, b, m = np.array([0.75, 0.25]), np.array([0.25, 0.75]), np.array([0.5, 0.5])
    kl = lambda p, q: float((p * np.log(p / q)).sum())  # noqa: E731
    want = (kl(a, m) + kl(b, m)) / 2
    assert M.jsd_matrix(C, 0)[0, 1] == pytest.approx(want, abs=1e-12)
    assert M.mean_pairwise_jsd(C)[0] == pytest.approx(want, abs=1e-12)


def test_specialisation_by_hand():
    # H(L) = 1 bit; each expert column is (3, 1) / 4: H(L|E) = H(.75, .25) bits, weighted by p(e) = .5 each
    want = (1.0 - _h([0.75, 0.25], math.log2)) / 1.0
    assert M.specialisation(C)[0] == pytest.approx(want, abs=1e-12)


def test_specific_experts_gap_to_the_runner_up_and_alpha_boundary():
    gap = 0.75 - 0.25  # expert 0: a's share minus b's
    assert M.specific_experts(C, ["a", "b"], 0, gap) == {"a": [0], "b": [1]}  # >= alpha: specific
    assert M.specific_experts(C, ["a", "b"], 0, float(np.nextafter(gap, 1.0))) == {"a": [], "b": []}
    assert M.specific_experts(C, ["a", "b"], 0, 0.6) == {"a": [], "b": []}  # the top share .75 alone is not it
    assert M.max_gap(C, 0, 0) == pytest.approx(gap)


def test_shared_experts_are_the_most_used():
    c = np.array([[[5.0, 3.0, 2.0]], [[5.0, 1.0, 4.0]]])  # mean shares .5, .2, .3
    assert M.shared_experts(c, 0, 1) == [0]
    assert M.shared_experts(c, 0, 2) == [0, 2]
