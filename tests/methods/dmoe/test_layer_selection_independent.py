"""Layer selection by hand: mean over languages, min-max over layers, `>= epsilon` exactly at the boundary."""

import pytest

from langmoe.errors import LangmoeError
from langmoe.methods.dmoe.layer_selection import select_layers

# per-language FFN deviation of 4 layers; mean over languages = [1, 3, 2, 5] (max over languages = [2, 3, 3, 6],
# so a max or a first-language-only reduction ranks the layers differently)
DEV = {"en": [0.0, 3.0, 1.0, 4.0], "de": [2.0, 3.0, 3.0, 6.0]}
# min-max normalised: (m - 1) / (5 - 1) = [0, 0.5, 0.25, 1]


def test_mean_and_min_max_normalisation_by_hand():
    sel = select_layers(DEV, epsilon=0.6)
    assert sel.mean_deviation == [1.0, 3.0, 2.0, 5.0]
    assert sel.normalised == [0.0, 0.5, 0.25, 1.0]
    assert sel.selected == [3]
    assert sel.langs == ["en", "de"] and sel.epsilon == 0.6 and sel.top_n is None


@pytest.mark.parametrize(("epsilon", "selected"), [
    (0.5, [1, 3]),  # exactly at the boundary: selected (>=, not >)
    (0.5000001, [3]),
    (0.25, [1, 2, 3]),
    (0.2499999, [1, 2, 3]),
    (0.2500001, [1, 3]),
    (0.0, [0, 1, 2, 3]),
    (1.0, [3]),
])
def test_epsilon_boundary(epsilon, selected):
    assert select_layers(DEV, epsilon=epsilon).selected == selected


def test_epsilon_above_one_selects_nothing():
    with pytest.raises(LangmoeError, match="selects no layer"):
        select_layers(DEV, epsilon=1.01)


def test_top_n_takes_the_largest_normalised_deviation_ties_to_the_earlier_layer():
    assert select_layers(DEV, top_n=1).selected == [3]
    assert select_layers(DEV, top_n=2).selected == [1, 3]
    assert select_layers(DEV, top_n=3).selected == [1, 2, 3]
    tied = {"en": [1.0, 4.0, 4.0, 0.0]}
    assert select_layers(tied, top_n=1).selected == [1]
    assert select_layers(tied, top_n=2, epsilon=0.99).selected == [1, 2]  # top_n wins over epsilon
    assert select_layers(tied, top_n=2).epsilon is None


def test_normalisation_is_shift_and_scale_free():
    shifted = {k: [10.0 + 3.0 * v for v in vals] for k, vals in DEV.items()}
    sel = select_layers(shifted, epsilon=0.5)
    assert sel.normalised == pytest.approx([0.0, 0.5, 0.25, 1.0])
    assert sel.selected == [1, 3]
