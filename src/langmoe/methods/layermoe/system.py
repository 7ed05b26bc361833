"""System `layermoe` in a recipe: stages `layermoe/stage1`, `layermoe/stage2` (with the routing classifiers), then
`eval/layermoe` (langmoe.pipeline.expansion runs them)."""

from __future__ import annotations

from typing import Any

from langmoe.methods.layermoe.method import LayerMoEConfig, make_plan
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.expansion import expansion_config, recipe_settings_class, run_expansion_system

LayerMoESettings = recipe_settings_class(LayerMoEConfig, "LayerMoE in a recipe: the method's own settings.")


def run_layermoe(run: RecipeRun, settings) -> dict[str, Any]:
    cfg = expansion_config(run, settings, LayerMoEConfig)
    return run_expansion_system(run, "layermoe", cfg, lambda base, _data, corpus, _e0: make_plan(cfg, base, corpus))
