"""Layer selection: hand-computed normalisation, ε and top-n, all-equal and error cases."""

from __future__ import annotations

import pytest

from langmoe.errors import LangmoeError
from langmoe.methods.dmoe.layer_selection import select_layers

DEV = {"en": [4.0, 1.0, 2.0, 5.0], "de": [6.0, 1.0, 2.0, 7.0]}  # mean 5, 1, 2, 6 -> normalised .8, 0, .2, 1


def test_epsilon_threshold_hand_values():
    s = select_layers(DEV, epsilon=0.6)
    assert s.mean_deviation == [5.0, 1.0, 2.0, 6.0]
    assert s.normalised == pytest.approx([0.8, 0.0, 0.2, 1.0])
    assert s.selected == [0, 3]
    assert select_layers(DEV, epsilon=0.8).selected == [0, 3]  # exactly on the threshold counts
    assert select_layers(DEV, epsilon=0.81).selected == [3]
    assert select_layers(DEV, epsilon=0.0).selected == [0, 1, 2, 3]
    assert s.langs == ["en", "de"]


def test_top_n():
    s = select_layers(DEV, top_n=3)
    assert s.selected == [0, 2, 3] and s.epsilon is None and s.top_n == 3
    with pytest.raises(LangmoeError, match="top_n"):
        select_layers(DEV, top_n=5)


def test_epsilon_selecting_nothing_says_the_maximum():
    with pytest.raises(LangmoeError, match=r"ε=1.2 selects no layer; the highest normalised deviation is 1.00"):
        select_layers(DEV, epsilon=1.2)


def test_all_equal_deviation_selects_every_layer_with_a_note():
    s = select_layers({"en": [2.0, 2.0, 2.0]}, epsilon=0.6)
    assert s.selected == [0, 1, 2] and s.normalised == [1.0, 1.0, 1.0] and "equally" in s.note


def test_bad_inputs():
    with pytest.raises(LangmoeError, match="different numbers of layers"):
        select_layers({"en": [1.0, 2.0], "de": [1.0]})
    with pytest.raises(LangmoeError):
        select_layers({})
    with pytest.raises(LangmoeError, match="NaN"):
        select_layers({"en": [1.0, float("nan")]})
    with pytest.raises(LangmoeError, match="epsilon"):
        select_layers(DEV, epsilon=-0.1)
