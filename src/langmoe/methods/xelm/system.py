"""System `xelm`: branches `xelm/branch-<k>` (one per language group, the budget split over them), then two
evaluations: `eval/xelm` (each language by its group's branch) and `eval/xelm_ensemble`."""

from __future__ import annotations

from typing import Any

from langmoe.io import write_json
from langmoe.methods.xelm.ensemble import EnsembleLM
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import dense_params, load_dense
from langmoe.pipeline.stages import branch_stages, eval_stage
from langmoe.pipeline.summary import mean_metrics, summary_row


def run_xelm(run: RecipeRun, settings) -> dict[str, Any]:

    r = run.recipe
    if settings.groups is not None:
        groups, deps = [list(g) for g in settings.groups], []
    else:
        groups, gstage = run.provide("language_groups")
        deps = [gstage]
    branches = branch_stages(run, "xelm", groups, r.budget_steps, settings.optim, deps=deps)
    tokens = sum(info["tokens_seen"] for _, info in branches)
    names = [n for n, _ in branches]

    def load_all():
        return [load_dense(run.model_dir(n)) for n in names]

    def fn_lang():
        models = load_all()
        n = dense_params(models[0])["total"]
        per_lang: dict[str, Any] = {}
        for k, langs in enumerate(groups):
            res_k = run.evaluate(models[k], f"xelm_branch{k}", dense_params(models[k]), tokens, langs=langs)
            per_lang.update(res_k["langs"])
            (run.run_dir / "eval" / f"xelm_branch{k}.json").unlink(missing_ok=True)
        per_lang = {x: per_lang[x] for x in r.languages}
        res = {"system": "xelm", "langs": per_lang, "mean": mean_metrics(per_lang),
               "params": {"total": n * len(groups), "active": n}, "tokens_seen": tokens,
               "budget_tokens": r.budget_tokens, "eval": r.eval.model_dump(), "groups": groups,
               "inference": "by language: each language scored by its group's branch"}
        write_json(run.run_dir / "eval" / "xelm.json", res)
        return res

    def fn_ens():
        models = load_all()
        n = dense_params(models[0])["total"]
        ens = EnsembleLM(models, settings.ensemble)
        return run.evaluate(ens, "xelm_ensemble", {"total": n * len(groups), "active": n * len(groups)}, tokens,
                            extra={"groups": groups, "inference": f"ensemble, {settings.ensemble} weights"})

    res = eval_stage(run, "eval/xelm", {}, names, fn_lang)
    res_e = eval_stage(run, "eval/xelm_ensemble", {"w": settings.ensemble}, names, fn_ens)
    return {"xelm": summary_row(res), "xelm_ensemble": summary_row(res_e)}
