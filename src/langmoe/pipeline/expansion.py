"""Expansion systems in a recipe (MoE-LPR, LayerMoE): the recipe owns the model, corpus, data, seed and budget.

A recipe entry holds only what is the method's own (new/old languages, experts, losses, learning rates). Stage 1
gets `budget_steps - stage 2` steps and stage 2 `round(stage2_share × budget_steps)`, with the recipe's micro-batch
and block length, so the system sees exactly the budget every other system does. Both stages are cached, resumable
training stages of the run; the evaluation scores the recipe's languages and records which are new and which old.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import load_moe, moe_params, save_moe
from langmoe.pipeline.stages import eval_stage
from langmoe.pipeline.summary import summary_row
from langmoe.train.expansion import lang_list

# Settings stage 1 never reads (stage 2's optimiser and losses, the replay it mixes in, the classifiers it adds):
# changing them re-runs stage 2 only, so a sweep over e.g. `lpr_weight` trains stage 1 once.
STAGE2_ONLY = frozenset({"stage2", "lpr_weight", "replay_share", "cls_weight", "classifier_mode", "top_k_cls"})

# ExpansionConfig fields the recipe's top level decides (entries may not set them)
RECIPE_OWNED = ("model", "corpus", "seed", "threads", "block_len", "micro_batch_size", "max_train_tokens_per_lang",
                "tau", "eval", "evaluate", "work_dir")


def _recipe_owns(cls, data: Any) -> Any:
    """One line for an entry that sets what the recipe owns (instead of pydantic's 'extra inputs')."""
    if not isinstance(data, dict):
        return data
    owned = [k for k in RECIPE_OWNED if k in data]
    if owned:
        raise ValueError(f"{', '.join(owned)} is set by the recipe's top level (model, corpus, data, eval, seed, "
                         "threads), not in a system entry")
    for stage in ("stage1", "stage2"):
        if isinstance(data.get(stage), dict) and "steps" in data[stage]:
            raise ValueError(f"{stage}.steps: the two stages share the recipe's budget_steps; set stage2_share")
    return data


def _without(cls: type[BaseModel], drop: tuple[str, ...], name: str, doc: str, **extra: Any) -> type[BaseModel]:
    """A strict pydantic class with `cls`'s fields except `drop` (plus `extra` fields)."""
    fields = {k: (f.annotation, f) for k, f in cls.model_fields.items() if k not in drop}
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=doc, **fields, **extra)


def recipe_settings_class(config_cls: type[BaseModel], doc: str) -> type[BaseModel]:
    """The recipe-entry settings of an expansion method: its config without what the recipe's top level owns (one
    model, corpus, seed and data set-up per recipe) and without stage steps (the stages share `budget_steps`),
    plus `stage2_share`. The method's own checks (e.g. a language both new and old) run at parse time."""
    stages = {k: _without(config_cls.model_fields[k].annotation, ("steps",), f"Recipe{k.title()}",
                          f"{k}: its steps come from the recipe's budget_steps and stage2_share")
              for k in ("stage1", "stage2")}

    def method_checks(self):
        body = self.model_dump(exclude={"stage2_share"})
        try:
            config_cls.model_validate(body)
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self

    return _without(
        config_cls, RECIPE_OWNED + ("stage1", "stage2"), config_cls.__name__.replace("Config", "Settings"), doc,
        stage1=(stages["stage1"], Field(default_factory=stages["stage1"])),
        stage2=(stages["stage2"], Field(default_factory=stages["stage2"])),
        stage2_share=(float, Field(0.2, ge=0, lt=1, description="share of budget_steps for stage 2 (routers)")),
        __validators__={"_recipe_owns": model_validator(mode="before")(classmethod(_recipe_owns)),
                        "_method_checks": model_validator(mode="after")(method_checks),
                        "_split_langs": field_validator("new", "old", mode="before")(lambda v: lang_list(v))},
    )


def stage_steps(budget_steps: int, stage2_share: float) -> tuple[int, int]:
    """(stage 1, stage 2) optimizer steps that add up to the recipe's budget."""
    s2 = int(round(stage2_share * budget_steps))
    return budget_steps - s2, s2


def expansion_config(run: RecipeRun, settings, config_cls: type) -> Any:
    """The method's full config: the entry's settings plus what the recipe owns (one model, one corpus, one seed)."""
    r = run.recipe
    s1, s2 = stage_steps(r.budget_steps, settings.stage2_share)
    body = settings.model_dump(exclude={"stage2_share"})
    body["stage1"] = {**body["stage1"], "steps": s1}
    body["stage2"] = {**body["stage2"], "steps": s2}
    body.update(model=str(run.model_path), corpus=r.corpus, seed=r.seed, threads=r.threads,
                block_len=r.data.block_len, micro_batch_size=r.data.micro_batch_size,
                max_train_tokens_per_lang=r.data.max_train_tokens_per_lang, tau=r.data.tau, evaluate=False)
    return config_cls.model_validate(body)


def run_expansion_system(run: RecipeRun, name: str, cfg, plan_fn: Callable[..., Any]) -> dict[str, Any]:
    """Stage 1 (expand, then new experts + routers), stage 2 (routers + classifiers), evaluation."""
    from langmoe.train import expansion as ex

    settings = cfg.model_dump(mode="json", exclude={"threads", "work_dir"})
    key1 = {"input": run.input_key, "expansion": {k: v for k, v in settings.items() if k not in STAGE2_ONLY}}
    key2 = {"input": run.input_key, "expansion": settings}  # stage 1's key enters through its dependency
    prepared: dict[str, Any] = {}

    def prep() -> ex.PreparedExpansion:  # only when a stage has to run (a finished run reloads nothing)
        if "p" not in prepared:
            prepared["p"] = ex.prepare_expansion(cfg, name, plan_fn, corpus=run.corpus)
        return prepared["p"]

    def load1():
        model, prepared["frozen"] = ex.expanded_model(prep())
        return model

    def train1(model, out, fail):
        return ex.train_stage1(model, cfg, prep().data, out, frozen_prefix=prepared["frozen"],
                               save_every=run.recipe.save_every, fail_at=fail)

    s1, s2 = f"{name}/stage1", f"{name}/stage2"
    info1 = run.train_stage(s1, key1, [], load1, train1, save_final(run, prep, final=cfg.stage2.steps == 0))
    last, info2 = s1, {"tokens_seen": 0}
    if cfg.stage2.steps:
        def load2():
            model = load_moe(run.model_dir(s1))
            plan = prep().plan
            if plan.classifier_layers:
                model = ex.set_classifiers(model, plan.classifier_layers, plan.classifier_mode, seed=cfg.seed + 3)
            return model

        def train2(model, out, fail):
            return ex.train_stage2(model, cfg, prep().data, out, cls_weight=prep().plan.cls_weight,
                                   save_every=run.recipe.save_every, fail_at=fail)

        info2 = run.train_stage(s2, key2, [s1], load2, train2, save_final(run, prep, final=True))
        last = s2
    tokens = int(info1["tokens_seen"]) + int(info2["tokens_seen"])
    return {name: summary_row(_evaluate(run, name, cfg, last, tokens))}


def save_final(run: RecipeRun, prep: Callable[[], Any], final: bool) -> Callable[[Any, Any], None]:
    """Save a stage's model; the last stage's folder also records its lineage and `expansion.json`, so it can be
    expanded again (lifelong) or loaded anywhere like `langmoe expand`'s output."""
    plain = save_moe(run.tokenizer)
    if not final:
        return plain

    def save(model, dest) -> None:
        from langmoe.io import write_json
        from langmoe.train import expansion as ex

        p = prep()
        lineage = p.lineage()
        setattr(model.config, ex.CONFIG_KEY, lineage)
        plain(model, dest)
        write_json(dest / ex.EXPANSION_FILE, {**p.record(), **ex.result_fields(p, model), "lineage": lineage})

    return save


def _evaluate(run: RecipeRun, name: str, cfg, stage: str, tokens: int) -> dict[str, Any]:
    """Scores on the recipe's languages, plus what the report shows per layer: experts, the plan's similarity,
    the share of old-language tokens whose first choice is the frozen expert 0, classifier accuracy."""

    def fn():
        from langmoe.io import read_json
        from langmoe.train import expansion as ex

        model = load_moe(run.model_dir(stage))
        model.eval()
        langs = run.recipe.languages
        rec = read_json(run.model_dir(stage) / ex.EXPANSION_FILE)
        routing = ex.routing_report(model, run.tokenizer, run.corpus, cfg, langs, rec["expert0_langs"])
        extra = {"expansion": {
            "new": [x for x in cfg.new if x in langs], "old": [x for x in langs if x not in cfg.new],
            "experts_per_layer": rec["experts_per_layer"], "new_experts": rec["new_experts"],
            "new_experts_total": rec["new_experts_total"], "classifier_layers": rec["classifier_layers"],
            "similarity": (rec.get("similarity") or {}).get("S"), "routing": routing["layers"]}}
        return run.evaluate(model, name, moe_params(model), tokens, extra=extra)

    return eval_stage(run, f"eval/{name}", {}, [stage], fn)
