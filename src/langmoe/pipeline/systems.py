"""One function per system of a recipe (`run_<system>(run) -> {row name: summary row}`), each a chain of cached
stages of the run's `StageRunner`. Stage names are stable: `fail_at` and the tests refer to them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langmoe.io import write_json
from langmoe.pipeline.run import (
    RecipeRun,
    dense_params,
    load_dense,
    save_dense,
    summary_row,
)


def _eval_stage(run: RecipeRun, name: str, config: Any, deps: list[str], fn) -> dict[str, Any]:
    """A cached evaluation; re-writes `eval/<system>.json` from the cache if the file went missing."""
    res = run.runner.run(name, {"eval": run.recipe.eval.model_dump(), "cfg": config}, lambda _d: fn(), deps=deps)
    out = run.run_dir / "eval" / f"{res['system']}.json"
    if not out.is_file():
        write_json(out, res)
    return res


def run_base(run: RecipeRun) -> dict[str, Any]:
    def fn():
        model = run.base()
        return run.evaluate(model, "base", dense_params(model), 0)

    res = _eval_stage(run, "eval/base", run.input_key, [], fn)
    return {"base": summary_row(res)}


def run_cpt(run: RecipeRun) -> dict[str, Any]:
    from langmoe.methods.baselines.cpt import train_cpt

    r = run.recipe
    cfg = run.train_cfg(r.stage2, offset=100, steps=r.budget_steps)
    name = "cpt/train"
    def train_fn(model, out, fail):
        return train_cpt(model, run.blocks(), cfg, out, tau=r.data.tau, fail_at=fail)

    info = run.train_stage(name, {"input": run.input_key, "train": cfg}, [], run.base, train_fn,
                           save_dense(None, run.tokenizer))

    def fn():
        model = load_dense(run.runner.stage_dir(name) / "model")
        return run.evaluate(model, "cpt", dense_params(model), info["tokens_seen"])

    res = _eval_stage(run, "eval/cpt", {}, [name], fn)
    return {"cpt": summary_row(res)}


# ---- DMoE ------------------------------------------------------------------------------------------------------


def ensure_analysis(run: RecipeRun) -> tuple[list[list[str]], list[int]]:
    """Deviation (A), groups (B) and MoE layers (C): cached stages writing deviation/groups/layers.json."""
    from langmoe.pipeline import analysis

    return analysis.ensure_analysis(run)


def ensure_random_groups(run: RecipeRun) -> list[list[str]]:
    r = run.recipe

    def fn(_d: Path) -> dict[str, Any]:
        from langmoe.methods.dmoe.grouping import random_grouping

        out = random_grouping(r.languages, r.num_groups, seed=r.seed).model_dump(mode="json")
        write_json(run.run_dir / "groups_random.json", out)
        return out

    return run.runner.run("groups_random", {"langs": r.languages, "k": r.num_groups, "seed": r.seed}, fn)["groups"]


def run_dmoe(run: RecipeRun, system: str = "dmoe") -> dict[str, Any]:
    from langmoe.methods.dmoe import build
    from langmoe.methods.dmoe.stages import (
        group_of_map,
        hard_routing,
        routing_statistics,
        train_stage1,
        train_stage2,
    )

    r = run.recipe
    groups_dev, layers = ensure_analysis(run)
    if system == "dmoe_random":
        groups = ensure_random_groups(run)
        gstage = "groups_random"
    else:
        groups, gstage = groups_dev, "groups"
    group_of = group_of_map(groups)
    deps = [gstage, "layers"]
    s1, s2 = f"{system}/stage1", f"{system}/stage2"
    cfg1 = run.train_cfg(r.stage1, offset=0)
    cfg2 = run.train_cfg(r.stage2, offset=1)
    arch = {"layers": layers, "k": r.num_groups, "top_k": r.top_k}

    def load1():
        return build.build_dmoe(run.base(), layers, r.num_groups, r.top_k, seed=r.seed)

    def train1(model, out, fail):
        return train_stage1(model, run.blocks(), group_of, cfg1, out, alpha=r.alpha_rc, tau=r.data.tau,
                            fail_at=fail)

    info1 = run.train_stage(s1, {"input": run.input_key, "arch": arch, "train": cfg1, "alpha": r.alpha_rc},
                            deps, load1, train1, build.saver(run.tokenizer))

    def train2(model, out, fail):
        return train_stage2(model, run.blocks(), group_of, cfg2, out, lam=r.lambda_lb, tau=r.data.tau,
                            fail_at=fail)

    info2 = run.train_stage(s2, {"train": cfg2, "lambda": r.lambda_lb}, [s1],
                            lambda: build.load(run.runner.stage_dir(s1) / "model"), train2,
                            build.saver(run.tokenizer))
    tokens = info1["tokens_seen"] + info2["tokens_seen"]
    model_dir = run.runner.stage_dir(s2) / "model"

    def fn_learned():
        model = build.load(model_dir)
        routing = routing_statistics(model, run.blocks(split=r.eval.split), group_of, r.eval.batch_size)
        name = "routing.json" if system == "dmoe" else f"routing_{system}.json"
        write_json(run.run_dir / name, {"system": system, "top_k": r.top_k, **routing})
        return run.evaluate(model, system, build.params(model), tokens, group_of=group_of,
                            extra={"groups": groups, "moe_layers": layers, "routing_accuracy": routing["accuracy"],
                                   "stages": {"stage1": info1, "stage2": info2}})

    res = _eval_stage(run, f"eval/{system}", {}, [s2], fn_learned)
    rows = {system: summary_row(res) | {"routing_accuracy": res.get("routing_accuracy")}}
    if r.eval.hard_routing:
        def fn_hard():
            model = build.load(model_dir)
            return run.evaluate(model, f"{system}_hard", build.params(model, hard=True), tokens,
                                forward_context=hard_routing, group_of=group_of)

        res_h = _eval_stage(run, f"eval/{system}_hard", {}, [s2], fn_hard)
        rows[f"{system}_hard"] = summary_row(res_h)
    if system == "dmoe" and r.new_language is not None:
        from langmoe.pipeline.new_language_stage import run_new_language

        run_new_language(run, s2, groups, layers)
    return rows


def run_dmoe_random(run: RecipeRun) -> dict[str, Any]:
    return run_dmoe(run, "dmoe_random")


# ---- X-ELM and BTX ---------------------------------------------------------------------------------------------


def _branches(run: RecipeRun, prefix: str, groups: list[list[str]], total_steps: int) -> list[tuple[str, dict]]:
    from langmoe.methods.baselines.xelm import split_steps, train_branch

    r = run.recipe
    out = []
    for k, steps in enumerate(split_steps(total_steps, len(groups))):
        name = f"{prefix}/branch-{k}"
        cfg = run.train_cfg(r.stage2, offset=200 + k, steps=steps)

        def train_fn(model, out_dir, fail, langs=groups[k], cfg=cfg):
            return train_branch(model, run.blocks(), langs, cfg, out_dir, tau=r.data.tau, fail_at=fail)

        info = run.train_stage(name, {"input": run.input_key, "langs": groups[k], "train": cfg}, ["groups"],
                               run.base, train_fn, save_dense(None, run.tokenizer))
        out.append((name, info))
    return out


def run_xelm(run: RecipeRun) -> dict[str, Any]:
    from langmoe.methods.baselines.xelm import EnsembleLM

    r = run.recipe
    groups, _ = ensure_analysis(run)
    branches = _branches(run, "xelm", groups, r.budget_steps)
    tokens = sum(info["tokens_seen"] for _, info in branches)
    names = [n for n, _ in branches]

    def load_all():
        return [load_dense(run.runner.stage_dir(n) / "model") for n in names]

    def fn_lang():
        models = load_all()
        n = dense_params(models[0])["total"]
        per_lang: dict[str, Any] = {}
        for k, langs in enumerate(groups):
            res_k = run.evaluate(models[k], f"xelm_branch{k}", dense_params(models[k]), tokens, langs=langs)
            per_lang.update(res_k["langs"])
            (run.run_dir / "eval" / f"xelm_branch{k}.json").unlink(missing_ok=True)
        from langmoe.pipeline.run import mean_metrics

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
        ens = EnsembleLM(models, r.xelm_ensemble)
        return run.evaluate(ens, "xelm_ensemble", {"total": n * len(groups), "active": n * len(groups)}, tokens,
                            extra={"groups": groups, "inference": f"ensemble, {r.xelm_ensemble} weights"})

    res = _eval_stage(run, "eval/xelm", {}, names, fn_lang)
    res_e = _eval_stage(run, "eval/xelm_ensemble", {"w": r.xelm_ensemble}, names, fn_ens)
    return {"xelm": summary_row(res), "xelm_ensemble": summary_row(res_e)}


def run_btx(run: RecipeRun) -> dict[str, Any]:
    """Branch (budget − stage-2 steps, split over groups), merge FFNs into an all-layer MoE, train (stage-2 steps)."""
    from langmoe.methods.baselines.btx import merge_branches
    from langmoe.methods.dmoe import build
    from langmoe.methods.dmoe.stages import train_stage2

    r = run.recipe
    groups, _ = ensure_analysis(run)
    from langmoe.methods.dmoe.stages import group_of_map

    group_of = group_of_map(groups)
    branches = _branches(run, "btx", groups, r.budget_steps - r.stage2.steps)
    names = [n for n, _ in branches]
    cfg = run.train_cfg(r.stage2, offset=300)

    def load():
        models = [load_dense(run.runner.stage_dir(n) / "model") for n in names]
        return merge_branches(models, top_k=r.top_k, seed=r.seed)

    def train_fn(model, out, fail):
        return train_stage2(model, run.blocks(), group_of, cfg, out, lam=r.lambda_lb, tau=r.data.tau, fail_at=fail)

    info = run.train_stage("btx/moe", {"train": cfg, "lambda": r.lambda_lb, "top_k": r.top_k}, names, load,
                           train_fn, build.saver(run.tokenizer))
    tokens = sum(i["tokens_seen"] for _, i in branches) + info["tokens_seen"]

    def fn():
        model = build.load(run.runner.stage_dir("btx/moe") / "model")
        return run.evaluate(model, "btx", build.params(model), tokens, extra={"groups": groups})

    res = _eval_stage(run, "eval/btx", {}, ["btx/moe"], fn)
    return {"btx": summary_row(res)}
