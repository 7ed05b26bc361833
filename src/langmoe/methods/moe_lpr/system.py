"""MoE-LPR (docs/methods.md §2): every FFN becomes frozen expert 0 plus E-1 copies; stage 1 trains new experts +
routers on new-language text (`+ lb_weight · L_LB`), stage 2 trains routers on new text + a small old-language
replay (`+ lpr_weight · L_LPR`). Its plan is uniform; the flow is the expansion wing's (`methods/expansion`).

Two entry points, one flow: `run_moe_lpr(run, settings)` is the recipe system (stages `moe_lpr/stage1`,
`moe_lpr/stage2`, then `eval/moe_lpr`); `run(config, out)` is `langmoe expand --method moe_lpr` (the same stages
as a one-system recipe, written to one model folder; `variant` full_ft / lora: the dense baselines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langmoe.methods.expansion.config import expansion_config
from langmoe.methods.expansion.oneshot import ExpansionResult, expand
from langmoe.methods.expansion.stages import ExpansionPlan, PlanInputs
from langmoe.methods.expansion.system import run_system
from langmoe.methods.moe_lpr.config import MoELPRConfig, MoELPRSettings
from langmoe.models.adapters import get_adapter
from langmoe.pipeline.context import RecipeRun

__all__ = ["uniform_plan", "plan", "run_moe_lpr", "run"]

NAME = "moe_lpr"


def uniform_plan(model, num_experts: int) -> dict[int, int]:
    """`num_experts - 1` new experts in every decoder layer."""
    n = len(get_adapter(model).layers(model))
    return dict.fromkeys(range(n), num_experts - 1)


def plan(inputs: PlanInputs) -> ExpansionPlan:
    cfg = inputs.cfg
    return ExpansionPlan(new_experts=uniform_plan(inputs.model, cfg.num_experts),
                         record={"allocation": "uniform", "num_experts": cfg.num_experts})


def run_moe_lpr(run: RecipeRun, settings: MoELPRSettings) -> dict[str, Any]:
    return run_system(run, NAME, expansion_config(run.recipe, settings, MoELPRConfig), plan)


def run(config: MoELPRConfig | dict[str, Any], out: str | Path) -> ExpansionResult:
    """Expand `config.model` to `config.new` and write a native MoE folder + expansion.json to `out` (a dense
    folder for the `full_ft` / `lora` variants)."""
    return expand(MoELPRConfig, config, out, NAME, plan)
