"""DMoE's settings: one `systems` entry `{name: dmoe, ...}` (or `dmoe_random`) of a recipe (see docs/dmoe.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from langmoe.config import MethodConfig, is_partition
from langmoe.methods.dmoe.deviation import DEFAULT_GRAD_ACCUM, DEFAULT_KIND, DEFAULT_STEPS, LEGACY_PROBE
from langmoe.train.optim import StageOptim

ANALYSIS_FIELDS = ("num_groups", "groups", "tie_break", "epsilon", "moe_layers", "deviation")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviationSettings(_Strict):
    """Step A: per-language probes from the dense base (`langmoe.methods.dmoe.deviation`; the paper: AdamW, all
    parameters, 10 steps at LR 8e-6 of ~1M tokens). Defaults: the cheapest setting measured to give stable groups
    (docs/dmoe-analysis.md)."""

    kind: Literal["gradient", "sgd", "adamw"] = Field(
        DEFAULT_KIND, description="sgd: plain SGD steps on the FFN; gradient: mean FFN gradient at the base (no "
        "update); adamw: the paper's probe (with params: all)")
    steps: int = Field(DEFAULT_STEPS, gt=0)
    lr: float | None = Field(None, gt=0, description="LR of sgd/adamw (None: 3e-4 for adamw, the shipped recipes' "
                             "value on the tiny bases; 0.3 for sgd); paper 8e-6 at 2048x512 tokens per step")
    vector_layers: Literal["last3", "all"] = "last3"
    grad_accum: int = Field(DEFAULT_GRAD_ACCUM, gt=0, description="micro-batches per probe step: tokens per step = "
                                                 "micro_batch_size × grad_accum × block_len")
    stability: bool = Field(True, description="probe twice (seed, seed + 1) and report the agreement")
    params: Literal["measured", "all"] = Field("measured", description="measured: only the FFN matrices train "
                                               "(attention too with attention: true); all: every parameter")
    attention: bool = Field(False, description="also train and measure attention (plots only)")
    center: bool = Field(True, description="cosines of the language vectors minus their mean over languages")
    mixed_precision: Literal["no", "bf16"] = "no"
    optimizer_state: Literal["float32", "bfloat16"] = Field("float32", description="adamw's moments (bfloat16: "
                                                            "half the optimizer memory)")

    def stage_key(self) -> dict:
        """The fields as the run's stage key sees them: fields added after a run was made drop out while they
        keep the old probe's value, so runs that pin it (benchmarks/dmoe_builtin.yaml) are not re-run."""
        out = self.model_dump()
        for k, v in {**LEGACY_PROBE, "attention": True, "mixed_precision": "no", "optimizer_state": "float32"}.items():
            if out.get(k) == v:
                out.pop(k)
        return out

    def probe_config(self, micro_batch_size: int, seed: int, num_layers: int) -> dict:
        """The `DeviationConfig` fields of the run's probe (the vector over the last min(3, layers) layers)."""
        return {"kind": self.kind, "steps": self.steps, "lr": self.lr, "micro_batch_size": micro_batch_size,
                "grad_accum": self.grad_accum, "stability": self.stability, "params": self.params,
                "include_attention": self.attention, "center": self.center,
                "mixed_precision": self.mixed_precision, "optimizer_state": self.optimizer_state, "seed": seed,
                "last_n_layers": min(3, num_layers) if self.vector_layers == "last3" else None}


class NewLanguageSettings(_Strict):
    """Step G: add one expert per MoE layer for a language that was not grouped."""

    lang: str
    steps: int = Field(50, gt=0)
    lr: float = Field(2e-4, gt=0)
    alpha: float = Field(1.28, ge=0, description="weight of the router classification loss")
    replay: float = Field(0.25, ge=0, lt=1, description="share of each micro-batch that is old-language text "
                                                       "hard-routed to its group's expert (0: new language only)")
    init: Literal["margin", "copy"] = Field("margin", description="new router row: the source row lowered by "
                                            "`margin` on the old languages' centroid (margin), or a tied copy")
    margin: float = Field(2.0, ge=0, description="logit gap of the new row below its source on old languages")
    keep_out: float = Field(1.0, ge=0, description="weight of the hinge keeping the new row `margin` below old "
                                                   "tokens' k-th logit (needs replay > 0)")
    freeze_old_rows: bool = Field(True, description="the old experts' router rows do not train (old tokens change "
                                                    "only where the new expert enters their top-k)")
    routing: Literal["gate", "router"] = Field(
        "gate", description="how learned routing reaches the new expert: a language gate in front of the router "
        "(old tokens keep their old routing exactly unless the gate sends them to the new expert), or the copied "
        "router row (the paper; `init`, `margin`, `keep_out`, `freeze_old_rows` apply to it)")
    gate_mode: Literal["prefix", "token"] = Field(
        "prefix", description="the gate reads the running mean of the sequence so far (prefix) or each token alone")
    # 2%: on the demo (ga), 0.5% / 1% / 2% / 5% gave ga 76.6 / 65.8 / 62.9 / 62.7 and old +0.00% / +0.00% / +0.00% /
    # +0.14% (docs/dmoe.md); the bound counts every position, and most intrusions sit in a block's first tokens
    max_intrusion: float = Field(0.02, ge=0, lt=1, description="the gate's threshold is set so that in every "
                                 "old language at most this share of tokens go to a new expert (measured on training text the gate "
                                 "was not fitted on)")


class DmoeSettings(MethodConfig):
    """Analysis (A-C), upcycling (D), two training stages (E), evaluation (F), an optional new language (G).

    `stage1.steps + stage2.steps` must equal the recipe's `budget_steps`; the stages' optimiser settings default to
    the recipe's shared `optim`."""

    # Stage 1 ≈ 10% of the budget (the paper: 150 of 1,650 steps); 40% cost ~4 ppl on the built-in benchmark.
    optim_fields = {"stage1": 10, "stage2": 90}

    num_groups: int = Field(2, ge=1, description="K: groups = experts per MoE layer")
    groups: list[list[str]] | None = Field(None, description="fixed grouping; skips deviation-based grouping")
    tie_break: Literal["mean", "official"] = Field(
        "mean", description="equal-diameter subsets: mean = smaller mean distance; official = first in "
                            "combination order (reproduces ZNLP/DMoE's script)")
    epsilon: float = Field(0.6, ge=0, le=1, description="layer l becomes MoE iff normalised deviation >= epsilon")
    moe_layers: list[int] | None = Field(None, description="fixed MoE layers; skips layer selection")
    deviation: DeviationSettings = DeviationSettings()
    top_k: int = Field(2, ge=1, description="experts per token in stage 2 and at evaluation")
    alpha_rc: float = Field(1.28, ge=0, description="stage 1 router-classification loss weight")
    lambda_lb: float = Field(0.02, ge=0, description="stage 2 load-balancing loss weight")
    stage1: StageOptim = StageOptim(steps=10)
    stage2: StageOptim = StageOptim(steps=90)
    schedule: Literal["continuous", "restart"] = Field(
        "continuous",
        description="continuous: one warmup-cosine over stage1+stage2 and AdamW state carried over the hand-off; "
                    "restart: each stage its own optimiser, warmup and cosine (the paper's separate runs)")
    new_language: NewLanguageSettings | None = None
    hard_routing_eval: bool = Field(True, description="also evaluate with hard routing by group")

    def extra_languages(self) -> list[str]:
        return [self.new_language.lang] if self.new_language else []

    def analysis(self) -> dict:
        return {k: getattr(self, k) for k in ANALYSIS_FIELDS}

    def check(self, recipe) -> None:
        langs = recipe.languages
        if self.num_groups > len(langs):
            raise ValueError(f"num_groups {self.num_groups} exceeds the {len(langs)} languages")
        if self.groups is not None:
            if not is_partition(self.groups, langs):
                raise ValueError("groups must partition `languages` into non-empty groups")
            if len(self.groups) != self.num_groups:
                raise ValueError(f"groups has {len(self.groups)} groups but num_groups is {self.num_groups}")
        if self.new_language is not None and self.new_language.lang in langs:
            raise ValueError(f"new_language.lang {self.new_language.lang!r} must not be one of `languages`")
        if self.top_k > self.num_groups:
            raise ValueError(f"top_k {self.top_k} exceeds num_groups {self.num_groups}")
        if self.stage1.steps + self.stage2.steps != recipe.budget_steps:
            raise ValueError(f"stage1.steps + stage2.steps = {self.stage1.steps + self.stage2.steps} but "
                             f"budget_steps is {recipe.budget_steps}: make them equal (equal token budget)")
        for s in recipe.systems:
            other = getattr(s, "settings", None)
            if isinstance(other, DmoeSettings) and other is not self and other.analysis() != self.analysis():
                raise ValueError(f"{', '.join(ANALYSIS_FIELDS)} must match those of {s.name} (one language "
                                 "grouping per run)")


def grouping_settings(recipe) -> DmoeSettings:
    """The settings of the run's language grouping: the first DMoE entry's, else DMoE's defaults."""
    for s in recipe.systems:
        if isinstance(s.settings, DmoeSettings):
            return s.settings
    return recipe.default_settings("dmoe")
