"""The recipe: one typed, validated description of a DMoE experiment (model, data, grouping, stages, baselines).

`langmoe run recipe.yaml` and `langmoe demo` read a YAML file into `Recipe`; the resolved recipe (defaults filled
in) is written into every run folder as `config.yaml`, so a run says exactly what produced it. Every training
stage shares one micro-batch size and block length, so a token budget is a number of optimizer steps: all systems
are compared at the same budget `budget_steps = stage1.steps + stage2.steps` (see `Recipe.budget_tokens`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from langmoe.errors import LangmoeError

SYSTEMS = ("base", "dmoe", "dmoe_random", "cpt", "xelm", "btx")
System = Literal["base", "dmoe", "dmoe_random", "cpt", "xelm", "btx"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Optim(_Strict):
    """Optimiser settings of one training stage (a subset of `langmoe.train.trainer.TrainConfig`)."""

    steps: int = Field(gt=0)
    lr: float = Field(1e-4, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(0.3, ge=0)
    mixed_precision: Literal["no", "bf16"] = "no"


class DataSettings(_Strict):
    """How text becomes training blocks. Shared by every system so token budgets compare."""

    block_len: int = Field(128, ge=8, description="tokens per training sequence")
    micro_batch_size: int = Field(8, gt=0, description="sequences per optimizer step (all stages, all systems)")
    tau: float = Field(0.3, ge=0, le=1, description="language sampling p ∝ size^tau (inside a group for DMoE)")
    max_train_tokens_per_lang: int | None = Field(
        200_000, gt=0, description="cap on packed training tokens per language (None: all)"
    )


class DeviationSettings(_Strict):
    """Step A: per-language fine-tuning probes from the dense base (paper: 10 steps, LR 8e-6)."""

    steps: int = Field(10, gt=0)
    lr: float = Field(1e-4, gt=0, description="paper: 8e-6 at 2048x512 tokens per step; tiny models need more")
    vector_layers: Literal["last3", "all"] = "last3"


class NewLanguageSettings(_Strict):
    """Step G: add one expert per MoE layer for a language that was not grouped."""

    lang: str
    steps: int = Field(50, gt=0)
    lr: float = Field(2e-4, gt=0)
    alpha: float = Field(1.28, ge=0, description="weight of the router classification loss")
    replay: float = Field(0.25, ge=0, lt=1, description="share of each micro-batch that is old-language text "
                                                       "hard-routed to its group's expert (0: new language only)")


class EvalConfig(_Strict):
    """Held-out scoring (sliding window) shared by every system."""

    split: Literal["valid", "test"] = "test"
    window: int = Field(128, ge=2)
    stride: int = Field(64, ge=1)
    max_chars_per_lang: int | None = Field(6000, gt=0)
    batch_size: int = Field(8, gt=0)
    hard_routing: bool = Field(True, description="also evaluate DMoE with hard routing by group")
    routing_tokens_per_lang: int = Field(4096, gt=0, description="held-out tokens per language for routing stats")


class Recipe(_Strict):
    """A whole experiment. See docs/dmoe.md for every field and the defaults' reasons."""

    name: str = "dmoe"
    model: str = Field("builtin", description="a Hugging Face causal LM folder, or 'builtin' (shipped tiny base)")
    corpus: str = Field("builtin", description="'builtin' or a corpus folder (see langmoe.data.corpus)")
    languages: list[str] = Field(min_length=2)
    num_groups: int = Field(2, ge=1, description="K: groups = experts per MoE layer")
    groups: list[list[str]] | None = Field(None, description="fixed grouping; skips deviation-based grouping")
    epsilon: float = Field(0.6, ge=0, le=1, description="layer l becomes MoE iff normalised deviation >= epsilon")
    moe_layers: list[int] | None = Field(None, description="fixed MoE layers; skips layer selection")
    top_k: int = Field(2, ge=1, description="experts per token in stage 2 and at evaluation")
    alpha_rc: float = Field(1.28, ge=0, description="stage 1 router-classification loss weight")
    lambda_lb: float = Field(0.02, ge=0, description="stage 2 load-balancing loss weight")
    data: DataSettings = DataSettings()
    deviation: DeviationSettings = DeviationSettings()
    stage1: Optim = Optim(steps=20)
    stage2: Optim = Optim(steps=80)
    new_language: NewLanguageSettings | None = None
    xelm_ensemble: Literal["uniform", "posterior"] = Field(
        "posterior", description="X-ELM ensemble weights: uniform, or each branch's likelihood of the prefix"
    )
    eval: EvalConfig = EvalConfig()
    seed: int = 0
    systems: list[System] = Field(default_factory=lambda: ["base", "dmoe", "cpt"])
    threads: int = Field(2, ge=1, description="torch CPU threads")
    save_every: int = Field(20, ge=0, description="checkpoint every N steps inside training stages (resume)")

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if len(set(self.languages)) != len(self.languages):
            raise ValueError("languages: list each language once")
        if self.num_groups > len(self.languages):
            raise ValueError(f"num_groups {self.num_groups} exceeds the {len(self.languages)} languages")
        if self.groups is not None:
            flat = [x for g in self.groups for x in g]
            if sorted(flat) != sorted(self.languages) or any(not g for g in self.groups):
                raise ValueError("groups must partition `languages` into non-empty groups")
            if len(self.groups) != self.num_groups:
                raise ValueError(f"groups has {len(self.groups)} groups but num_groups is {self.num_groups}")
        if self.new_language is not None and self.new_language.lang in self.languages:
            raise ValueError(f"new_language.lang {self.new_language.lang!r} must not be one of `languages`")
        if len(set(self.systems)) != len(self.systems) or not self.systems:
            raise ValueError("systems: list each system once, at least one")
        if self.top_k > self.num_groups:
            raise ValueError(f"top_k {self.top_k} exceeds num_groups {self.num_groups}")
        if self.eval.stride >= self.eval.window:
            raise ValueError("eval.stride must be smaller than eval.window")
        return self

    # -- token budgets ----------------------------------------------------------------------------------------

    @property
    def budget_steps(self) -> int:
        """Optimizer steps every system gets (DMoE: stage 1 + stage 2)."""
        return self.stage1.steps + self.stage2.steps

    @property
    def tokens_per_step(self) -> int:
        return self.data.micro_batch_size * self.data.block_len

    @property
    def budget_tokens(self) -> int:
        return self.budget_steps * self.tokens_per_step

    def train_config(self, optim: Optim, seed_offset: int = 0, steps: int | None = None) -> dict[str, Any]:
        """The trainer's config dict for one stage."""
        return {
            **optim.model_dump(exclude={"steps"}),
            "steps": steps if steps is not None else optim.steps,
            "micro_batch_size": self.data.micro_batch_size,
            "grad_accum": 1,
            "seed": self.seed + seed_offset,
            "save_every": self.save_every,
            "log_every": 10,
            "keep_checkpoints": 1,
        }


def parse_recipe(data: dict[str, Any] | Recipe) -> Recipe:
    """Validate a recipe dict; any problem raises LangmoeError naming the field (one line)."""
    if isinstance(data, Recipe):
        return data
    if not isinstance(data, dict):
        raise LangmoeError("a recipe must be a YAML mapping of fields (see recipes/dmoe.yaml)")
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise LangmoeError(f"recipe: {loc}: {msg}" if loc else f"recipe: {msg}") from None


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe YAML file; `overrides` replace top-level fields."""
    p = Path(path)
    if not p.is_file():
        raise LangmoeError(f"recipe {p} does not exist: give a YAML file (see recipes/dmoe.yaml)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise LangmoeError(f"recipe {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise LangmoeError(f"recipe {p} is not UTF-8 text: save it as UTF-8") from None
    if isinstance(data, dict) and overrides:
        data = {**data, **overrides}
    return parse_recipe(data)


def builtin_recipe_path(name: str = "demo") -> Path:
    """A recipe shipped inside the package (`langmoe/recipes/<name>.yaml`)."""
    p = Path(__file__).resolve().parent / "recipes" / f"{name}.yaml"
    if not p.is_file():
        raise LangmoeError(f"no built-in recipe {name!r} at {p}: reinstall langmoe")
    return p
