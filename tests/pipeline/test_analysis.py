"""The analysis stages (deviation -> groups, layers) of a run, on the tiny world."""

import torch
from tiny_world import tiny_recipe

from langmoe.io import read_json
from langmoe.methods.dmoe.analysis import ensure_analysis
from langmoe.pipeline.run import RecipeRun


def test_deviation_groups_layers(tmp_path):
    torch.set_num_threads(1)
    recipe = tiny_recipe(tmp_path, systems=["dmoe"],
                         dmoe={"groups": None, "moe_layers": None, "epsilon": 0.5, "deviation": {"steps": 2, "lr": 3e-3}})
    run = RecipeRun(recipe, tmp_path / "run")
    run.setup()
    groups, layers = ensure_analysis(run)
    assert sorted(x for g in groups for x in g) == ["de", "en", "fr", "nl"] and len(groups) == 2
    assert all(len(g) == 2 for g in groups)
    lay = read_json(tmp_path / "run" / "layers.json")
    assert layers == lay["selected"] and len(lay["normalised"]) == 3 and max(lay["normalised"]) == 1.0
    assert all(0 <= i < 3 for i in layers) and layers
    dev = read_json(tmp_path / "run" / "deviation.json")
    assert set(dev["dev_ffn"]) == {"en", "fr", "de", "nl"}
    assert read_json(tmp_path / "run" / "groups.json")["groups"] == groups
    # cached: a second run does not probe again
    run2 = RecipeRun(recipe, tmp_path / "run")
    run2.setup()
    assert ensure_analysis(run2) == (groups, layers)
    assert run2.runner.ran == [] and set(run2.runner.cached) == {"deviation", "groups", "layers"}
