"""System `base`: evaluate the dense base model (stage `eval/base`)."""

from __future__ import annotations

from typing import Any

from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import dense_params
from langmoe.pipeline.stages import eval_stage
from langmoe.pipeline.summary import summary_row


def run_base(run: RecipeRun, settings: Any = None) -> dict[str, Any]:
    def fn():
        model = run.base()
        return run.evaluate(model, "base", dense_params(model), 0, trained=False)

    res = eval_stage(run, "eval/base", run.input_key, [], fn)
    return {"base": summary_row(res)}
