"""What MoE-LPR and LayerMoE share: settings, data (new languages + old-language replay), the two training stages,
router/classifier set-up on existing MoE blocks, and the Old/New report (docs/methods.md §2-3).

Vocabulary: *expert-0 languages* are the languages the original dense FFN (kept as frozen expert 0) serves: the old
languages of a first expansion (G0). In a lifelong expansion (G0 -> G1 -> G2) they stay G0: G1 languages reach their
experts through the learned router, so for LPR and the old/new classifier they count as "not expert 0", while their
experts are frozen and their text is part of the replay.

Three helpers touch MoE-block internals that the public MoE API does not expose (each isolated here, flagged in
the docs): `_router_weight` (xavier-normal router init, docs/methods.md §2), `_block_parts` (which parameters are router /
classifier / experts, for the stage selectors) and `freeze_expert_prefix` (gradient masks on the fused expert tensors
so earlier generations' experts stay bit-identical).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from langmoe.errors import LangmoeError
from langmoe.train.faults import maybe_fail

EXPANSION_FILE = "expansion.json"
CONFIG_KEY = "langmoe_expansion"  # model.config attribute recording expansion lineage (lands in config.json)


# ---------------------------------------------------------------------------------------------------------------
# settings


class StageSettings(BaseModel):
    """One training stage (AdamW, warmup + cosine). steps = 0 skips the stage."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(200, ge=0)
    lr: float = Field(1e-3, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, ge=0)


class Stage1Settings(StageSettings):
    """Stage 1: new experts + routers on new-language text."""

    steps: int = Field(200, ge=0)


class Stage2Settings(StageSettings):
    """Stage 2: routers (+ classifiers) only. A router is one small linear layer per MoE layer: at the tiny scale
    it needs a 10x larger LR than the experts to learn LPR's routing in a few dozen steps (docs/expansion.md)."""

    steps: int = Field(50, ge=0)
    lr: float = Field(1e-2, gt=0)


class ExpansionEval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: str = "test"
    window: int = Field(128, ge=2)
    stride: int = Field(64, ge=1)
    max_chars_per_lang: int | None = Field(20_000, ge=1)
    batch_size: int = Field(8, ge=1)
    routing_tokens_per_lang: int = Field(4096, ge=16, description="held-out tokens per language for routing stats")


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
    block_len: int = Field(128, ge=2)
    micro_batch_size: int = Field(8, ge=1)
    max_train_tokens_per_lang: int | None = Field(400_000, ge=1)
    tau: float = Field(0.3, ge=0, description="new languages sampled ∝ blocks^tau")
    stage1: Stage1Settings = Stage1Settings()
    stage2: Stage2Settings = Stage2Settings()
    replay_share: float = Field(0.1, ge=0, lt=1, description="old-language replay tokens / stage-1 tokens "
                                "(paper: < 0.01 of billions of tokens; 0.1 at the tiny scale, docs/expansion.md)")
    lb_weight: float = Field(0.01, ge=0, description="stage 1: L_NTP + lb_weight * mean_layers(L_LB)")
    lpr_weight: float = Field(0.1, ge=0, description="stage 2: + lpr_weight * L_LPR")
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    eval: ExpansionEval = ExpansionEval()
    evaluate: bool = True
    work_dir: str | None = Field(None, description="training logs go here (default: a temp folder, logs copied)")

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
        return self


def parse_config(cls: type[BaseModel], data: Mapping[str, Any] | BaseModel) -> Any:
    """Validate user input into `cls`; the first problem as one LangmoeError line."""
    if isinstance(data, cls):
        return data
    try:
        return cls.model_validate(dict(data))
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise LangmoeError(f"{loc + ': ' if loc else ''}{msg}") from None


# ---------------------------------------------------------------------------------------------------------------
# data


@dataclass
class ExpansionData:
    """Packed train blocks: `new` (stage 1), `old` (the replay), `merged` (new langs first, then old: stage 2)."""

    new: Any
    old: Any | None
    merged: Any
    codes: list[str]
    expert0_ids: list[int]
    replay_tokens: int


def merge_blocks(a, b):
    """One PackedBlocks holding a's blocks then b's (b's language ids shifted past a's)."""
    from langmoe.data.packing import PackedBlocks

    return PackedBlocks.concat(a, b)


def _check_every_lang(blocks, split: str) -> None:
    empty = [c for c, n in blocks.counts().items() if n == 0]
    if empty:
        raise LangmoeError(f"languages {', '.join(empty)} have no {split} text in the corpus: give text for them "
                           "or drop them")


def stage_tokens(cfg: ExpansionConfig, steps: int) -> int:
    return int(steps) * cfg.micro_batch_size * cfg.block_len


def build_data(cfg: ExpansionConfig, corpus, tokenizer, expert0_langs: Sequence[str]) -> ExpansionData:
    """Pack the new languages' train text and a replay of the old ones of `replay_share × stage-1 tokens`."""
    from langmoe.data.packing import pack_corpus

    new = pack_corpus(corpus, tokenizer, cfg.new, "train", cfg.block_len, max_tokens_per_lang=cfg.max_train_tokens_per_lang)
    _check_every_lang(new, "train")
    replay = int(round(cfg.replay_share * stage_tokens(cfg, cfg.stage1.steps)))
    old = None
    if replay > 0:
        per_lang = max(cfg.block_len, math.ceil(replay / len(cfg.old)))
        old = pack_corpus(corpus, tokenizer, cfg.old, "train", cfg.block_len, max_tokens_per_lang=per_lang)
        _check_every_lang(old, "train")
    merged = merge_blocks(new, old) if old is not None else new
    codes = list(merged.index.codes)
    e0 = [codes.index(c) for c in expert0_langs if c in codes]
    return ExpansionData(new=new, old=old, merged=merged, codes=codes, expert0_ids=e0, replay_tokens=replay)


class ReplayMixSource:
    """Stage-2 micro-batches: each row is new-language text, except an evenly spread `old_share` of rows (counted
    over the global row number) that come from the old-language replay. A pure function of (step, micro, rank)."""

    def __init__(self, data: ExpansionData, batch_size: int, old_share: float, tau: float = 0.3, seed: int = 0,
                 grad_accum: int = 1):
        from langmoe.data.samplers import TemperatureSampler

        if not 0 <= old_share <= 1:
            raise LangmoeError(f"old-language share of stage 2 must be in [0, 1], got {old_share:.3f}: raise "
                               "stage2.steps or lower replay_share")
        if old_share > 0 and data.old is None:
            raise LangmoeError("a replay share needs old-language replay blocks")
        self.data, self.B, self.share, self.grad_accum = data, int(batch_size), float(old_share), int(grad_accum)
        self.new = TemperatureSampler(data.new, batch_size, tau=tau, seed=seed, grad_accum=grad_accum)
        self.old = (TemperatureSampler(data.old, batch_size, tau=tau, seed=seed + 7, grad_accum=grad_accum)
                    if data.old is not None and old_share > 0 else None)
        self.offset = len(data.new)

    def is_old_row(self, g: int) -> bool:
        return math.floor((g + 1) * self.share) - math.floor(g * self.share) >= 1

    def get(self, step: int, micro: int, rank: int = 0, world: int = 1):
        new_idx = self.new.indices(step, micro, rank, world)
        old_idx = self.old.indices(step, micro, rank, world) if self.old is not None else None
        base = ((step * self.grad_accum + micro) * world + rank) * self.B
        idx = [old_idx[j] + self.offset if old_idx is not None and self.is_old_row(base + j) else new_idx[j]
               for j in range(self.B)]
        return self.data.merged.batch(idx)


# ---------------------------------------------------------------------------------------------------------------
# MoE internals, isolated (see module doc)


def _router_weight(block) -> torch.nn.Parameter:
    """The `[E, D]` router weight of one MoE block (MoE-core internal: `block.router.weight`)."""
    router = block.router
    w = getattr(router, "weight", None)
    if w is None:  # a router module wrapping a linear layer
        w = next(router.parameters())
    return w


def _block_parts(block) -> dict[str, list[torch.nn.Parameter]]:
    """Parameters of one MoE block by role: router, classifier, experts (everything else in the block)."""
    cls = list(block.classifier.parameters()) if getattr(block, "classifier", None) is not None else []
    router = [p for p in block.router.parameters() if all(p is not c for c in cls)]  # the router holds the classifier
    taken = {id(p) for p in router + cls}
    experts = [p for p in block.parameters() if id(p) not in taken]
    return {"router": router, "classifier": cls, "experts": experts}


@torch.no_grad()
def xavier_router_init(model, seed: int, rows: Mapping[int, int] | None = None) -> None:
    """Xavier-normal router weights (MoE-LPR, docs/methods.md §2): std = sqrt(2 / (D + E)).

    rows: `{layer: first row}` re-initialises only rows >= first (experts added on top in a lifelong expansion);
    default: all rows of every MoE layer.
    """
    from langmoe.models.moe import moe_blocks

    gen = torch.Generator().manual_seed(seed)
    for b in moe_blocks(model):
        w = _router_weight(b)
        first = 0 if rows is None else rows.get(b.layer_idx, w.shape[0])
        if first >= w.shape[0]:
            continue
        std = math.sqrt(2.0 / (w.shape[0] + w.shape[1]))
        fresh = torch.randn(w.shape, generator=gen) * std
        w[first:] = fresh[first:].to(w)


def freeze_expert_prefix(model, frozen: Mapping[int, int]) -> list[Any]:
    """Zero the gradient of experts `0 .. n-1` of layer l (`frozen = {l: n}`), in the fused expert tensors.

    Works whether a fused tensor holds all E experts or experts 1..E-1 (expert 0 kept as a buffer). With zero
    gradients AdamW leaves those slices bit-identical as long as weight decay is 0 for the stage (the caller sets it).
    Returns the hook handles (call `.remove()` on each afterwards).
    """
    from langmoe.models.moe import moe_blocks

    handles = []
    for b in moe_blocks(model):
        n = int(frozen.get(b.layer_idx, 0))
        if n <= 0:
            continue
        E = b.num_experts
        for p in _block_parts(b)["experts"]:
            if p.dim() == 0:
                continue
            if p.shape[0] == E - 1:
                k = n - 1
            elif p.shape[0] == E:
                k = n
            else:
                raise LangmoeError(f"layer {b.layer_idx}: cannot tell which rows of an expert tensor of shape "
                                   f"{list(p.shape)} belong to which expert (E={E})")
            if k <= 0:
                continue

            def hook(g, k=k):
                g = g.clone()
                g[:k] = 0
                return g

            p.requires_grad_(True)  # stage 1 trains these tensors (the later-generation rows)
            handles.append(p.register_hook(hook))
    return handles


def set_classifiers(model, layers: Sequence[int], mode: str = "token", seed: int = 0):
    """Return the model with old/new classifiers exactly in `layers` (all other MoE weights carried over).

    The public MoE API only creates classifiers at upcycle time, and LayerMoE adds them at stage 2, so the model is
    rebuilt from its config with the new structure (`apply_moe_structure`) and the state dict reloaded; the new
    classifier weights get N(0, 0.02) (seeded), removed ones are dropped.
    """
    from transformers import AutoModelForCausalLM

    from langmoe.models.upcycle import apply_moe_structure, moe_structure

    struct = moe_structure(model)
    if struct is None:
        raise LangmoeError("set_classifiers needs an MoE model")
    layers = sorted({int(x) for x in layers})
    bad = [x for x in layers if x not in struct.layers]
    if bad:
        raise LangmoeError(f"classifier layers {bad} are not MoE layers {sorted(struct.layers)}")
    if all(struct.layers[i].classifier == (i in layers) and (i not in layers or struct.layers[i].classifier_mode == mode)
           for i in struct.layers):
        return model
    struct = struct.model_copy(deep=True)
    for i, spec in struct.layers.items():
        spec.classifier = i in layers
        spec.classifier_mode = mode
    config = copy.deepcopy(model.config)
    config.langmoe = None
    dtype = next(model.parameters()).dtype
    torch.manual_seed(seed)
    fresh = AutoModelForCausalLM.from_config(config).to(dtype)
    apply_moe_structure(fresh, struct)
    state = model.state_dict()
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    from langmoe.models.moe_io import _tied_keys

    tied = _tied_keys(fresh)
    missing = [k for k in missing if k not in tied]
    if any("classifier" not in k for k in list(missing) + list(unexpected)):
        raise RuntimeError(f"set_classifiers: unexpected state-dict mismatch {missing[:3]} {unexpected[:3]}")
    if tied:
        fresh.tie_weights()
    for k, v in vars(model.config).items():  # keep extra attributes (expansion lineage)
        if k not in ("langmoe",) and not hasattr(fresh.config, k):
            setattr(fresh.config, k, copy.deepcopy(v))
    fresh.to(next(model.parameters()).device)
    fresh.train(model.training)
    return fresh


# ---------------------------------------------------------------------------------------------------------------
# training


def _selector(ids: set[int]) -> Callable[[str, torch.nn.Parameter], bool]:
    return lambda _name, p: id(p) in ids


def moe_param_ids(model, parts: Sequence[str]) -> set[int]:
    from langmoe.models.moe import moe_blocks

    return {id(p) for b in moe_blocks(model) for part in parts for p in _block_parts(b)[part]}


def _train_config(cfg: ExpansionConfig, stage: StageSettings, seed_offset: int, weight_decay: float | None = None,
                  save_every: int = 0):
    return {
        "steps": stage.steps, "lr": stage.lr, "warmup_ratio": stage.warmup_ratio,
        "weight_decay": stage.weight_decay if weight_decay is None else weight_decay, "grad_clip": stage.grad_clip,
        "micro_batch_size": cfg.micro_batch_size, "seed": cfg.seed + seed_offset, "progress": False,
        "log_every": max(1, stage.steps // 10), "save_every": save_every,
    }


def train_stage1(model, cfg: ExpansionConfig, data: ExpansionData, out_dir: Path,
                 frozen_prefix: Mapping[int, int] | None = None, trainable: str = "moe", terms: bool = True,
                 save_every: int = 0, fail_at: int | None = None):
    """Stage 1 on new-language text only: new experts + routers train (`trainable="moe"`), everything else frozen;
    `L_NTP + lb_weight · mean_layers(L_LB)`. `trainable="all"` / a set of parameter ids: baselines.
    `save_every` checkpoints (a rerun resumes); `fail_at` injects a crash (tests)."""
    from langmoe.data.samplers import TemperatureSampler
    from langmoe.train.router_losses import load_balance_term
    from langmoe.train.trainer import LossTerm, train

    source = TemperatureSampler(data.new, cfg.micro_batch_size, tau=cfg.tau, seed=cfg.seed)
    handles = freeze_expert_prefix(model, frozen_prefix) if frozen_prefix else []
    wd = 0.0 if handles else None  # AdamW decay would move the frozen slices
    loss_terms = [LossTerm("load_balance", cfg.lb_weight, load_balance_term())] if terms and cfg.lb_weight else []
    try:
        return train(model, maybe_fail(source, fail_at), _train_config(cfg, cfg.stage1, 0, wd, save_every), out_dir,
                     loss_terms=loss_terms, trainable=_trainable(model, trainable, ("experts", "router")))
    finally:
        for h in handles:
            h.remove()


def _trainable(model, trainable, parts):
    if trainable == "all":
        return lambda _n, _p: True
    if trainable == "moe":
        return _selector(moe_param_ids(model, parts))
    if isinstance(trainable, set):
        return _selector(trainable)
    if callable(trainable):
        return trainable
    raise LangmoeError(f"unknown trainable selector {trainable!r}")


def stage2_old_share(cfg: ExpansionConfig, data: ExpansionData) -> float:
    if cfg.stage2.steps == 0 or data.replay_tokens == 0:
        return 0.0
    return data.replay_tokens / stage_tokens(cfg, cfg.stage2.steps)


def train_stage2(model, cfg: ExpansionConfig, data: ExpansionData, out_dir: Path, cls_weight: float = 0.0,
                 trainable: str = "moe", terms: bool = True, save_every: int = 0, fail_at: int | None = None):
    """Stage 2 on new-language text + the old-language replay: routers (+ classifiers) only;
    `L_NTP + lpr_weight · L_LPR (+ cls_weight · L_cls)`, expert-0 languages as "old"."""
    from langmoe.train.router_losses import classifier_term, lpr_term
    from langmoe.train.trainer import LossTerm, train

    source = ReplayMixSource(data, cfg.micro_batch_size, stage2_old_share(cfg, data), tau=cfg.tau, seed=cfg.seed + 1)
    loss_terms = []
    if terms and data.expert0_ids:  # without replay there is no old-language token to score
        if cfg.lpr_weight:
            loss_terms.append(LossTerm("lpr", cfg.lpr_weight, lpr_term(data.expert0_ids)))
        if cls_weight:
            loss_terms.append(LossTerm("classifier", cls_weight, classifier_term(data.expert0_ids)))
    return train(model, maybe_fail(source, fail_at), _train_config(cfg, cfg.stage2, 1, None, save_every), out_dir,
                 loss_terms=loss_terms, trainable=_trainable(model, trainable, ("router", "classifier")))


def stage_record(res) -> dict[str, Any]:
    return {"steps": res.final_step, "tokens_seen": int(res.tokens_seen), "tokens_per_s": res.tokens_per_s,
            "last_loss": res.losses[-1] if res.losses else None, "elapsed_s": res.elapsed_s}


# ---------------------------------------------------------------------------------------------------------------
# loading and checking the input model


@dataclass
class LoadedBase:
    model: Any
    tokenizer: Any
    kind: Literal["dense", "expansion"]
    lineage: dict[str, Any] = field(default_factory=dict)  # expert0_langs, generations (lifelong)


def load_base(path: str) -> LoadedBase:
    """Dense HF model (first expansion) or a model written by a langmoe expansion (lifelong); anything else: error."""
    from langmoe.models.base import resolve_model_path
    from langmoe.models.moe_io import load_model_any
    from langmoe.models.upcycle import is_moe_model, moe_structure

    p = resolve_model_path(path)
    raw = json.loads((p / "config.json").read_text(encoding="utf-8"))
    stock_moe = [k for k in ("num_local_experts", "num_experts", "moe_intermediate_size") if raw.get(k)]
    if stock_moe and not raw.get("langmoe"):
        raise LangmoeError(f"{p} is a stock MoE model ({stock_moe[0]} in config.json), not a dense model: expand a "
                           "dense model, or a model written by `langmoe expand`")
    model, tok = load_model_any(p)
    if tok is None:
        raise LangmoeError(f"{p} has no tokenizer: save the model's tokenizer next to it")
    from langmoe.models.adapters import get_adapter

    get_adapter(model)
    if not is_moe_model(model):
        return LoadedBase(model, tok, "dense")
    lineage = dict(getattr(model.config, CONFIG_KEY, None) or {})
    if not lineage and (p / EXPANSION_FILE).is_file():
        lineage = json.loads((p / EXPANSION_FILE).read_text(encoding="utf-8")).get("lineage", {})
    struct = moe_structure(model)
    if not lineage or struct is None or not all(s.frozen_expert0 for s in struct.layers.values()):
        raise LangmoeError(f"{p} is an MoE model that no langmoe expansion wrote (no frozen expert 0 / expansion "
                           "record): expand a dense model, or a model written by `langmoe expand`")
    return LoadedBase(model, tok, "expansion", lineage)


def check_languages(cfg: ExpansionConfig, corpus, base: LoadedBase) -> list[str]:
    """Languages exist in the corpus; in a lifelong expansion the new ones were not learned before. Returns the
    expert-0 languages."""
    from langmoe.data.corpus import choose_languages

    choose_languages(corpus, cfg.new + cfg.old)
    if base.kind == "dense":
        return list(cfg.old)
    known = list(base.lineage.get("known_langs", []))
    again = sorted(set(cfg.new) & set(known))
    if again:
        raise LangmoeError(f"new languages {again} were already learned by this model: choose other new languages")
    return list(base.lineage.get("expert0_langs", cfg.old))


def check_model_fits(cfg: ExpansionConfig, model, tokenizer) -> None:
    from langmoe.data.packing import check_block_len

    check_block_len(model.config, cfg.block_len)
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if cfg.evaluate and isinstance(max_pos, int) and cfg.eval.window > max_pos:
        raise LangmoeError(f"eval.window {cfg.eval.window} exceeds the model's max positions {max_pos}")
    vocab = getattr(model.config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise LangmoeError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab}")


def check_replay(cfg: ExpansionConfig) -> None:
    replay = cfg.replay_share * stage_tokens(cfg, cfg.stage1.steps)
    s2 = stage_tokens(cfg, cfg.stage2.steps)
    if cfg.stage2.steps and replay > s2:
        raise LangmoeError(f"the replay ({replay:.0f} tokens = replay_share x stage-1 tokens) is larger than stage 2 "
                           f"({s2} tokens): raise stage2 steps or lower replay_share")


# ---------------------------------------------------------------------------------------------------------------
# evaluation and the report


def old_new_table(model, tokenizer, corpus, cfg: ExpansionConfig, old: Sequence[str]) -> dict[str, Any]:
    """Held-out ppl per language and the Old / New means (macro over languages)."""
    from langmoe.eval.perplexity import evaluate_languages

    e = cfg.eval
    scores = evaluate_languages(model, tokenizer, corpus, list(old) + list(cfg.new), split=e.split, window=e.window,
                                stride=e.stride, max_chars_per_lang=e.max_chars_per_lang, batch_size=e.batch_size,
                                skip_empty=True)
    ppl = {k: v.ppl for k, v in scores.items()}
    o = [ppl[x] for x in old if x in ppl]
    n = [ppl[x] for x in cfg.new if x in ppl]
    return {"ppl": ppl, "old_mean": float(np.mean(o)) if o else None, "new_mean": float(np.mean(n)) if n else None}


@torch.no_grad()
def routing_report(model, tokenizer, corpus, cfg: ExpansionConfig, langs: Sequence[str],
                   expert0_langs: Sequence[str]) -> dict[str, Any]:
    """On held-out text, per MoE layer: share of each language's tokens whose top-1 expert is expert 0, the mean
    over expert-0 languages (`old_to_expert0`), the mean combine weight they put on expert 0, and the old/new
    classifier accuracy (class 0 = an expert-0 language) where the layer has a classifier."""
    from langmoe.data.packing import pack_corpus
    from langmoe.models.moe import router_outputs

    blocks = pack_corpus(corpus, tokenizer, list(langs), cfg.eval.split, cfg.block_len,
                         max_tokens_per_lang=cfg.eval.routing_tokens_per_lang)
    codes = blocks.index.codes
    e0 = torch.tensor([c in expert0_langs for c in codes])
    top1: dict[int, dict[str, list[int]]] = {}
    w0: dict[int, list[float]] = {}
    cls_ok: dict[int, list[int]] = {}
    was = model.training
    model.eval()
    try:
        for start in range(0, len(blocks), cfg.eval.batch_size):
            batch = blocks.batch(list(range(start, min(start + cfg.eval.batch_size, len(blocks)))))
            model(input_ids=batch["input_ids"])
            valid = (batch["labels"] != -100).reshape(-1)
            lang = batch["lang_ids"].reshape(-1)
            is_e0 = e0[lang]
            for o in router_outputs(model):
                L = int(o.layer)
                first = (o.topk_idx[:, 0] == 0)
                wt = torch.where(o.topk_idx == 0, o.topk_weight.float(), 0.0).sum(-1)
                per = top1.setdefault(L, {c: [0, 0] for c in codes})
                for li in lang[valid].unique().tolist():
                    m = valid & (lang == li)
                    per[codes[li]][0] += int(first[m].sum())
                    per[codes[li]][1] += int(m.sum())
                acc = w0.setdefault(L, [0.0, 0.0])
                acc[0] += float(wt[valid & is_e0].sum())
                acc[1] += float((valid & is_e0).sum())
                if o.classifier_logits is not None:
                    pred_old = o.classifier_logits.argmax(-1) == 0
                    c = cls_ok.setdefault(L, [0, 0])
                    if pred_old.numel() == valid.numel():
                        c[0] += int((pred_old == is_e0)[valid].sum())
                        c[1] += int(valid.sum())
                    else:  # sequence mode: one decision per row
                        row_e0 = is_e0.reshape(pred_old.shape[0], -1)[:, 0]
                        c[0] += int((pred_old == row_e0).sum())
                        c[1] += int(pred_old.numel())
    finally:
        model.train(was)
    out: dict[str, Any] = {"layers": {}}
    for L in sorted(top1):
        shares = {c: (a / n if n else None) for c, (a, n) in top1[L].items()}
        olds = [shares[c] for c in expert0_langs if shares.get(c) is not None]
        out["layers"][str(L)] = {
            "expert0_top1_share": shares,
            "old_to_expert0": float(np.mean(olds)) if olds else None,
            "old_expert0_weight": w0[L][0] / w0[L][1] if w0[L][1] else None,
            "classifier_accuracy": (cls_ok[L][0] / cls_ok[L][1]) if L in cls_ok and cls_ok[L][1] else None,
        }
    return out


def work_dir_for(cfg: ExpansionConfig) -> tuple[Path, bool]:
    if cfg.work_dir:
        p = Path(cfg.work_dir)
        p.mkdir(parents=True, exist_ok=True)
        return p, False
    return Path(tempfile.mkdtemp(prefix="langmoe-expand-")), True


def save_result(model, tokenizer, out: Path, record: dict[str, Any], work: Path, moe: bool) -> Path:
    """The model folder (native MoE via save_moe_pretrained, or a dense HF folder), expansion.json and the logs."""
    from langmoe.io import write_json
    from langmoe.models.base import quiet_transformers
    from langmoe.models.moe_io import save_moe_pretrained, write_folder_atomically

    with quiet_transformers():
        if moe:
            save_moe_pretrained(model, tokenizer, out)
        else:
            def writer(tmp: Path) -> None:
                model.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)

            write_folder_atomically(out, writer)
    write_json(out / EXPANSION_FILE, record)
    for stage in ("stage1", "stage2"):
        log = work / stage / "log.jsonl"
        if log.is_file():
            (out / "logs").mkdir(exist_ok=True)
            shutil.copy(log, out / "logs" / f"{stage}.jsonl")
    return out


def params_of(model) -> dict[str, int]:
    from langmoe.models.upcycle import is_moe_model, parameter_counts

    if is_moe_model(model):
        return parameter_counts(model)
    n = sum(p.numel() for p in model.parameters())
    return {"total": n, "active_per_token": n}


def new_lineage(prev: Mapping[str, Any], cfg: ExpansionConfig, expert0: Sequence[str], method: str,
                counts: Mapping[int, int]) -> dict[str, Any]:
    known = list(dict.fromkeys(list(prev.get("known_langs", expert0)) + list(cfg.old) + list(cfg.new)))
    gens = list(prev.get("generations", []))
    gens.append({"method": method, "new": list(cfg.new), "experts": {str(k): int(v) for k, v in counts.items()}})
    return {"expert0_langs": list(expert0), "known_langs": known, "generations": gens}


def experts_per_layer(model) -> dict[int, int]:
    from langmoe.models.moe import moe_blocks

    return {b.layer_idx: b.num_experts for b in moe_blocks(model)}


# ---------------------------------------------------------------------------------------------------------------
# the shared expansion flow


@dataclass
class ExpansionPlan:
    """What a method decided before any training: new experts per layer, classifier layers, extra record fields."""

    new_experts: dict[int, int]
    classifier_layers: list[int] = field(default_factory=list)
    classifier_mode: str = "token"
    cls_weight: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExpansionResult:
    out: Path
    record: dict[str, Any]
    model: Any = None


def expand_model(model, new_experts: Mapping[int, int], top_k: int, seed: int) -> dict[int, int]:
    """Add `new_experts[l]` copies of the frozen FFN to layer l: upcycle dense layers (FFN = frozen expert 0),
    append experts on top of existing MoE layers (`add_expert`). Routers: xavier-normal for every new row.
    Returns the experts each layer had before (0 = was dense)."""
    from langmoe.models.upcycle import add_expert, upcycle

    before = experts_per_layer(model)
    dense = {int(i): int(n) + 1 for i, n in new_experts.items() if n > 0 and i not in before}
    if dense:
        upcycle(model, sorted(dense), dense, {i: min(top_k, n) for i, n in dense.items()}, frozen_expert0=True,
                seed=seed)
    for i, n in sorted(new_experts.items()):
        if i in before:
            for _ in range(int(n)):
                add_expert(model, int(i), 0)
    xavier_router_init(model, seed, rows={**dict.fromkeys(dense, 0), **before})
    return before


@dataclass
class PreparedExpansion:
    """Everything decided before the model changes: the checked input, the packed data and the method's plan."""

    cfg: ExpansionConfig
    method: str
    base: LoadedBase
    corpus: Any
    data: ExpansionData
    plan: ExpansionPlan
    expert0: list[str]
    eval_langs: list[str]

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "config": self.cfg.model_dump(mode="json"), "expert0_langs": self.expert0,
                "lifelong": self.base.kind == "expansion", **self.plan.record}

    def lineage(self) -> dict[str, Any]:
        return new_lineage(self.base.lineage, self.cfg, self.expert0, self.method, self.plan.new_experts)


def prepare_expansion(cfg: ExpansionConfig, method: str,
                      plan_fn: Callable[[LoadedBase, ExpansionData, Any, list[str]], ExpansionPlan],
                      corpus=None) -> PreparedExpansion:
    """Load and check the input, pack the data, plan: all before anything is written or trained."""
    from langmoe.data.corpus import open_corpus

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    base = load_base(cfg.model)
    corpus = corpus if corpus is not None else open_corpus(cfg.corpus)
    expert0 = check_languages(cfg, corpus, base)
    check_model_fits(cfg, base.model, base.tokenizer)
    check_replay(cfg)
    data = build_data(cfg, corpus, base.tokenizer, expert0)
    plan = plan_fn(base, data, corpus, expert0)
    eval_langs = list(dict.fromkeys(list(base.lineage.get("known_langs", [])) + cfg.old + cfg.new))
    return PreparedExpansion(cfg, method, base, corpus, data, plan, expert0, eval_langs)


def expanded_model(prep: PreparedExpansion, fresh: bool = True):
    """The input model with the plan's new experts (xavier routers, seeded), and the frozen expert prefix per layer
    (experts that existed before: a lifelong step keeps them). `fresh`: expand a copy (a recipe stage may load it
    again on resume); False expands the loaded model in place (one copy in memory, for a one-shot run)."""
    model = copy.deepcopy(prep.base.model) if fresh else prep.base.model
    model.train()
    before = expand_model(model, prep.plan.new_experts, prep.cfg.top_k, prep.cfg.seed)
    return model, {i: e for i, e in before.items() if e > 0}


def run_moe_expansion(cfg: ExpansionConfig, out: str | Path, method: str,
                      plan_fn: Callable[[LoadedBase, ExpansionData, Any, list[str]], ExpansionPlan],
                      corpus=None) -> ExpansionResult:
    """Load, check, plan (all before writing anything), expand, stage 1, classifiers, stage 2, report, save."""
    out = Path(out)
    prep = prepare_expansion(cfg, method, plan_fn, corpus)
    plan, data, tok, corpus = prep.plan, prep.data, prep.base.tokenizer, prep.corpus
    record = prep.record()
    if cfg.evaluate:
        record["before"] = old_new_table(prep.base.model, tok, corpus, cfg,
                                         [x for x in prep.eval_langs if x not in cfg.new])
    model, frozen = expanded_model(prep, fresh=False)
    work, is_tmp = work_dir_for(cfg)
    try:
        stages = {}
        if cfg.stage1.steps:
            stages["stage1"] = stage_record(train_stage1(model, cfg, data, work / "stage1", frozen_prefix=frozen))
            stages["stage1"]["weight_decay"] = 0.0 if frozen else cfg.stage1.weight_decay  # 0: keeps old experts
        if plan.classifier_layers:
            model = set_classifiers(model, plan.classifier_layers, plan.classifier_mode, seed=cfg.seed + 3)
        if cfg.stage2.steps:
            stages["stage2"] = stage_record(train_stage2(model, cfg, data, work / "stage2", cls_weight=plan.cls_weight))
        model.eval()
        record.update({"stages": stages, **result_fields(prep, model)})
        if cfg.evaluate:
            record["after"] = old_new_table(model, tok, corpus, cfg, [x for x in prep.eval_langs if x not in cfg.new])
            record["routing"] = routing_report(model, tok, corpus, cfg, prep.eval_langs, prep.expert0)
        record["lineage"] = prep.lineage()
        setattr(model.config, CONFIG_KEY, record["lineage"])
        save_result(model, tok, out, record, work, moe=True)
    finally:
        if is_tmp:
            shutil.rmtree(work, ignore_errors=True)
    return ExpansionResult(out, record, model)


def result_fields(prep: PreparedExpansion, model) -> dict[str, Any]:
    """The record fields that describe the expanded model (experts per layer, what was added, parameters)."""
    counts = experts_per_layer(model)
    return {
        "replay_tokens": prep.data.replay_tokens, "stage2_old_share": stage2_old_share(prep.cfg, prep.data),
        "experts_per_layer": {str(k): v for k, v in counts.items()},
        "new_experts": {str(k): int(v) for k, v in sorted(prep.plan.new_experts.items())},
        "new_experts_total": int(sum(prep.plan.new_experts.values())),
        "classifier_layers": sorted(prep.plan.classifier_layers), "params": params_of(model),
    }
