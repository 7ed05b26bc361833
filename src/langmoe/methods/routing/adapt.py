"""Expert-level adaptation of a low-resource child language through its related high-resource parent.

Modes (all in the last N MoE layers, the rest of the model frozen):
- `seft`: the parent's language-specific experts + their router rows; other experts' logits masked to −inf;
- `ssft`: SEFT plus the `n_shared` shared experts (highest mean share), masked likewise;
- `aeft`: all experts of those layers + routers, no masking;
baselines at the same tokens: `lastn` (the complete last N decoder layers), `full` (everything), `lora` (peft LoRA
on the linear layers and, for stock models, the fused expert tensors of the last N decoder layers).

Frozen experts live in the same fused 3-D parameters as trained ones (`gate_up_proj [E, ...]`). Two things keep
their slices **bit-identical**: a gradient hook zeroes their rows (so AdamW moments stay 0 and grad clipping sees
only trained rows), and after every optimizer step their saved values are written back and their moment rows
zeroed (AdamW's decoupled weight decay multiplies every element of a parameter that has a gradient). Router rows
of masked experts are frozen the same way (they get no gradient through −inf; only decay would move them).
Masking is active only during training; evaluation routes freely, as in the paper's code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.methods.routing import metrics as M
from langmoe.methods.routing.analysis import default_alpha
from langmoe.methods.routing.collect import RoutingCounts
from langmoe.methods.routing.routers import mask_routing
from langmoe.methods.routing.selection import (
    check_router_still_chooses,
    default_candidates,
    default_last_n,
    pool_counts,
    reference_pool,
)
from langmoe.models.routers import FAMILIES, RouterLayer, freeze_rows, require_moe

__all__ = [
    "MODES",
    "AdaptConfig",
    "AdaptPlan",
    "SliceFreezer",
    "select_experts",
    "build_plan",
    "apply_lora",
    "run_adaptation",
]

MODES = ("seft", "ssft", "aeft", "lastn", "full", "lora")
Mode = Literal["seft", "ssft", "aeft", "lastn", "full", "lora"]
_LAYER_PREFIX = re.compile(r"^(.*?(?:^|\.)(?:layers|h|blocks)\.\d+)\.")


class AdaptConfig(BaseModel):
    """Settings of one adaptation run (scaled-down defaults for the built-in tiny setting)."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "ssft"
    child: str
    parent: str
    last_n: int | None = Field(None, ge=1, description="adapt the last N MoE layers (default: 2 as the paper, or "
                                                         "all if the model has fewer)")
    alpha: float | None = Field(None, gt=0, lt=1, description="share gap for specific experts (default 0.64/E)")
    n_shared: int = Field(2, ge=0, description="shared experts added by SSFT (paper: 1, 3 or 5 of 64)")
    pool: list[str] | None = Field(None, description="candidate reference languages (default: the routing counts' "
                                                     "languages); one per family is kept (selection.reference_pool)")
    steps: int = Field(50, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0, description="AdamW decoupled decay (paper 0.1)")
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    batch_size: int = Field(8, gt=0)
    block_len: int = Field(128, ge=2)
    seed: int = 0
    lora_r: int = Field(8, gt=0)
    lora_alpha: float = Field(16.0, gt=0)
    eval_chars: int = Field(20_000, ge=0, description="characters scored per language (0 = all)")
    eval_split: str = "test"


@dataclass
class AdaptPlan:
    """What a mode trains: whole parameters, row slices of fused ones, and the routing mask."""

    mode: str
    layers: list[int]  # decoder-layer indices adapted
    experts: dict[int, list[int]] | None  # trained experts per layer (seft/ssft/aeft)
    allowed: dict[int, list[int]] | None  # routing mask during training (seft/ssft)
    full: dict[str, nn.Parameter] = field(default_factory=dict)
    partial: dict[str, tuple[nn.Parameter, torch.Tensor]] = field(default_factory=dict)  # name -> (p, rows [E'])
    total: int = 0
    pool: list[str] | None = None  # reference languages the experts were selected over (seft/ssft)

    @property
    def trainable(self) -> int:
        n = sum(p.numel() for p in self.full.values())
        for p, rows in self.partial.values():
            n += int(rows.sum()) * (p.numel() // p.shape[0])
        return n

    @property
    def share(self) -> float:
        return self.trainable / max(self.total, 1)

    def summary(self) -> dict:
        return {"mode": self.mode, "layers": self.layers, "experts": self.experts, "allowed": self.allowed,
                "reference_pool": self.pool,
                "trainable_params": self.trainable, "total_params": self.total, "trainable_share": self.share}


# ------------------------------------------------------------------------------------------------ selection


def _target_positions(n_moe: int, last_n: int | None) -> list[int]:
    last_n = default_last_n(n_moe) if last_n is None else last_n
    if last_n > n_moe:
        raise LangmoeError(f"--last-n {last_n} is larger than the number of MoE layers ({n_moe}): use 1..{n_moe}")
    if last_n < 1:
        raise LangmoeError(f"--last-n must be at least 1, got {last_n}")
    return list(range(n_moe - last_n, n_moe))


def select_experts(rc: RoutingCounts, mode: str, parent: str, child: str, last_n: int | None,
                   alpha: float | None = None, n_shared: int = 2, pool: Sequence[str] | None = None
                   ) -> dict[int, list[int]]:
    """{decoder layer: experts to train} for seft/ssft/aeft. Specific and shared experts come from the reference
    pool only: `reference_pool(parent, child, pool or rc.langs)` (the parent plus one language per other family,
    as the paper's code). seft/ssft are refused when a layer would allow no more experts than top-k; seft also
    when a layer has no specific expert (ssft then trains that layer's shared experts, as the official code)."""
    if mode not in ("seft", "ssft", "aeft"):
        raise LangmoeError(f"expert selection is for seft/ssft/aeft, not {mode!r}")
    positions = _target_positions(len(rc.layers), last_n)
    if mode == "aeft":
        return {rc.layers[j]: list(range(rc.num_experts[j])) for j in positions}
    if parent not in rc.langs:
        raise LangmoeError(f"parent {parent!r} is not in the routing counts (languages: {', '.join(rc.langs)})")
    ref = reference_pool(parent, child, [x for x in pool if x in rc.langs] if pool else default_candidates(rc.langs))
    c = pool_counts(rc.array(), rc.langs, ref)
    alpha = default_alpha(max(rc.num_experts)) if alpha is None else alpha
    out: dict[int, list[int]] = {}
    empty = []
    for j in positions:
        spec = M.specific_experts(c, ref, j, alpha)[parent]
        if not spec:
            empty.append((rc.layers[j], M.max_gap(c, 0, j)))
        chosen = list(spec)
        if mode == "ssft":
            chosen += [e for e in M.shared_experts(c, j, n_shared) if e not in chosen]
        out[rc.layers[j]] = sorted(chosen)
    if empty and (mode == "seft" or len(empty) == len(positions)):  # ssft: shared experts alone in such a layer
        where = ", ".join(f"layer {layer} (largest gap {g:.3g})" for layer, g in empty)
        best = min(g for _, g in empty)
        fix = (f"use a smaller --alpha (e.g. --alpha {best * 0.9:.3g})" if best > 0 else
               "the parent leads no expert there over this pool, so no --alpha selects one: use --mode ssft "
               "(shared experts) or a model with more experts per language")
        raise LangmoeError(f"parent {parent!r} has no specific experts at alpha={alpha:.3g} in {where} over the "
                           f"reference pool {', '.join(ref)}: {fix}")
    check_router_still_chooses(out, {rc.layers[j]: rc.top_k[j] for j in positions}, mode)
    return out


# ------------------------------------------------------------------------------------------------ the plan


def _prefix(name: str) -> str:
    m = _LAYER_PREFIX.match(name)
    if m is None:
        raise LangmoeError(f"cannot tell the decoder layer of {name}: unsupported layout")
    return m.group(1) + "."


def _rows(num: int, experts: Sequence[int], offset: int) -> torch.Tensor:
    rows = torch.zeros(num, dtype=torch.bool)
    for e in experts:
        if e - offset >= 0:
            rows[e - offset] = True
    return rows


def build_plan(model: nn.Module, mode: str, last_n: int | None, experts: Mapping[int, Sequence[int]] | None = None,
               allowed: Mapping[int, Sequence[int]] | None = None) -> AdaptPlan:
    """Decide what trains. `experts` (seft/ssft/aeft) from `select_experts`; `allowed` defaults to `experts`
    for seft/ssft (None = no masking, the aeft case)."""
    if mode not in MODES:
        raise LangmoeError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    layers = require_moe(model, f"adaptation mode {mode!r}")
    targets: list[RouterLayer] = [layers[j] for j in _target_positions(len(layers), last_n)]
    total = sum(p.numel() for p in model.parameters())
    named = dict(model.named_parameters())
    plan = AdaptPlan(mode, [r.layer for r in targets], None, None, total=total)
    if mode == "full":
        plan.full = named
        return plan
    if mode in ("lastn", "lora"):
        prefixes = tuple(_prefix(r.name) for r in targets)
        plan.full = {n: p for n, p in named.items() if n.startswith(prefixes)}
        return plan
    if experts is None:
        raise LangmoeError(f"mode {mode!r} needs the experts to train (select_experts)")
    by_layer = {r.layer: r for r in targets}
    if set(experts) != set(by_layer):
        raise LangmoeError(f"experts are given for layers {sorted(experts)} but the last {last_n} MoE layers are "
                           f"{sorted(by_layer)}")
    plan.experts = {int(k): sorted(int(e) for e in v) for k, v in experts.items()}
    if mode in ("seft", "ssft"):
        plan.allowed = {int(k): sorted(int(e) for e in v) for k, v in (allowed or experts).items()}
    for li, r in by_layer.items():
        chosen = plan.experts[li]
        if r.family == "langmoe" and r.expert_offset and 0 in chosen:
            raise LangmoeError(f"layer {li}: expert 0 is frozen by construction (frozen_expert0) and cannot train")
        for name, p in r.expert_params.items():
            rows = _rows(p.shape[0], chosen, r.expert_offset)
            (plan.full.__setitem__(name, p) if bool(rows.all()) else plan.partial.__setitem__(name, (p, rows)))
        for name, p in r.router_params.items():
            rows = _rows(p.shape[0], chosen, 0)
            (plan.full.__setitem__(name, p) if bool(rows.all()) else plan.partial.__setitem__(name, (p, rows)))
    return plan


def set_trainable(model: nn.Module, plan: AdaptPlan) -> None:
    keep = {id(p) for p in plan.full.values()} | {id(p) for p, _ in plan.partial.values()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


class SliceFreezer:
    """Keep the frozen rows of partially trained parameters bit-identical under any torch optimizer.

    Inside the `with`: gradient hooks zero the frozen rows; after every `optimizer.step()` (a global torch
    post-step hook, removed on exit) the saved rows are written back and the optimizer's state rows
    (AdamW exp_avg / exp_avg_sq) for them set to 0.
    """

    def __init__(self, partial: Mapping[str, tuple[nn.Parameter, torch.Tensor]]):
        self.partial = dict(partial)
        self._saved: dict[str, torch.Tensor] = {}
        self._frozen: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> SliceFreezer:
        for name, (p, rows) in self.partial.items():
            frozen = ~rows.to(p.device)
            self._frozen[name] = frozen
            self._saved[name] = p.detach()[frozen].clone()
            self._handles.append(freeze_rows(p, frozen))
        if self.partial:
            from torch.optim.optimizer import register_optimizer_step_post_hook

            self._handles.append(register_optimizer_step_post_hook(self._after_step))
        return self

    def _after_step(self, optimizer, args, kwargs) -> None:
        ours = {id(p) for p, _ in self.partial.values()}
        if any(id(q) in ours for g in optimizer.param_groups for q in g["params"]):  # not other models' optimizers
            self.restore(optimizer)

    @torch.no_grad()
    def restore(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        for name, (p, _) in self.partial.items():
            frozen = self._frozen[name]
            p[frozen] = self._saved[name]
            if optimizer is not None:
                for v in optimizer.state.get(p, {}).values():
                    if torch.is_tensor(v) and v.shape == p.shape:
                        v[frozen] = 0

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


# ------------------------------------------------------------------------------------------------ LoRA


def apply_lora(model: nn.Module, plan: AdaptPlan, r: int = 8, alpha: float = 16.0) -> nn.Module:
    """Wrap the linear layers of the plan's decoder layers (routers excluded) with peft LoRA adapters, and the
    fused 3-D expert tensors of stock MoE models (peft `target_parameters`, one low-rank update per expert)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise LangmoeError("mode 'lora' needs the peft package: pip install peft") from None
    layers = require_moe(model, "LoRA on the last MoE layers")
    targets = {r_.layer for r_ in layers if r_.layer in plan.layers}
    prefixes = tuple(_prefix(r_.name) for r_ in layers if r_.layer in targets)
    routers = {r_.name for r_ in layers}
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and n.startswith(prefixes) and n not in routers]
    # fused 3-D experts of stock models ([E, out, in] / gpt_oss [E, in, out]): peft's per-expert parameter LoRA
    experts = [n for r_ in layers if r_.layer in targets and r_.family != "langmoe"
               for n, p in r_.expert_params.items() if p.ndim == 3]
    if not names and not experts:
        raise LangmoeError(f"no linear layers to put LoRA on in decoder layers {sorted(targets)}")
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=names, bias="none",
                     target_parameters=experts or None)
    return get_peft_model(model, cfg)


# ------------------------------------------------------------------------------------------------ the run


def _eval(model, tokenizer, corpus, langs: list[str], cfg: AdaptConfig) -> dict[str, dict]:
    from langmoe.eval.perplexity import evaluate_languages

    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 256
    window = min(256, max_pos)
    scores = evaluate_languages(model, tokenizer, corpus, langs, split=cfg.eval_split, window=window,
                                stride=window // 2, max_chars_per_lang=cfg.eval_chars or None)
    return {k: {"ppl": v.ppl, "bits_per_byte": v.bits_per_byte, "tokens": v.tokens} for k, v in scores.items()}


def prepare_adaptation(model: nn.Module, cfg: AdaptConfig, counts: RoutingCounts | None) -> AdaptPlan:
    """Validate and plan (no training, nothing written): the one-line errors come from here."""
    if cfg.child == cfg.parent:
        raise LangmoeError("child and parent must be different languages")
    if cfg.mode in ("seft", "ssft") and require_moe(model, f"adaptation mode {cfg.mode!r}")[0].family == "generic":
        mt = getattr(getattr(model, "config", None), "model_type", "?")
        raise LangmoeError(f"routing of model type {mt!r} cannot be masked yet (seft/ssft need it): use --mode aeft, "
                           "lastn, full or lora, or a model of type " + ", ".join(sorted(FAMILIES)))
    experts = None
    if cfg.mode in ("seft", "ssft", "aeft"):
        if cfg.mode != "aeft" and counts is None:
            raise LangmoeError(f"mode {cfg.mode!r} needs routing counts (--counts, or --langs to collect them)")
        if counts is not None:
            layers = [r.layer for r in require_moe(model, f"adaptation mode {cfg.mode!r}")]
            if counts.layers != layers:
                raise LangmoeError(f"the routing counts are for MoE layers {counts.layers} but the model has "
                                   f"{layers}: collect them on this model")
            experts = select_experts(counts, cfg.mode, cfg.parent, cfg.child, cfg.last_n, cfg.alpha, cfg.n_shared,
                                     cfg.pool)
        else:  # aeft without counts
            rl = require_moe(model, "adaptation mode 'aeft'")
            experts = {rl[j].layer: list(range(rl[j].num_experts)) for j in _target_positions(len(rl), cfg.last_n)}
    plan = build_plan(model, cfg.mode, cfg.last_n, experts)
    if cfg.mode in ("seft", "ssft"):
        plan.pool = reference_pool(cfg.parent, cfg.child, [x for x in cfg.pool if x in counts.langs] if cfg.pool
                                   else default_candidates(counts.langs))
    fam = require_moe(model)[0].family
    if fam == "sparsemixer" and plan.allowed and any(len(v) < 2 for v in plan.allowed.values()):
        raise LangmoeError("phimoe routes every token to 2 experts but a layer allows only 1: use --mode ssft or "
                           "a smaller --alpha")
    return plan


def run_adaptation(model: nn.Module, tokenizer, corpus, cfg: AdaptConfig, counts: RoutingCounts | None,
                   work_dir: str | Path, plan: AdaptPlan | None = None) -> tuple[nn.Module, dict]:
    """Train the child language for `cfg.steps` steps in the chosen mode; return (adapted model, result dict)
    with the trainable share and child/parent perplexity before and after (evaluation routes freely)."""
    from langmoe.data.packing import pack_corpus
    from langmoe.data.samplers import TemperatureSampler
    from langmoe.train.trainer import TrainConfig, train

    plan = plan or prepare_adaptation(model, cfg, counts)
    have = set(corpus.languages())
    for lang in (cfg.child, cfg.parent):
        if lang not in have:
            raise LangmoeError(f"language {lang!r} is not in the corpus (it has: {', '.join(sorted(have))})")
    need = cfg.steps * cfg.batch_size * cfg.block_len
    blocks = pack_corpus(corpus, tokenizer, [cfg.child], "train", cfg.block_len, max_tokens_per_lang=need)
    sampler = TemperatureSampler(blocks, cfg.batch_size, seed=cfg.seed)
    before = _eval(model, tokenizer, corpus, [cfg.child, cfg.parent], cfg)
    tcfg = TrainConfig(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
                       micro_batch_size=cfg.batch_size, seed=cfg.seed, progress=False, log_every=max(cfg.steps // 10, 1))
    torch.manual_seed(cfg.seed)
    if cfg.mode == "lora":
        for p in model.parameters():
            p.requires_grad_(False)
        wrapped = apply_lora(model, plan, cfg.lora_r, cfg.lora_alpha)
        lora_params = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        result = train(wrapped, sampler, tcfg, Path(work_dir) / "train")
        model = wrapped.merge_and_unload()
        trainable = lora_params
    else:
        set_trainable(model, plan)
        with ExitStack() as stack:
            stack.enter_context(SliceFreezer(plan.partial))
            if plan.allowed:
                stack.enter_context(mask_routing(model, plan.allowed))
            result = train(model, sampler, tcfg, Path(work_dir) / "train")
        trainable = plan.trainable
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    after = _eval(model, tokenizer, corpus, [cfg.child, cfg.parent], cfg)
    out = {
        "config": cfg.model_dump(mode="json"),
        **plan.summary(),
        "trainable_params": trainable,
        "trainable_share": trainable / max(plan.total, 1),
        "train_tokens": result.tokens_seen,
        "first_loss": result.losses[0] if result.losses else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "before": before,
        "after": after,
        "child_ppl_change": after[cfg.child]["ppl"] / before[cfg.child]["ppl"] - 1,
        "parent_ppl_change": after[cfg.parent]["ppl"] / before[cfg.parent]["ppl"] - 1,
    }
    return model, out
