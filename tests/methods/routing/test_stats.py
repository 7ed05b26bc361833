"""Mantel permutation test, within-group correlation and bootstrap intervals against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from langmoe.errors import LangmoeError
from langmoe.methods.routing import metrics as M
from langmoe.methods.routing.analysis import overlap_sentence
from langmoe.methods.routing.stats import bootstrap_layers, mantel, within_groups


def _sym(n, values):
    m = np.zeros((n, n))
    m[np.triu_indices(n, 1)] = values
    return m + m.T


def test_mantel_three_languages_exact_distribution_by_hand():
    # 3 languages: permuting languages permutes the 3 pair values in all 3! = 6 ways. With x = y = (1, 2, 3) the
    # permuted r values are 1, .5, .5, -1, -.5, -.5: |r| >= 1 twice -> p = 2/6
    a = _sym(3, [1, 2, 3])
    res = mantel(a, a)
    assert res["exact"] and res["permutations"] == 6 and res["pairs"] == 3
    assert res["r"] == pytest.approx(1.0) and res["p"] == pytest.approx(1 / 3)
    # y = (1, 3, 2): r = .5 by hand; the six arrangements of (1, 2, 3) all have |r| in {1, .5} -> p = 1
    res = mantel(a, _sym(3, [1, 3, 2]))
    assert res["r"] == pytest.approx(0.5) and res["p"] == pytest.approx(1.0)


def test_mantel_four_languages_only_the_identity_matches():
    rng = np.random.default_rng(1)
    a = _sym(4, rng.random(6))
    res = mantel(a, a)
    assert res["exact"] and res["permutations"] == 24 and res["p"] == pytest.approx(1 / 24)
    neg = mantel(a, -a)  # two-sided
    assert neg["r"] == pytest.approx(-1.0) and neg["p"] == pytest.approx(1 / 24)


def test_mantel_monte_carlo_and_refusals():
    rng = np.random.default_rng(2)
    a = _sym(9, rng.random(36))  # 9! > 999: sampled
    res = mantel(a, a, permutations=999, seed=0)
    assert not res["exact"] and res["permutations"] == 999 and 1 / 1000 <= res["p"] <= 2 / 1000
    noise = mantel(a, _sym(9, rng.random(36)), permutations=999, seed=0)
    assert noise["p"] > 0.01
    assert mantel(np.zeros((2, 2)), np.zeros((2, 2)))["r"] is None
    with pytest.raises(LangmoeError, match="square matrices"):
        mantel(np.zeros((3, 3)), np.zeros((4, 4)))


def test_within_groups_pools_same_group_pairs_by_hand():
    a = _sym(5, [1, 2, 9, 9, 3, 9, 9, 9, 9, 4])  # pairs (0,1) (0,2) (1,2) (3,4) inside groups; 9 across
    b = _sym(5, [2, 1, 0, 0, 4, 0, 0, 0, 0, 3])
    res = within_groups(a, b, ["A", "A", "A", "B", "B"])
    assert res["pairs"] == 4
    assert res["r"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [2, 1, 4, 3])[0, 1])  # = 0.6
    assert res["groups"] == {}  # no group of >= 4 languages
    big = within_groups(_sym(4, [1, 2, 3, 4, 5, 6]), _sym(4, [1, 2, 3, 4, 5, 6]), ["A"] * 4)
    assert big["groups"]["A"]["p"] == pytest.approx(1 / 24)


def test_bootstrap_degenerate_and_covering():
    # every unit routes the same way: every resample gives the point estimate exactly
    a = np.array([[[10.0, 0.0]], [[5.0, 0.0]]])  # 2 units, 1 layer, 2 experts
    b = np.array([[[0.0, 4.0]], [[0.0, 6.0]]])
    out = bootstrap_layers([a, b], n_boot=50)
    assert out["specialisation"] == [[pytest.approx(1.0), pytest.approx(1.0)]]
    assert out["mean_pairwise_jsd"] == [[pytest.approx(math.log(2)), pytest.approx(math.log(2))]]
    rng = np.random.default_rng(0)
    units = [rng.integers(1, 30, size=(20, 2, 4)).astype(float) for _ in range(3)]
    point = M.specialisation(np.stack([u.sum(0) for u in units]))
    out = bootstrap_layers(units, n_boot=200, seed=1)
    for (lo, hi), p in zip(out["specialisation"], point, strict=True):
        assert lo < hi and lo <= p <= hi
    assert bootstrap_layers(units, n_boot=200, seed=1) == out  # seeded
    with pytest.raises(LangmoeError, match="at least one unit"):
        bootstrap_layers([a, b[:0]])


def test_overlap_sentence_reads_the_numbers():
    corr = {"mantel": {"r": -0.41, "p": 0.002, "languages": 15, "pairs": 105, "permutations": 9999, "exact": False},
            "within_script": {"r": -0.03, "pairs": 45}}
    s = overlap_sentence(corr, 3)
    assert s == ("Across 15 languages (105 pairs), lexical overlap and routing JSD at layer 3 correlate with Pearson "
                 "r = -0.41 (Mantel test over languages, 9999 permutations: p = 0.002). Within scripts (45 "
                 "same-script pairs) r = -0.03.")
