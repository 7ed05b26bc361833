"""Plots are valid PNGs of sensible size, written atomically, and reject bad input clearly."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from langmoe.errors import LangmoeError
from langmoe.report import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _check(path):
    assert path.read_bytes()[:8] == PNG
    img = imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200
    assert img.std() > 0.01  # not a blank canvas
    assert not list(path.parent.glob(".*.tmp"))  # no temp files left behind


def test_all_plots(tmp_path):
    dev = {"en": [3.0, 1.0, 2.0, 4.0], "de": [3.5, 1.2, 2.2, 4.4]}
    _check(plots.plot_deviation(dev, tmp_path / "dev.png", epsilon=0.6, selected=[0, 3]))
    langs = ["en", "de", "fr"]
    s = np.array([[1, 0.8, 0.1], [0.8, 1, 0.2], [0.1, 0.2, 1]])
    _check(plots.plot_similarity(langs, s, tmp_path / "sim.png", groups=[["fr"], ["en", "de"]]))
    _check(plots.plot_dendrogram(langs, s, tmp_path / "dendro.png"))
    _check(plots.plot_perplexity({"base": {"en": 50.0, "de": 70.0}, "dmoe": {"en": 20.0, "de": 25.0}},
                                 tmp_path / "ppl.png"))
    _check(plots.plot_routing_accuracy({"0": 0.5, "3": 0.9}, tmp_path / "acc.png"))
    _check(plots.plot_routing_accuracy({"dmoe": {"0": 0.5}, "btx": {"0": 0.3}}, tmp_path / "acc2.png"))
    _check(plots.plot_routing_heatmap({"en": [9, 1], "de": [2, 8]}, tmp_path / "heat.png"))


def test_order_by_groups():
    assert plots.order_by_groups(["a", "b", "c", "d"], [["c", "a"], ["d"]]) == ["c", "a", "d", "b"]


def test_bad_input():
    with pytest.raises(LangmoeError):
        plots.plot_similarity(["a", "b"], np.eye(3), "x.png")
    with pytest.raises(LangmoeError):
        plots.plot_deviation({}, "x.png")
    with pytest.raises(LangmoeError):
        plots.plot_dendrogram(["a"], [[1.0]], "x.png")
