"""`langmoe expand` (and each expansion method's `run(config, out)`): one expansion as a one-system recipe.

The flat config becomes a recipe (model, corpus, the languages to score, data, evaluation, seed, and a budget of
stage-1 + stage-2 steps) whose run folder is `work_dir` (a rerun resumes its stages) or a temporary folder; the
same `RecipeRun` stages as in `langmoe run` do the work: the input model scored as it is (the registry's `base`
system: "before"), the expansion's stages, its evaluation ("after", routing). The last stage's model folder is then
published to `out` with `expansion.json` (what was done, Old / New before and after, routing per layer) and the
training logs (`logs/stage1.jsonl`, `logs/stage2.jsonl`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from langmoe import registry
from langmoe.data.corpus import open_corpus
from langmoe.io import read_json, write_folder_atomically, write_json
from langmoe.methods.expansion.baselines import DenseBaselineFlow
from langmoe.methods.expansion.config import RECIPE_OWNED, parse_config
from langmoe.methods.expansion.inputs import EXPANSION_FILE, check_languages, read_input
from langmoe.methods.expansion.report import evaluate_expansion, old_new_means
from langmoe.methods.expansion.stages import ExpansionFlow, PlanFn
from langmoe.models.folders import resolve_model_path
from langmoe.models.moe_io import load_model_any
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import dense_params
from langmoe.pipeline.stages import eval_stage

__all__ = ["ExpansionResult", "expand", "one_system_recipe"]


@dataclass
class ExpansionResult:
    out: Path
    record: dict[str, Any]
    model: Any = None


def one_system_recipe(cfg, name: str, languages: list[str]) -> dict[str, Any]:
    """The recipe of one expansion: what the flat config says about model, data, evaluation and budget, and the
    system's own settings as its entry (stage 2's share of the steps given exactly by the two step counts)."""
    s1, s2 = cfg.stage1.steps, cfg.stage2.steps
    own = cfg.model_dump(mode="json", exclude=set(RECIPE_OWNED) | {"variant"})
    own["stage1"] = {k: v for k, v in own["stage1"].items() if k != "steps"}
    own["stage2"] = {k: v for k, v in own["stage2"].items() if k != "steps"}
    return {
        "name": f"expand-{name}", "model": cfg.model, "corpus": cfg.corpus, "languages": languages,
        "data": {"block_len": cfg.block_len, "micro_batch_size": cfg.micro_batch_size, "tau": cfg.tau,
                 "max_train_tokens_per_lang": cfg.max_train_tokens_per_lang},
        "budget_steps": max(s1 + s2, 1), "eval": _eval(cfg), "seed": cfg.seed,
        "threads": cfg.threads or torch.get_num_threads(), "save_every": _save_every(cfg),
        "systems": [{"name": name, **own, "stage2_share": s2 / (s1 + s2) if s1 + s2 else 0.0}],
    }


def _save_every(cfg) -> int:
    """Checkpoints only where a rerun can find them (a kept work folder), every 20 steps unless the config says."""
    if cfg.save_every is not None:
        return cfg.save_every
    return 20 if cfg.work_dir else 0


def _eval(cfg) -> dict[str, Any]:
    """The recipe's evaluation settings; without evaluation (`evaluate: false`) nothing is scored, so the scoring
    window follows the training length and the model check does not refuse a setting no step uses."""
    if cfg.evaluate:
        return cfg.eval.model_dump()
    return {**cfg.eval.model_dump(), "window": cfg.block_len, "stride": max(1, cfg.block_len // 2)}


def expand(config_cls: type, config: Mapping[str, Any] | Any, out: str | Path, name: str, plan_fn: PlanFn
           ) -> ExpansionResult:
    """Expand `config.model` to `config.new` (a dense model, or a langmoe expansion for a lifelong step) and
    write the model folder + expansion.json to `out`. `cfg.variant` "full_ft" / "lora" (where the config has it)
    runs the dense baseline on the same data instead."""
    cfg = parse_config(config_cls, config)
    model_in = read_input(resolve_model_path(cfg.model))
    check_languages(cfg.new, cfg.old, open_corpus(cfg.corpus), model_in)  # before the model checks, as always
    langs = list(dict.fromkeys(model_in.known_langs + cfg.old + cfg.new))
    run_dir = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="langmoe-expand-"))
    try:
        run = RecipeRun(one_system_recipe(cfg, name, langs), run_dir)
        run.setup()
        dense = getattr(cfg, "variant", None) in ("full_ft", "lora")
        flow = DenseBaselineFlow(run, f"{name}_{cfg.variant}", cfg, name) if dense else ExpansionFlow(
            run, name, cfg, plan_fn)
        before = registry.get_method("base").run(run, None) if cfg.evaluate else None
        done = flow.run_stages()
        record = {**read_json(run.model_dir(done["stage"]) / EXPANSION_FILE), "stages": done["stages"]}
        if cfg.evaluate:
            record.update(_scores(flow, done, before, dense))
        _publish(run, done, record, Path(out))
        model = flow.final_model
    finally:
        if not cfg.work_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
    return ExpansionResult(Path(out), record, model if model is not None else load_model_any(out)[0])


def _final(run: RecipeRun, done: Mapping[str, Any]):
    return load_model_any(run.model_dir(done["stage"]), dtype=torch.float32)[0]


def _scores(flow, done: Mapping[str, Any], before: Mapping[str, Any], dense: bool) -> dict[str, Any]:
    """Old / New before and after (held-out perplexity) and, for the MoE, how old-language tokens are routed."""
    old = [x for x in flow.run.recipe.languages if x not in flow.cfg.new]
    out: dict[str, Any] = {"before": old_new_means(before["base"]["ppl"], old, flow.cfg.new, before["base"]["bpb"])}
    if dense:
        def fn():
            model = _final(flow.run, done)
            return flow.run.evaluate(model, flow.name, dense_params(model), done["tokens"])

        after = eval_stage(flow.run, f"eval/{flow.name}", {}, [done["stage"]], fn)
    else:
        after = evaluate_expansion(flow, done["stage"], done["tokens"])
        out["routing"] = {"layers": after["expansion"]["routing"]}
        out["old_ways"] = after["expansion"]["old_ways"]
    out["after"] = old_new_means({k: v["ppl"] for k, v in after["langs"].items()}, old, flow.cfg.new,
                                 {k: v["bits_per_byte"] for k, v in after["langs"].items()})
    return out


def _publish(run: RecipeRun, done: Mapping[str, Any], record: dict[str, Any], out: Path) -> None:
    """The last stage's model folder, with `expansion.json` and the stages' logs, written to `out` atomically."""
    src = run.model_dir(done["stage"])
    stage_dirs = {k: run.runner.stage_dir(f"{done['stage'].rsplit('/', 1)[0]}/{k}") for k in done["stages"]}

    def writer(tmp: Path) -> None:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        write_json(tmp / EXPANSION_FILE, record)
        for stage, d in stage_dirs.items():
            log = d / "train" / "log.jsonl"
            if log.is_file():
                (tmp / "logs").mkdir(exist_ok=True)
                shutil.copy(log, tmp / "logs" / f"{stage}.jsonl")

    write_folder_atomically(out, writer)
