"""System `btx`: branches `btx/branch-<k>`, the merge plus training of the MoE (`btx/moe`), then `eval/btx`."""

from __future__ import annotations

from typing import Any

from langmoe.methods.btx.merge import merge_branches
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import load_dense, load_moe, moe_params, save_moe
from langmoe.pipeline.stages import branch_stages, eval_stage
from langmoe.pipeline.summary import summary_row
from langmoe.train.mixed import load_balance_terms, train_mixed
from langmoe.train.routing_context import group_of_map


def run_btx(run: RecipeRun, settings) -> dict[str, Any]:
    """Branch (budget − MoE steps, split over groups), merge FFNs into an all-layer MoE, train (MoE steps)."""

    r = run.recipe
    groups, gstage = run.provide("language_groups")
    group_of = group_of_map(groups)
    moe_steps = settings.moe_steps_in(r.budget_steps)
    branches = branch_stages(run, "btx", groups, r.budget_steps - moe_steps, settings.optim, deps=[gstage])
    names = [n for n, _ in branches]
    cfg = run.train_cfg(settings.optim, offset=300, steps=moe_steps)

    def load():
        models = [load_dense(run.model_dir(n)) for n in names]
        return merge_branches(models, top_k=settings.top_k, seed=r.seed)

    def train_fn(model, out, fail):
        return train_mixed(model, run.blocks(), cfg, out, tau=r.data.tau, fail_at=fail, seed_offset=1,
                           group_of=group_of, loss_terms=load_balance_terms(settings.lambda_lb))

    info = run.train_stage("btx/moe", {"train": cfg, "lambda": settings.lambda_lb, "top_k": settings.top_k}, names,
                           load, train_fn, save_moe(run.tokenizer))
    tokens = sum(i["tokens_seen"] for _, i in branches) + info["tokens_seen"]

    def fn():
        model = load_moe(run.model_dir("btx/moe"))
        return run.evaluate(model, "btx", moe_params(model), tokens, extra={"groups": groups})

    res = eval_stage(run, "eval/btx", {}, ["btx/moe"], fn)
    return {"btx": summary_row(res)}
