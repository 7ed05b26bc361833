"""Grouping on hand-made similarity matrices where the right answer is obvious; ARI/NMI by hand."""

from __future__ import annotations

import numpy as np
import pytest

from langmoe.errors import LangmoeError
from langmoe.methods.dmoe.grouping import (
    adjusted_rand_index,
    agreement,
    attribute_grouping,
    count_subsets,
    group_languages,
    group_sizes,
    normalized_mutual_info,
    random_grouping,
    similarity_matrix,
    with_comparisons,
)


def block_similarity(groups: list[list[str]], inside: float = 0.9, outside: float = 0.1, seed: int = 0):
    """Langs listed interleaved (so input order does not reveal the answer) with block-structured similarity."""
    rng = np.random.default_rng(seed)
    langs = [x for tup in zip(*groups, strict=False) for x in tup]
    langs += [x for g in groups for x in g if x not in langs]
    gid = {x: i for i, g in enumerate(groups) for x in g}
    n = len(langs)
    s = np.full((n, n), outside)
    for i in range(n):
        for j in range(n):
            if gid[langs[i]] == gid[langs[j]]:
                s[i, j] = inside
    noise = rng.uniform(-0.02, 0.02, (n, n))
    s = s + (noise + noise.T) / 2
    np.fill_diagonal(s, 1.0)
    return langs, s


TRUE = [["en", "de", "nl"], ["fr", "es", "it"], ["ru", "uk", "bg"]]


def canon(groups):
    return sorted(sorted(g) for g in groups)


@pytest.mark.parametrize("method", ["exhaustive", "greedy", "auto"])
def test_obvious_blocks_are_found(method):
    langs, s = block_similarity(TRUE)
    g = group_languages(langs, s, num_groups=3, method=method)
    assert canon(g.groups) == canon(TRUE)
    assert g.method in ("exhaustive", "greedy")
    assert all(d < 0.2 for d in g.diameters)
    assert agreement(g, TRUE).ari == pytest.approx(1.0)


def test_auto_switches_to_greedy_when_exhaustive_is_too_big():
    assert count_subsets(9, [3, 3, 3]) == 84 + 20 + 1
    langs, s = block_similarity(TRUE)
    assert group_languages(langs, s, num_groups=3, max_subsets=100).method == "greedy"
    assert group_languages(langs, s, num_groups=3, max_subsets=105).method == "exhaustive"


def test_exhaustive_picks_min_diameter_where_greedy_growth_does_not():
    # a-b is the closest pair, but {a, b, x} has diameter 0.5 while {c, d, e} has 0.2:
    # exhaustive takes the tight triple first; growth seeds with a-b.
    langs = ["a", "b", "c", "d", "e", "x"]
    d = np.full((6, 6), 0.9)
    np.fill_diagonal(d, 0.0)
    def setd(i, j, v):
        d[langs.index(i), langs.index(j)] = d[langs.index(j), langs.index(i)] = v
    setd("a", "b", 0.05)
    for p, q in (("c", "d"), ("c", "e"), ("d", "e")):
        setd(p, q, 0.2)
    setd("a", "x", 0.5)
    setd("b", "x", 0.5)
    s = 1 - d
    ex = group_languages(langs, s, num_groups=2, method="exhaustive")
    assert ex.groups == [["c", "d", "e"], ["a", "b", "x"]]
    assert ex.diameters == pytest.approx([0.2, 0.5])
    gr = group_languages(langs, s, num_groups=2, method="greedy")
    assert gr.groups[0] == ["a", "b", "x"]


def test_sizes_balanced_or_with_leftover_group():
    assert group_sizes(9, num_groups=4) == [3, 2, 2, 2]
    assert group_sizes(10, group_size=4) == [4, 4, 2]
    assert group_sizes(6, num_groups=6) == [1] * 6
    langs, s = block_similarity(TRUE)
    g = group_languages(langs, s, group_size=4)
    assert [len(x) for x in g.groups] == [4, 4, 1]
    with pytest.raises(LangmoeError, match="4 groups need at least 4 languages, got 3"):
        group_sizes(3, num_groups=4)
    with pytest.raises(LangmoeError, match="exactly one"):
        group_sizes(3)


def test_bad_matrix():
    with pytest.raises(LangmoeError, match="expected"):
        group_languages(["a", "b"], np.eye(3), num_groups=1)
    with pytest.raises(LangmoeError, match="NaN"):
        group_languages(["a", "b"], [[1, np.nan], [np.nan, 1]], num_groups=1)


def test_similarity_matrix_from_vectors():
    s = similarity_matrix({"a": [1.0, 0.0], "b": [0.0, 2.0], "c": [3.0, 0.0]})
    assert np.allclose(s, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])


def test_random_grouping_is_seeded_and_balanced():
    langs = [x for g in TRUE for x in g]
    a, b = random_grouping(langs, num_groups=3, seed=1), random_grouping(langs, num_groups=3, seed=1)
    assert a.groups == b.groups and sorted(len(g) for g in a.groups) == [3, 3, 3]
    assert sorted(x for g in a.groups for x in g) == sorted(langs)


def test_genus_grouping_and_comparisons():
    g = attribute_grouping(["en", "de", "fr", "es", "ru"], "genus")
    assert canon(g.groups) == canon([["en", "de"], ["fr", "es"], ["ru"]])
    dev = group_languages(*block_similarity([["en", "de"], ["fr", "es"]]), num_groups=2)
    full = with_comparisons(dev)
    assert full.agreement["genus"]["ari"] == pytest.approx(1.0)
    assert set(full.agreement) == {"genus", "family", "random", "random grouping vs genus",
                                   "random grouping vs family"}
    rnd = random_grouping(dev.langs, num_groups=2, seed=0)
    assert full.agreement["random grouping vs genus"] == agreement(rnd, attribute_grouping(dev.langs, "genus")).model_dump()


def test_ari_nmi_hand_values():
    # identical partitions (labels permuted)
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert normalized_mutual_info([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    # independent 2x2 split: contingency [[1,1],[1,1]] -> ARI = (0 - 2*2/6)/(2 - 2/3) = -0.5, MI = 0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    # [0,0,0,1,1,1] vs [0,0,1,1,2,2]: sum_ij = 1+0+0+1 +... computed by hand below
    a, b = [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]
    # contingency [[2,1,0],[0,1,2]]: sum C(n_ij,2)=2, sum_a=6, sum_b=3, total=15, E=1.2, max=4.5
    assert adjusted_rand_index(a, b) == pytest.approx((2 - 1.2) / (4.5 - 1.2))
    h_a, h_b = np.log(2), np.log(3)
    mi = 2 * (2 / 6) * np.log((2 / 6) / (0.5 * 1 / 3)) + 2 * (1 / 6) * np.log((1 / 6) / (0.5 * 1 / 3))
    assert normalized_mutual_info(a, b) == pytest.approx(mi / ((h_a + h_b) / 2))
    with pytest.raises(LangmoeError, match="misses"):
        agreement([["en", "de"]], [["en"]])


def test_against_sklearn_if_available():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 3, 12), rng.integers(0, 4, 12)
        assert adjusted_rand_index(a, b) == pytest.approx(metrics.adjusted_rand_score(a, b))
        assert normalized_mutual_info(a, b) == pytest.approx(metrics.normalized_mutual_info_score(a, b))


# ---- tie-break: the official script's rule -----------------------------------------------------------------------

def _tie_matrix():
    """Two minimal-diameter triangles (diameter 0.5): {a,b,c} first in combination order (mean 0.5) and {a,d,e}
    (mean 0.233). Every other pair is at 0.9, so no other triangle has diameter <= 0.5."""
    langs = ["a", "b", "c", "d", "e", "f"]
    d = {("a", "b"): 0.5, ("a", "c"): 0.5, ("b", "c"): 0.5, ("a", "d"): 0.1, ("a", "e"): 0.1, ("d", "e"): 0.5}
    s = np.full((6, 6), 0.1)
    for (x, y), v in d.items():
        i, j = langs.index(x), langs.index(y)
        s[i, j] = s[j, i] = 1.0 - v
    np.fill_diagonal(s, 1.0)
    return langs, s


def test_tie_break_official_takes_first_subset_in_combination_order():
    langs, s = _tie_matrix()
    # hand-derived: the official script keeps (0, 1, 2) = {a, b, c}; then {d, e, f} is all that is left
    assert group_languages(langs, s, num_groups=2, tie_break="official").groups == [["a", "b", "c"],
                                                                                   ["d", "e", "f"]]
    # the default prefers the tighter group on the tie: {a, d, e} (mean 0.233), leaving {b, c, f}
    assert group_languages(langs, s, num_groups=2).groups == [["a", "d", "e"], ["b", "c", "f"]]


def test_tie_break_official_across_scan_batches():
    from langmoe.methods.dmoe.grouping import _best_subset, distance_matrix

    langs, s = _tie_matrix()
    d = distance_matrix(s)
    assert _best_subset(d, list(range(6)), 3, batch=1, tie_break="official") == [0, 1, 2]
    assert _best_subset(d, list(range(6)), 3, batch=1) == [0, 3, 4]


def _official_reference(dist: np.ndarray, k: int) -> list[tuple[int, ...]]:
    """The loop of ZNLP/DMoE src/balanced_cluster_18langs.py, re-derived independently (exact float compare)."""
    import itertools

    numbers, clusters = list(range(len(dist))), []
    while numbers:
        combos = list(itertools.combinations(numbers, len(dist) // k))
        diam = [max(dist[a][b] for a, b in itertools.combinations(c, 2)) for c in combos]
        cluster = combos[diam.index(min(diam))]
        clusters.append(cluster)
        numbers = [x for x in numbers if x not in cluster]
    return clusters


@pytest.mark.parametrize("seed", range(25))
def test_tie_break_official_matches_reference_on_tied_matrices(seed):
    from langmoe.methods.dmoe.grouping import distance_matrix

    rng = np.random.default_rng(seed)
    n, k = (6, 2) if seed % 2 else (9, 3)
    s = rng.choice([0.2, 0.4, 0.6, 0.8], size=(n, n))  # few distinct values: ties on the diameter everywhere
    s = np.triu(s, 1) + np.triu(s, 1).T + np.eye(n)
    langs = [f"l{i}" for i in range(n)]
    expected = [[langs[i] for i in c] for c in _official_reference(distance_matrix(s), k)]
    assert group_languages(langs, s, num_groups=k, tie_break="official").groups == expected


def test_tie_break_validated():
    langs, s = _tie_matrix()
    with pytest.raises(LangmoeError, match="tie_break"):
        group_languages(langs, s, num_groups=2, tie_break="first")
