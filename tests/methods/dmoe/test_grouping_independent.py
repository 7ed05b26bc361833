"""Grouping against a plain-Python reimplementation of both builders (diameter, tie-breaks, leftovers) on random
and hand-made distance matrices."""

import itertools
import math

import numpy as np
import pytest

from langmoe.methods.dmoe.grouping import (
    _best_subset,
    distance_matrix,
    group_languages,
    group_sizes,
    random_grouping,
)


def ref_distance(s):
    n = len(s)
    return [[0.0 if i == j else 1.0 - (s[i][j] + s[j][i]) / 2.0 for j in range(n)] for i in range(n)]


def ref_diameter(d, members):
    return max((d[a][b] for a, b in itertools.combinations(members, 2)), default=0.0)


def ref_mean(d, members):
    pairs = list(itertools.combinations(members, 2))
    return sum(d[a][b] for a, b in pairs) / len(pairs) if pairs else 0.0


def ref_exhaustive(d, sizes):
    """Per size: the subset of the remaining languages with the smallest (diameter, mean distance); ties go to
    the first subset in combinations order. Returns groups of indices and diameters."""
    remaining = list(range(len(d)))
    groups = []
    for size in sizes:
        if size == len(remaining):
            best = list(remaining)
        elif size == 1:
            best = [remaining[0]]
        else:
            best, key = None, None
            for combo in itertools.combinations(remaining, size):
                k = (round(ref_diameter(d, combo), 12), round(ref_mean(d, combo), 12))
                if key is None or k < key:
                    best, key = list(combo), k
        groups.append(best)
        remaining = [i for i in remaining if i not in best]
    return groups


def ref_greedy(d, sizes):
    """Closest remaining pair (first in row-major order on ties), then the language with the smallest maximum
    distance to the members (first on ties)."""
    remaining = list(range(len(d)))
    groups = []
    for size in sizes:
        if size == len(remaining):
            members = list(remaining)
        elif size == 1:
            members = [remaining[0]]
        else:
            best = None
            for a in remaining:
                for b in remaining:
                    if a != b and (best is None or d[a][b] < best[0]):
                        best = (d[a][b], a, b)
            members = [best[1], best[2]]
            while len(members) < size:
                others = [i for i in remaining if i not in members]
                costs = [max(d[o][m] for m in members) for o in others]
                members.append(others[costs.index(min(costs))])
        groups.append(members)
        remaining = [i for i in remaining if i not in members]
    return groups


def random_similarity(n, seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 5))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return (v @ v.T).tolist()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("n", "k", "m"), [(6, 2, None), (7, 3, None), (7, None, 3), (8, None, 3), (5, 2, None),
                                           (4, None, 1), (4, 4, None)])
def test_exhaustive_equals_reimplementation(seed, n, k, m):
    s = random_similarity(n, seed)
    langs = [f"l{i}" for i in range(n)]
    g = group_languages(langs, s, num_groups=k, group_size=m, method="exhaustive")
    d = ref_distance(s)
    ref = ref_exhaustive(d, group_sizes(n, k, m))
    assert g.groups == [[langs[i] for i in sorted(grp)] for grp in ref]
    assert g.diameters == pytest.approx([ref_diameter(d, grp) for grp in ref], abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("n", "k", "m"), [(6, 2, None), (9, 3, None), (8, None, 3), (7, 2, None), (4, None, 1)])
def test_greedy_equals_reimplementation(seed, n, k, m):
    s = random_similarity(n, seed + 100)
    langs = [f"l{i}" for i in range(n)]
    g = group_languages(langs, s, num_groups=k, group_size=m, method="greedy")
    d = ref_distance(s)
    ref = ref_greedy(d, group_sizes(n, k, m))
    assert g.groups == [[langs[i] for i in sorted(grp)] for grp in ref]
    assert g.diameters == pytest.approx([ref_diameter(d, grp) for grp in ref], abs=1e-12)


def test_diameter_is_the_maximum_pairwise_distance_not_the_mean():
    # {0,1,2}: distances 0.1, 0.1, 0.9 -> mean 0.37, diameter 0.9; {0,3,4}: all 0.5 -> mean 0.5, diameter 0.5
    d = np.full((6, 6), 1.0)
    for (a, b), v in {(0, 1): 0.1, (1, 2): 0.1, (0, 2): 0.9, (0, 3): 0.5, (0, 4): 0.5, (3, 4): 0.5}.items():
        d[a, b] = d[b, a] = v
    np.fill_diagonal(d, 0.0)
    g = group_languages(list("abcdef"), (1.0 - d).tolist(), group_size=3, method="exhaustive")
    assert g.groups[0] == ["a", "d", "e"]
    assert g.diameters[0] == pytest.approx(0.5)


def test_equal_diameters_break_on_mean_then_on_order():
    d = np.full((5, 5), 0.8)
    np.fill_diagonal(d, 0.0)
    d[1, 2] = d[2, 1] = 0.2  # {1,2,x}: diameter 0.8 like all others but a smaller mean
    g = group_languages(list("abcde"), (1.0 - d).tolist(), group_size=3, method="exhaustive")
    assert g.groups[0] == ["a", "b", "c"]  # mean ties among {0,1,2},{1,2,3},{1,2,4}: first in order
    flat = np.full((4, 4), 0.5)
    np.fill_diagonal(flat, 0.0)
    # every subset ties exactly: the first in combinations order wins, also when each subset is its own batch
    assert _best_subset(flat, [0, 1, 2, 3], 2, batch=1) == [0, 1]
    assert _best_subset(flat, [3, 1, 2, 0], 2, batch=1) == [3, 1]
    assert _best_subset(d, [0, 1, 2, 3, 4], 3, batch=1) == [0, 1, 2]


def test_singleton_groups_keep_the_input_order():
    s = random_similarity(4, 0)
    for method in ("exhaustive", "greedy"):
        g = group_languages(list("abcd"), s, group_size=1, method=method)
        assert g.groups == [["a"], ["b"], ["c"], ["d"]], method


def test_leftovers_form_a_last_smaller_group_and_counts_are_balanced():
    assert group_sizes(7, group_size=3) == [3, 3, 1]
    assert group_sizes(8, group_size=3) == [3, 3, 2]
    assert group_sizes(9, group_size=3) == [3, 3, 3]
    assert group_sizes(7, num_groups=3) == [3, 2, 2]
    assert group_sizes(8, num_groups=3) == [3, 3, 2]
    assert group_sizes(5, num_groups=5) == [1] * 5
    for n in range(1, 12):
        for k in range(1, n + 1):
            sizes = group_sizes(n, num_groups=k)
            assert sum(sizes) == n and len(sizes) == k and max(sizes) - min(sizes) <= 1
            assert sizes == sorted(sizes, reverse=True)
            assert sizes[0] == math.ceil(n / k)
    s = random_similarity(7, 3)
    g = group_languages([f"l{i}" for i in range(7)], s, group_size=3, method="exhaustive")
    assert [len(x) for x in g.groups] == [3, 3, 1] and g.diameters[-1] == 0.0
    r = random_grouping([f"l{i}" for i in range(7)], group_size=3, seed=4)
    assert [len(x) for x in r.groups] == [3, 3, 1]
    assert sorted(sum(r.groups, [])) == sorted(f"l{i}" for i in range(7))


def test_distance_is_one_minus_the_symmetrised_similarity():
    s = [[1.0, 0.2, -0.4], [0.6, 1.0, 0.1], [-0.2, 0.3, 0.9]]
    d = distance_matrix(s)
    assert np.allclose(d, np.array(ref_distance(s)), atol=1e-12)
    assert d[0, 1] == pytest.approx(0.6) and d[0, 2] == pytest.approx(1.3) and d[2, 2] == 0.0
