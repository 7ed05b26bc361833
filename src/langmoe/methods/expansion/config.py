"""Settings of an expansion (MoE-LPR, LayerMoE): the flat form `langmoe expand` and the library take, and the
recipe-entry form in which the recipe's top level owns model, corpus, data, evaluation, seed and the step budget.

Vocabulary: *expert-0 languages* are the languages the original dense FFN (kept as frozen expert 0) serves: the old
languages of a first expansion (G0). In a lifelong expansion (G0 -> G1 -> G2) they stay G0: G1 languages reach their
experts through the learned router, so for LPR and the old/new classifier they count as "not expert 0", while their
experts are frozen and their text is part of the replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from langmoe.config import MethodConfig
from langmoe.eval.settings import EXPAND_EVAL, ExpandEval, default_for
from langmoe.validation import validate

__all__ = ["StageSettings", "Stage1Settings", "Stage2Settings", "ExpansionConfig", "lang_list", "parse_config", "recipe_settings_class", "stage_steps", "stage_tokens", "replay_tokens",
           "STAGE2_ONLY", "RECIPE_OWNED"]


class StageSettings(BaseModel):
    """One training stage (AdamW, warmup + cosine). steps = 0 skips the stage."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(200, ge=0)
    lr: float = Field(1e-3, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, ge=0)


class Stage1Settings(StageSettings):
    """Stage 1: new experts + routers on new-language text. No weight decay, as the official recipe (transformers'
    default 0): decay pulls the new experts' copies of the FFN towards zero, away from the function they start
    from."""

    steps: int = Field(200, ge=0)
    weight_decay: float = Field(0.0, ge=0)


class Stage2Settings(StageSettings):
    """Stage 2: routers (+ classifiers) only. A router is one small linear layer per MoE layer: at the tiny scale
    it needs a 10x larger LR than the experts to learn LPR's routing in a few dozen steps (docs/expansion.md)."""

    steps: int = Field(50, ge=0)
    lr: float = Field(1e-2, gt=0)


def lang_list(v: Any) -> list[str]:
    if isinstance(v, str):
        v = [x.strip() for x in v.split(",")]
    return [str(x).strip() for x in v if str(x).strip()]


class ExpansionConfig(BaseModel):
    """Settings both methods share. Defaults are sized for the built-in tiny base on 2 CPU cores (docs/expansion.md)."""

    model_config = ConfigDict(extra="forbid")
    model: str = "builtin"
    new: list[str]
    old: list[str]
    corpus: str | list[str] = "builtin"  # a list mixes sources (open_corpus)
    top_k: int = Field(2, ge=1)
    block_len: int = Field(128, ge=8)
    micro_batch_size: int = Field(8, ge=1)
    max_train_tokens_per_lang: int | None = Field(400_000, ge=1)
    tau: float = Field(0.3, ge=0, le=1, description="new languages sampled ∝ blocks^tau")
    stage1: Stage1Settings = Stage1Settings()
    stage2: Stage2Settings = Stage2Settings()
    replay_share: float = Field(0.1, ge=0, lt=1, description="old-language replay tokens / stage-1 tokens "
                                "(paper: < 0.01 of billions of tokens; 0.1 at the tiny scale, docs/expansion.md)")
    lb_weight: float = Field(0.01, ge=0, description="stage 1: L_NTP + lb_weight * mean_layers(L_LB), L_LB in the "
                             "official Mixtral-style form (top_k x langmoe's Switch-style load_balancing_loss)")
    lpr_weight: float = Field(0.1, ge=0, description="stage 2: + lpr_weight * L_LPR")
    protect: Literal["none", "gate"] = Field("none", description="gate: a calibrated language gate in front of "
                                              "every router after stage 2 (docs/expansion.md, 'A guarantee')")
    max_intrusion: float = Field(0.01, gt=0, lt=1, description="gate: share of each expert-0 language's held-out "
                                 "training tokens allowed out of the old class, per layer")
    gate_mode: Literal["sum", "prefix", "token"] = Field(
        "sum", description="gate: what the gate classifies per token: the causal running sum of the layer input "
        "(per-token evidence adds up over the context), its running mean, or the token alone (docs/expansion.md)")
    train_new_embeddings: bool = Field(
        False, description="stage 1 also trains the input-embedding rows of the tokens that occur in the new "
        "languages' training text and never in the old languages': a departure from both papers (they freeze the "
        "embeddings), for a script the base never saw (docs/expansion.md); MoE systems, untied embeddings, "
        "stage-1 weight decay 0")
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    eval: ExpandEval = default_for(EXPAND_EVAL)  # the one EvalSettings class, this context's defaults
    evaluate: bool = True
    work_dir: str | None = Field(None, description="the run folder (stages, logs, checkpoints: a rerun resumes); "
                                 "default: a temporary folder, removed at the end (logs copied)")
    save_every: int | None = Field(None, ge=0, description="checkpoint every N steps of a stage (0: only at the "
                                   "end); default: 20 with a work_dir (a killed run resumes exactly), else 0")

    @field_validator("new", "old", mode="before")
    @classmethod
    def _split(cls, v):
        return lang_list(v)

    @model_validator(mode="after")
    def _check_langs(self):
        if not self.new:
            raise ValueError("give at least one new language")
        if not self.old:
            raise ValueError("give at least one old language")
        for name, lst in (("new", self.new), ("old", self.old)):
            if len(set(lst)) != len(lst):
                raise ValueError(f"{name} languages list a language twice: {lst}")
        both = sorted(set(self.new) & set(self.old))
        if both:
            raise ValueError(f"new languages {both} are also old languages: a language is either new or old")
        if self.train_new_embeddings and self.stage1.weight_decay:
            raise ValueError("train_new_embeddings needs stage-1 weight decay 0: decay would move every embedding "
                             "row, the old languages' too")
        check_replay(self.replay_share, self.micro_batch_size * self.block_len, self.stage1.steps, self.stage2.steps)
        return self


def parse_config(cls: type[BaseModel], data: Mapping[str, Any] | BaseModel) -> Any:
    """Validate user input into `cls`; the first problem as one LangmoeError line."""
    return validate(cls, data if isinstance(data, BaseModel) else dict(data))


def stage_tokens(tokens_per_step: int, steps: int) -> int:
    return int(steps) * int(tokens_per_step)


def replay_tokens(replay_share: float, tokens_per_step: int, stage1_steps: int) -> int:
    """Old-language replay tokens: `replay_share` x the stage-1 tokens."""
    return int(round(replay_share * stage_tokens(tokens_per_step, stage1_steps)))


def check_replay(replay_share: float, tokens_per_step: int, stage1_steps: int, stage2_steps: int) -> None:
    """The replay is mixed into stage 2: it must fit there."""
    replay = replay_share * stage_tokens(tokens_per_step, stage1_steps)
    s2 = stage_tokens(tokens_per_step, stage2_steps)
    if stage2_steps and replay > s2:
        raise ValueError(f"the replay ({replay:.0f} tokens = replay_share x stage-1 tokens) is larger than stage 2 "
                         f"({s2} tokens): raise stage2 steps or lower replay_share")


# ---- the recipe-entry form -------------------------------------------------------------------------------------

# Settings stage 1 never reads (stage 2's optimiser and losses, the replay it mixes in, the classifiers it adds):
# changing them re-runs stage 2 only, so a sweep over e.g. `lpr_weight` trains stage 1 once.
STAGE2_ONLY = frozenset({"stage2", "lpr_weight", "replay_share", "cls_weight", "classifier_mode", "top_k_cls",
                         "cls_share", "max_intrusion", "gate_mode"})

# ExpansionConfig fields the recipe's top level decides (entries may not set them)
RECIPE_OWNED = ("model", "corpus", "seed", "threads", "block_len", "micro_batch_size", "max_train_tokens_per_lang",
                "tau", "eval", "evaluate", "work_dir", "save_every")


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


def _without(cls: type[BaseModel], drop: tuple[str, ...], name: str, doc: str, base: type | None = None,
             **extra: Any) -> type[BaseModel]:
    """A strict pydantic class with `cls`'s fields except `drop` (plus `extra` fields)."""
    fields = {k: (f.annotation, f) for k, f in cls.model_fields.items() if k not in drop}
    if base is None:
        return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=doc, **fields, **extra)
    return create_model(name, __base__=base, __doc__=doc, **fields, **extra)


def stage_steps(budget_steps: int, stage2_share: float) -> tuple[int, int]:
    """(stage 1, stage 2) optimizer steps that add up to the recipe's budget."""
    s2 = int(round(stage2_share * budget_steps))
    return budget_steps - s2, s2


class _RecipeEntry(MethodConfig):
    """Base of an expansion method's recipe entry: the replay must fit in stage 2 at the recipe's budget."""

    def check(self, recipe) -> None:
        s1, s2 = stage_steps(recipe.budget_steps, self.stage2_share)
        check_replay(self.replay_share, recipe.tokens_per_step, s1, s2)


def recipe_settings_class(config_cls: type[BaseModel], doc: str) -> type[BaseModel]:
    """The recipe-entry settings of an expansion method: its config without what the recipe's top level owns (one
    model, corpus, seed and data set-up per recipe) and without stage steps (the stages share `budget_steps`),
    plus `stage2_share`. The method's own checks (e.g. a language both new and old) run at parse time."""
    stages = {k: _without(config_cls.model_fields[k].annotation, ("steps",), f"Recipe{k.title()}",
                          f"{k}: its steps come from the recipe's budget_steps and stage2_share")
              for k in ("stage1", "stage2")}

    def method_checks(self):
        body = self.model_dump(exclude={"stage2_share"})
        body["stage1"], body["stage2"] = {**body["stage1"], "steps": 0}, {**body["stage2"], "steps": 0}
        try:
            config_cls.model_validate(body)
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self

    return _without(
        config_cls, RECIPE_OWNED + ("stage1", "stage2"), config_cls.__name__.replace("Config", "Settings"), doc,
        base=_RecipeEntry,
        stage1=(stages["stage1"], Field(default_factory=stages["stage1"])),
        stage2=(stages["stage2"], Field(default_factory=stages["stage2"])),
        stage2_share=(float, Field(0.2, ge=0, lt=1, description="share of budget_steps for stage 2 (routers)")),
        __validators__={"_recipe_owns": model_validator(mode="before")(classmethod(_recipe_owns)),
                        "_method_checks": model_validator(mode="after")(method_checks),
                        "_split_langs": field_validator("new", "old", mode="before")(lambda v: lang_list(v))},
    )


def expansion_config(recipe, settings, config_cls: type) -> Any:
    """The method's full config: the entry's settings plus what the recipe owns (one model, one corpus, one seed)."""
    s1, s2 = stage_steps(recipe.budget_steps, settings.stage2_share)
    body = settings.model_dump(exclude={"stage2_share"})
    body["stage1"] = {**body["stage1"], "steps": s1}
    body["stage2"] = {**body["stage2"], "steps": s2}
    body.update(model=str(recipe.model), corpus=recipe.corpus, seed=recipe.seed, threads=recipe.threads,
                block_len=recipe.data.block_len, micro_batch_size=recipe.data.micro_batch_size,
                max_train_tokens_per_lang=recipe.data.max_train_tokens_per_lang, tau=recipe.data.tau,
                eval=recipe.eval.model_dump(), evaluate=False)
    return config_cls.model_validate(body)
