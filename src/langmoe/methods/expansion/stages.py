"""The one expansion flow (MoE-LPR and LayerMoE, recipe or `langmoe expand`): plan, stage 1, stage 2, as cached,
resumable stages of a `RecipeRun` (its base loading, packing cache and model checks).

1. Plan (before the model changes, recomputed whenever a stage has to run): the method's new experts per layer,
   classifier layers and record fields, from the input model (`run.base()`), its lineage and the data.
2. Stage 1 `<name>/stage1`: expand (new experts = copies of the frozen FFN, xavier routers), then train new experts
   + routers on new-language text (`L_NTP + lb_weight · L_LB`); experts of earlier generations stay frozen.
3. Stage 2 `<name>/stage2`: the classifiers (LayerMoE), then routers (+ classifiers) on new text + the old-language
   replay (`L_NTP + lpr_weight · L_LPR (+ cls_weight · L_cls)`).

The last stage's model folder also holds `expansion.json` and the lineage, so it can be expanded again (lifelong)
and loaded anywhere like `langmoe expand`'s output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langmoe.data.samplers import TemperatureSampler
from langmoe.errors import LangmoeError
from langmoe.io import write_json
from langmoe.methods.expansion.config import STAGE2_ONLY
from langmoe.methods.expansion.data import ExpansionData, build_data, replay_source, stage2_old_share
from langmoe.methods.expansion.inputs import (
    CONFIG_KEY,
    EXPANSION_FILE,
    InputModel,
    check_languages,
    new_lineage,
    read_input,
)
from langmoe.methods.expansion.protect import gate_classes, group_firsts, protect_with_gate, strip_gates
from langmoe.methods.expansion.surgery import (
    expand_model,
    experts_per_layer,
    new_token_rows,
    params_of,
    set_classifiers,
    trainable_selector,
)
from langmoe.models.routers import freeze_expert_rows, freeze_rows
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import load_moe, save_moe
from langmoe.train.faults import maybe_fail
from langmoe.train.router_losses import classifier_term, load_balance_term, lpr_term
from langmoe.train.trainer import LossTerm, TrainResult, train

__all__ = ["ExpansionPlan", "PlanInputs", "ExpansionFlow", "train_config", "train_stage1", "train_stage2"]


@dataclass
class ExpansionPlan:
    """What a method decided before any training: new experts per layer, classifier layers, extra record fields."""

    new_experts: dict[int, int]
    classifier_layers: list[int] = field(default_factory=list)
    classifier_mode: str = "token"
    cls_weight: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlanInputs:
    """What a method's plan reads: the run (tokenizer, corpus, packed text), the method's config, the input model
    (loaded), what kind it is and its lineage, and the expert-0 languages."""

    run: RecipeRun
    cfg: Any
    model: Any
    input: InputModel
    expert0: list[str]


PlanFn = Callable[[PlanInputs], ExpansionPlan]


# ---- the two training stages -----------------------------------------------------------------------------------


def train_config(cfg, stage, seed_offset: int, weight_decay: float | None = None, save_every: int = 0
                 ) -> dict[str, Any]:
    """The trainer's config of one stage (`stage`: Stage1Settings / Stage2Settings)."""
    return {
        "steps": stage.steps, "lr": stage.lr, "warmup_ratio": stage.warmup_ratio,
        "weight_decay": stage.weight_decay if weight_decay is None else weight_decay, "grad_clip": stage.grad_clip,
        "micro_batch_size": cfg.micro_batch_size, "seed": cfg.seed + seed_offset, "progress": False,
        "log_every": max(1, stage.steps // 10), "save_every": save_every,
    }


def train_stage1(model, cfg, data: ExpansionData, out_dir: Path, frozen_prefix: Mapping[int, int] | None = None,
                 trainable="moe", terms: bool = True, save_every: int = 0, fail_at: int | None = None,
                 router_rows: bool = False, embedding_rows=None):
    """Stage 1 on new-language text only: new experts + routers train (`trainable="moe"`), everything else frozen;
    `L_NTP + lb_weight · mean_layers(L_LB)`. `trainable="all"` / a set of parameter ids: baselines.
    `save_every` checkpoints (a rerun resumes); `fail_at` injects a crash (tests); `router_rows`: the earlier
    experts' router rows are frozen too (a lifelong step under `--protect gate`); `embedding_rows` (bool
    `[vocab]`, `--train-new-embeddings`): these input-embedding rows train too, the others keep their values."""
    source = TemperatureSampler(data.new, cfg.micro_batch_size, tau=cfg.tau, seed=cfg.seed)
    # experts of earlier generations get zero gradient: with weight decay 0 AdamW leaves them bit-identical
    handles = freeze_expert_rows(model, frozen_prefix, router_rows=router_rows) if frozen_prefix else []
    select = trainable_selector(model, trainable, ("experts", "router"))
    if embedding_rows is not None:  # the same for the embedding rows outside `embedding_rows`
        emb = model.get_input_embeddings().weight
        handles.append(freeze_rows(emb, ~embedding_rows))
        select = _also(select, emb)
    wd = 0.0 if handles else None
    # the official MoE-LPR loss is transformers' Mixtral-style function: top_k x the Switch-style form we compute
    lb = cfg.lb_weight * cfg.top_k
    loss_terms = [LossTerm("load_balance", lb, load_balance_term())] if terms and lb else []
    try:
        return train(model, maybe_fail(source, fail_at), train_config(cfg, cfg.stage1, 0, wd, save_every), out_dir,
                     loss_terms=loss_terms, trainable=select)
    finally:
        for h in handles:
            h.remove()


def _also(select, extra):
    """`select`, and `extra` too."""
    return lambda name, p: p is extra or select(name, p)


def train_stage2(model, cfg, data: ExpansionData, out_dir: Path, cls_weight: float = 0.0, trainable="moe",
                 terms: bool = True, save_every: int = 0, fail_at: int | None = None,
                 frozen_rows: Mapping[int, int] | None = None):
    """Stage 2 on new-language text + the old-language replay: routers (+ classifiers) only;
    `L_NTP + lpr_weight · L_LPR (+ cls_weight · L_cls)`, expert-0 languages as "old". `frozen_rows`: router rows
    of earlier experts that keep their values (zero gradient, weight decay 0)."""
    handles = freeze_expert_rows(model, frozen_rows, router_rows=True) if frozen_rows else []
    try:
        return _train_stage2(model, cfg, data, out_dir, cls_weight, trainable, terms, save_every, fail_at,
                             0.0 if handles else None)
    finally:
        for h in handles:
            h.remove()


def _train_stage2(model, cfg, data, out_dir, cls_weight, trainable, terms, save_every, fail_at, wd):
    loss_terms = []
    if terms and data.expert0_ids:  # without replay there is no old-language token to score
        if cfg.lpr_weight:
            loss_terms.append(LossTerm("lpr", cfg.lpr_weight, lpr_term(data.expert0_ids)))
        if cls_weight:
            loss_terms.append(LossTerm("classifier", cls_weight, classifier_term(data.expert0_ids)))
    return train(model, maybe_fail(replay_source(cfg, data), fail_at), train_config(cfg, cfg.stage2, 1, wd, save_every),
                 out_dir, loss_terms=loss_terms, trainable=trainable_selector(model, trainable, ("router", "classifier")))


def untrained(stage_dir: Path) -> TrainResult:
    """The result of a stage of 0 steps (the model is saved as it is)."""
    return TrainResult(final_step=0, start_step=0, out_dir=stage_dir)


def stage_record(info: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's line in expansion.json, from `RecipeRun.train_stage`'s result."""
    return {"steps": info["final_step"], "tokens_seen": int(info["tokens_seen"]), "tokens_per_s": info["tokens_per_s"],
            "last_loss": info["last_loss"], "elapsed_s": info["elapsed_s"]}


# ---- the flow ---------------------------------------------------------------------------------------------------


class ExpansionFlow:
    """One expansion system in a run: `name` (moe_lpr, layermoe, ...), its full config and its plan function."""

    def __init__(self, run: RecipeRun, name: str, cfg, plan_fn: PlanFn, method: str | None = None):
        self.run, self.name, self.cfg, self.plan_fn = run, name, cfg, plan_fn
        self.method = method or name
        self.input = read_input(run.model_path)
        self.expert0 = check_languages(cfg.new, cfg.old, run.corpus, self.input)
        if cfg.protect == "gate" and not cfg.stage2.steps:  # before anything runs
            raise LangmoeError("--protect gate fits its gates after stage 2: give stage 2 some steps")
        self.final_model = None  # the last stage's trained model, when it ran in this process
        self._prepared: dict[str, Any] = {}

    # -- what a stage needs, computed only when one has to run (a finished run loads nothing)
    def data(self) -> ExpansionData:
        if "data" not in self._prepared:
            self._prepared["data"] = build_data(self.run, self.cfg, self.expert0)
        return self._prepared["data"]

    def plan(self) -> ExpansionPlan:
        if "plan" not in self._prepared:
            self.data()  # packed (and checked: every language has text) before the plan reads the model
            model = self.run.base()
            self._prepared["base"] = model  # stage 1 expands this copy (no second load)
            self._prepared["plan"] = self.plan_fn(PlanInputs(self.run, self.cfg, model, self.input, self.expert0))
        return self._prepared["plan"]

    @property
    def eval_langs(self) -> list[str]:
        return list(dict.fromkeys(self.input.known_langs + self.cfg.old + self.cfg.new))

    def settings(self) -> dict[str, Any]:
        return self.cfg.model_dump(mode="json", exclude={"threads", "work_dir", "save_every", "eval", "evaluate"})

    # -- stages
    def run_stages(self) -> dict[str, Any]:
        """Stage 1 and (if it has steps) stage 2; returns the last stage's name, its tokens and the stage records."""
        run, cfg, settings = self.run, self.cfg, self.settings()
        key1 = {"input": run.input_key, "expansion": {k: v for k, v in settings.items() if k not in STAGE2_ONLY}}
        s1 = f"{self.name}/stage1"
        info1 = run.train_stage(s1, key1, [], self._load1, self._train1, self._saver(final=cfg.stage2.steps == 0))
        stages = {"stage1": stage_record(info1)}
        # 0: experts of earlier generations are frozen by zero gradients, which decay would move
        stages["stage1"]["weight_decay"] = 0.0 if self.input.kind == "expansion" else cfg.stage1.weight_decay
        last = s1
        if cfg.stage2.steps:
            s2 = f"{self.name}/stage2"
            key2 = {"input": run.input_key, "expansion": settings}  # stage 1's key enters through its dependency
            info2 = run.train_stage(s2, key2, [s1], lambda: self._load2(s1), self._train2, self._saver(final=True))
            stages["stage2"] = stage_record(info2)
            last = s2
        return {"stage": last, "tokens": sum(s["tokens_seen"] for s in stages.values()), "stages": stages}

    def _load1(self):
        self.plan()
        model = self._prepared.pop("base")
        model.train()
        strip_gates(model)  # a gated input (lifelong): stage 1 trains with plain learned routing
        before = expand_model(model, self.plan().new_experts, self.cfg.top_k, self.cfg.seed)
        self._prepared["frozen"] = {i: e for i, e in before.items() if e > 0}  # a lifelong step keeps them
        return model

    def _train1(self, model, out: Path, fail: int | None):
        if not self.cfg.stage1.steps:
            return untrained(out)
        return train_stage1(model, self.cfg, self.data(), out, frozen_prefix=self._prepared["frozen"],
                            save_every=self.run.recipe.save_every, fail_at=fail, router_rows=self.gated,
                            embedding_rows=self._embedding_rows(model))

    def _embedding_rows(self, model):
        """`--train-new-embeddings`: the rows of the tokens in the new languages' training text and in none of
        the old languages' (packed with the same cap); None without the option."""
        if not self.cfg.train_new_embeddings:
            return None
        if "embedding_rows" in self._prepared:
            return self._prepared["embedding_rows"]
        emb, out = model.get_input_embeddings(), model.get_output_embeddings()
        if out is not None and out.weight is emb.weight:
            raise LangmoeError("--train-new-embeddings: this model ties its input embeddings to the output layer, so "
                               "moving a row would change every old-language prediction; untie them first")
        old = self.run.blocks(self.cfg.old, "train", max_tokens_per_lang=self.cfg.max_train_tokens_per_lang)
        rows = new_token_rows(self.data().new, old, emb.weight.shape[0])
        self._prepared["embedding_rows"] = rows
        return rows

    def _load2(self, stage1: str):
        model = load_moe(self.run.model_dir(stage1))
        plan = self.plan()
        self._prepared.pop("base", None)  # stage 1 was cached: the input model was loaded for the plan only
        if plan.classifier_layers and not self.gated:  # under the gate, the gate decides old vs new
            model = set_classifiers(model, plan.classifier_layers, plan.classifier_mode, seed=self.cfg.seed + 3)
        return model

    @property
    def gated(self) -> bool:
        return self.cfg.protect == "gate"

    def _firsts(self, model) -> dict[int, list[int]]:
        return group_firsts(self.input.lineage, self.plan().new_experts, sorted(experts_per_layer(model)))

    def _train2(self, model, out: Path, fail: int | None):
        frozen = None
        if self.gated and self.input.kind == "expansion":  # earlier groups keep their routing among their experts
            frozen = {layer: f[-1] for layer, f in self._firsts(model).items()}
        res = train_stage2(model, self.cfg, self.data(), out, cls_weight=0.0 if self.gated else self.plan().cls_weight,
                           save_every=self.run.recipe.save_every, fail_at=fail, frozen_rows=frozen)
        if self.gated:
            classes = gate_classes(self.expert0, self.input.lineage, self.cfg.new, self.cfg.old)
            self._prepared["gate"] = protect_with_gate(model, self.run, classes, self.expert0, self.cfg.new,
                                                       self._firsts(model), self.cfg.max_intrusion,
                                                       mode=self.cfg.gate_mode)
        return res

    def _saver(self, final: bool) -> Callable[[Any, Path], None]:
        """Save a stage's model; the last stage's folder also records its lineage and `expansion.json`."""
        plain = save_moe(self.run.tokenizer)
        if not final:
            return plain

        def save(model, dest: Path) -> None:
            record = self.record(model)
            setattr(model.config, CONFIG_KEY, record["lineage"])
            plain(model, dest)
            write_json(dest / EXPANSION_FILE, record)
            self.final_model = model

        return save

    def record(self, model) -> dict[str, Any]:
        """expansion.json: the method, its settings, what the plan decided and the expanded model's numbers."""
        cfg, plan, data = self.cfg, self.plan(), self.data()
        return {
            "method": self.method, "config": cfg.model_dump(mode="json"), "expert0_langs": self.expert0,
            "lifelong": self.input.kind == "expansion", **plan.record,
            "replay_tokens": data.replay_tokens, "stage2_old_share": stage2_old_share(cfg, data),
            "experts_per_layer": {str(k): v for k, v in experts_per_layer(model).items()},
            "new_experts": {str(k): int(v) for k, v in sorted(plan.new_experts.items())},
            "new_experts_total": int(sum(plan.new_experts.values())),
            "classifier_layers": [] if self.gated else sorted(plan.classifier_layers), "params": params_of(model),
            "protect": {"kind": cfg.protect, **(self._prepared.get("gate") or {})},
            "new_embedding_rows": None if not cfg.train_new_embeddings else int(self._embedding_rows(model).sum()),
            "lineage": new_lineage(self.input.lineage, cfg.new, cfg.old, self.expert0, self.method, plan.new_experts),
        }
