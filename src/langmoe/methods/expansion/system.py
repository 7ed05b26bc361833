"""An expansion method as a recipe system: its stages, then its evaluation, as one summary row."""

from __future__ import annotations

from typing import Any

from langmoe.methods.expansion.report import evaluate_expansion
from langmoe.methods.expansion.stages import ExpansionFlow, PlanFn
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.summary import summary_row

__all__ = ["run_system"]


def run_system(run: RecipeRun, name: str, cfg, plan_fn: PlanFn) -> dict[str, Any]:
    """Stage 1 (expand, then new experts + routers), stage 2 (routers + classifiers), evaluation."""
    flow = ExpansionFlow(run, name, cfg, plan_fn)
    done = flow.run_stages()
    return {name: summary_row(evaluate_expansion(flow, done["stage"], done["tokens"]))}
