"""Two models' routing side by side against hand-computed entropy and JSD."""

from __future__ import annotations

import math

import pytest

from langmoe.errors import LangmoeError
from langmoe.methods.routing.collect import RoutingCounts
from langmoe.methods.routing.compare import compare_routing, routing_curves

LN2, L43 = math.log(2), math.log(4 / 3)


def _rc(counts, langs=("en", "de", "fr"), layers=(0, 1)):
    return RoutingCounts(langs=list(langs), layers=list(layers), num_experts=[2] * len(layers),
                         top_k=[1] * len(layers), counts=counts, tokens={x: 2 for x in langs})


# en: layer 0 [.5 .5], layer 1 [1 0]; de: [.5 .5], [0 1]; fr: [1 0], [1 0]
A = _rc([[[1, 1], [2, 0]], [[1, 1], [0, 2]], [[2, 0], [2, 0]]])
B = _rc([[[1, 1], [1, 1]]] * 3)  # every language uniform everywhere


def test_curves_by_hand():
    c = routing_curves(A, "en")
    assert c["entropy_mean"] == pytest.approx([2 * LN2 / 3, 0])
    assert c["entropy_focus"] == pytest.approx([LN2, 0]) and c["entropy_others"] == pytest.approx([LN2 / 2, 0])
    # JSD([.5 .5], [1 0]) = .75 ln(4/3) by hand; layer 1: en-de ln 2, en-fr 0, de-fr ln 2
    assert c["mean_jsd"] == pytest.approx([2 * 0.75 * L43 / 3, 2 * LN2 / 3])
    assert c["mean_jsd_without_focus"] == pytest.approx([0.75 * L43, LN2])  # de-fr only


def test_compare_side_by_side_and_difference():
    cmp = compare_routing(A, B, "en", names=("base", "cpt"))
    assert cmp["names"] == ["base", "cpt"] and cmp["cpt"]["entropy_mean"] == pytest.approx([LN2, LN2])
    assert cmp["cpt"]["mean_jsd"] == pytest.approx([0, 0])
    assert cmp["difference"]["entropy_mean"] == pytest.approx([LN2 / 3, LN2])
    assert cmp["difference"]["mean_jsd_without_focus"] == pytest.approx([-0.75 * L43, -LN2])
    assert "entropy_focus" not in compare_routing(A, B)["model"]  # no focus language: only the all-language curves
    with pytest.raises(LangmoeError, match="different languages"):
        compare_routing(A, _rc([[[1, 1], [1, 1]]] * 2, langs=("en", "de")))
    with pytest.raises(LangmoeError, match="'xx', is not among"):
        routing_curves(A, "xx")
    other_layers = compare_routing(A, _rc([[[1, 1], [1, 1]]] * 3, layers=(1, 3)))
    assert "difference" not in other_layers and "different MoE layers" in other_layers["note"]


def _units(per_lang, langs=("en", "de"), layers=(0,)):
    """RoutingCounts whose counts are the sum of the given bootstrap units per language."""
    counts = [[[sum(u[j][e] for u in per_lang[x]) for e in range(2)] for j in range(len(layers))] for x in langs]
    return RoutingCounts(langs=list(langs), layers=list(layers), num_experts=[2] * len(layers),
                         top_k=[1] * len(layers), counts=counts, tokens={x: 4 for x in langs},
                         unit_counts={x: per_lang[x] for x in langs})


def test_difference_intervals_by_hand():
    # en's two units route [2 0] and [0 2]; de's [1 1] twice. The other model routes en [1 1] in both units.
    a = _units({"en": [[[2, 0]], [[0, 2]]], "de": [[[1, 1]], [[1, 1]]]})
    b = _units({"en": [[[1, 1]], [[1, 1]]], "de": [[[1, 1]], [[1, 1]]]})
    # a draw of en's units is {u1,u1} -> [4 0] (entropy 0), {u2,u2} -> [0 4] (0), or mixed -> [2 2] (ln 2), each
    # with de at ln 2 in both models: entropy_mean difference (ln2 - H_en)/2 is ln2/2 (p 1/2) or 0 (p 1/2)
    iv = compare_routing(a, b)["difference_intervals"]
    assert iv["n_boot"] == 200 and iv["level"] == 0.95
    assert iv["entropy_mean"] == [pytest.approx([0, LN2 / 2])]
    # the point difference: a's en is [2 2] in all (entropy ln 2): no difference at all
    assert compare_routing(a, b)["difference"]["entropy_mean"] == pytest.approx([0])
    # paired: the same model twice differs by exactly 0 in every draw, though each curve alone varies
    same = compare_routing(a, a, "en")["difference_intervals"]
    assert all(v == [pytest.approx([0, 0])] for k, v in same.items() if k not in ("n_boot", "level", "seed"))
    # identical units within each language: every draw is the point estimate, the interval is [d, d]
    c = _units({"en": [[[1, 0]], [[1, 0]]], "de": [[[1, 1]], [[1, 1]]]})
    d = compare_routing(c, b, "en")
    for k, v in d["difference"].items():
        assert d["difference_intervals"][k] == [pytest.approx([v[0], v[0]])]
    assert d["difference"]["entropy_focus"] == pytest.approx([LN2]) and d["difference"]["mean_jsd"] == \
        pytest.approx([-0.75 * L43])  # JSD([1 0], [.5 .5]) = .75 ln(4/3) by hand, gone in the other model


def test_difference_intervals_need_the_same_units():
    a = _units({"en": [[[2, 0]], [[0, 2]]], "de": [[[1, 1]], [[1, 1]]]})
    three = _units({"en": [[[2, 0]], [[0, 1]], [[0, 1]]], "de": [[[1, 1]], [[1, 1]]]})
    assert "difference_intervals" not in compare_routing(a, three)  # not the same text: no paired interval
    assert "difference_intervals" not in compare_routing(A, B)  # no units in the files
