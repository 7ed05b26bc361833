"""System `cpt`: stage `cpt/train` (mixed batches ∝ size^tau, CLM loss, all parameters, `budget_steps` steps),
then `eval/cpt`."""

from __future__ import annotations

from typing import Any

from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import dense_params, load_dense, save_dense
from langmoe.pipeline.stages import eval_stage
from langmoe.pipeline.summary import summary_row
from langmoe.train.mixed import train_mixed


def run_cpt(run: RecipeRun, settings) -> dict[str, Any]:

    r = run.recipe
    cfg = run.train_cfg(settings.optim, offset=100, steps=r.budget_steps)
    name = "cpt/train"

    def train_fn(model, out, fail):
        return train_mixed(model, run.blocks(), cfg, out, tau=r.data.tau, fail_at=fail)

    info = run.train_stage(name, {"input": run.input_key, "train": cfg}, [], run.base, train_fn,
                           save_dense(run.tokenizer))

    def fn():
        model = load_dense(run.model_dir(name))
        return run.evaluate(model, "cpt", dense_params(model), info["tokens_seen"])

    res = eval_stage(run, "eval/cpt", {}, [name], fn)
    return {"cpt": summary_row(res)}
