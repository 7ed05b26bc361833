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
