"""LayerMoE (docs/methods.md §3): MoE-LPR with experts allocated per layer by cross-lingual similarity (`plan.py`)
and an old/new routing classifier in the K most similar layers; the flow is the expansion wing's
(`methods/expansion`): expand, stage 1 (new experts + routers, `+ lb_weight · L_LB`; earlier experts frozen), add
the classifiers, stage 2 (routers + classifiers, `+ lpr_weight · L_LPR + cls_weight · L_cls`).

Two entry points, one flow: `run_layermoe(run, settings)` is the recipe system (stages `layermoe/stage1`,
`layermoe/stage2`, then `eval/layermoe`); `run(config, out)` is `langmoe expand --method layermoe`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langmoe.methods.expansion.config import expansion_config
from langmoe.methods.expansion.oneshot import ExpansionResult, expand
from langmoe.methods.expansion.system import run_system
from langmoe.methods.layermoe.config import LayerMoEConfig
from langmoe.methods.layermoe.plan import make_plan
from langmoe.pipeline.context import RecipeRun

__all__ = ["run_layermoe", "run"]

NAME = "layermoe"


def run_layermoe(run: RecipeRun, settings) -> dict[str, Any]:
    return run_system(run, NAME, expansion_config(run.recipe, settings, LayerMoEConfig), make_plan)


def run(config: LayerMoEConfig | dict[str, Any], out: str | Path) -> ExpansionResult:
    """Expand `config.model` (dense, or a langmoe expansion for a lifelong step) to `config.new`; writes a native
    MoE folder + expansion.json to `out`."""
    return expand(LayerMoEConfig, config, out, NAME, make_plan)
