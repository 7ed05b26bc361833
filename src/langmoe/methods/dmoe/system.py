"""Systems `dmoe` and `dmoe_random` (the same pipeline on a random balanced grouping, the ablation).

Stages: the analysis (`deviation`, `groups`, `layers`; `groups_random` for the ablation), `<system>/stage1`,
`<system>/stage2`, `eval/<system>` (learned routing, plus `routing.json`), `eval/<system>_hard` (hard routing by
group) and, for `dmoe` with `new_language`, `dmoe/new_language`.
"""

from __future__ import annotations

from typing import Any

from langmoe.io import write_json
from langmoe.methods.dmoe.analysis import ensure_analysis, ensure_random_groups
from langmoe.methods.dmoe.stages import (
    load_optimizer_handoff,
    routing_statistics,
    save_optimizer_handoff,
    schedule_configs,
    train_stage1,
    train_stage2,
)
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import load_moe, moe_params, save_moe
from langmoe.pipeline.stages import eval_stage
from langmoe.pipeline.summary import summary_row
from langmoe.train.routing_context import group_of_map, hard_routing


def _train(run: RecipeRun, s, system: str, groups, layers, deps: list[str]) -> tuple[dict, dict, str]:
    """Upcycle (D) and the two training stages (E); (stage-1 info, stage-2 info, stage-2 name)."""
    from langmoe.methods.dmoe import build

    r = run.recipe
    group_of = group_of_map(groups)
    s1, s2 = f"{system}/stage1", f"{system}/stage2"
    cfg1, cfg2 = schedule_configs(run.train_cfg(s.stage1, offset=0), run.train_cfg(s.stage2, offset=1), s.schedule)
    carry = s.schedule == "continuous"
    arch = {"layers": layers, "k": s.num_groups, "top_k": s.top_k}

    def load1():
        return build.build_dmoe(run.base(), layers, s.num_groups, s.top_k, seed=r.seed)

    def train1(model, out, fail):
        res = train_stage1(model, run.blocks(), group_of, cfg1, out, alpha=s.alpha_rc, tau=r.data.tau,
                           fail_at=fail, return_optimizer_state=carry)
        if carry:  # stage 2 continues with these AdamW moments (the checkpoints are deleted after the stage)
            save_optimizer_handoff(res, out)
        return res

    info1 = run.train_stage(s1, {"input": run.input_key, "arch": arch, "train": cfg1, "alpha": s.alpha_rc},
                            deps, load1, train1, save_moe(run.tokenizer))

    def train2(model, out, fail):
        extra = {"init_optimizer_state": load_optimizer_handoff(run.runner.stage_dir(s1) / "train")} if carry else {}
        return train_stage2(model, run.blocks(), group_of, cfg2, out, lam=s.lambda_lb, tau=r.data.tau,
                            fail_at=fail, **extra)

    def save2(model, dest):
        from langmoe.methods.dmoe.new_language_stage import write_languages_file

        save_moe(run.tokenizer)(model, dest)
        write_languages_file(dest, group_of)  # which expert serves which language (langmoe add-language)

    info2 = run.train_stage(s2, {"train": cfg2, "lambda": s.lambda_lb}, [s1], lambda: load_moe(run.model_dir(s1)),
                            train2, save2)
    return info1, info2, s2


def run_dmoe(run: RecipeRun, s, system: str = "dmoe") -> dict[str, Any]:

    r = run.recipe
    groups_dev, layers = ensure_analysis(run)
    if system == "dmoe_random":
        groups, gstage = ensure_random_groups(run), "groups_random"
    else:
        groups, gstage = groups_dev, "groups"
    group_of = group_of_map(groups)
    info1, info2, s2 = _train(run, s, system, groups, layers, [gstage, "layers"])
    tokens = info1["tokens_seen"] + info2["tokens_seen"]
    model_dir = run.model_dir(s2)

    def fn_learned():
        model = load_moe(model_dir)
        routing = routing_statistics(model, run.blocks(split=r.eval.split), group_of, r.eval.batch_size)
        name = "routing.json" if system == "dmoe" else f"routing_{system}.json"
        write_json(run.run_dir / name, {"system": system, "top_k": s.top_k, **routing})
        return run.evaluate(model, system, moe_params(model), tokens, group_of=group_of,
                            extra={"groups": groups, "moe_layers": layers, "routing_accuracy": routing["accuracy"],
                                   "stages": {"stage1": info1, "stage2": info2}})

    res = eval_stage(run, f"eval/{system}", {}, [s2], fn_learned)
    rows = {system: summary_row(res) | {"routing_accuracy": res.get("routing_accuracy")}}
    if s.hard_routing_eval:
        def fn_hard():
            model = load_moe(model_dir)
            return run.evaluate(model, f"{system}_hard", moe_params(model, hard=True), tokens,
                                forward_context=hard_routing, group_of=group_of)

        res_h = eval_stage(run, f"eval/{system}_hard", {}, [s2], fn_hard)
        rows[f"{system}_hard"] = summary_row(res_h)
    if system == "dmoe" and s.new_language is not None:
        from langmoe.methods.dmoe.new_language_stage import run_new_language

        run_new_language(run, s, s2, groups, layers)
    return rows


def run_dmoe_random(run: RecipeRun, s) -> dict[str, Any]:
    """The random-grouping ablation: DMoE on `random_grouping(languages, num_groups, seed)`."""
    return run_dmoe(run, s, "dmoe_random")
