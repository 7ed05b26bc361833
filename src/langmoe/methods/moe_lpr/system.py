"""System `moe_lpr` in a recipe: stages `moe_lpr/stage1`, `moe_lpr/stage2`, then `eval/moe_lpr`
(langmoe.pipeline.expansion runs them; the dense baselines are the recipe's `cpt` and `lora` systems)."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from langmoe.methods.moe_lpr.method import MoELPRConfig, uniform_plan
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.expansion import expansion_config, recipe_settings_class, run_expansion_system
from langmoe.train.expansion import ExpansionPlan


class MoELPRSettings(recipe_settings_class(MoELPRConfig, "MoE-LPR in a recipe: the method's own settings.")):
    @model_validator(mode="after")
    def _moe_only(self):
        if self.variant != "moe_lpr":
            raise ValueError(f"variant {self.variant!r}: in a recipe list the baselines as systems (cpt, lora); "
                             "the variants are for `langmoe expand` and benchmarks/expansion_builtin.py")
        return self


def run_moe_lpr(run: RecipeRun, settings: MoELPRSettings) -> dict[str, Any]:
    cfg = expansion_config(run, settings, MoELPRConfig)

    def plan(base, _data, _corpus, _expert0) -> ExpansionPlan:
        return ExpansionPlan(new_experts=uniform_plan(base.model, cfg.num_experts),
                             record={"allocation": "uniform", "num_experts": cfg.num_experts})

    return run_expansion_system(run, "moe_lpr", cfg, plan)
