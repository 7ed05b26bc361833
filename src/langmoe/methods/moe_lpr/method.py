"""MoE-LPR (docs/methods.md §2): every FFN becomes frozen expert 0 plus E-1 copies; stage 1 trains new experts + routers
on new-language text (`+ lb_weight · L_LB`), stage 2 trains routers on new text + a small old-language replay
(`+ lpr_weight · L_LPR`). Variants at the same token budget (the paper's baselines): `full_ft` (dense continual
pre-training of every parameter on the same two data phases) and `lora` (peft adapters on the same phases).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from langmoe.errors import LangmoeError
from langmoe.train.expansion import (
    ExpansionConfig,
    ExpansionPlan,
    ExpansionResult,
    build_data,
    check_languages,
    check_model_fits,
    check_replay,
    load_base,
    old_new_table,
    params_of,
    parse_config,
    run_moe_expansion,
    save_result,
    stage_record,
    train_stage1,
    train_stage2,
    work_dir_for,
)


class MoELPRConfig(ExpansionConfig):
    """MoE-LPR settings; `num_experts` counts the frozen FFN (paper: 6 = 1 frozen + 5 new)."""

    num_experts: int = Field(4, ge=2)
    variant: Literal["moe_lpr", "full_ft", "lora"] = "moe_lpr"
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def uniform_plan(model, num_experts: int) -> dict[int, int]:
    """`num_experts - 1` new experts in every decoder layer."""
    from langmoe.models.adapters import get_adapter

    n = len(get_adapter(model).layers(model))
    return dict.fromkeys(range(n), num_experts - 1)


def run(config: MoELPRConfig | dict[str, Any], out: str | Path, corpus=None) -> ExpansionResult:
    """Expand `config.model` to `config.new` and write a native MoE folder + expansion.json to `out`."""
    cfg = parse_config(MoELPRConfig, config)
    if cfg.variant != "moe_lpr":
        return run_dense_baseline(cfg, out, corpus=corpus)

    def plan(base, data, corpus, expert0) -> ExpansionPlan:
        return ExpansionPlan(new_experts=uniform_plan(base.model, cfg.num_experts),
                             record={"allocation": "uniform", "num_experts": cfg.num_experts})

    return run_moe_expansion(cfg, out, "moe_lpr", plan, corpus=corpus)


def _lora_wrap(model, cfg: MoELPRConfig):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise LangmoeError("the lora variant needs peft: pip install peft") from None
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in cfg.lora_targets if t in names]
    if not targets:
        raise LangmoeError(f"lora_targets {cfg.lora_targets} match no module of this model: name its linear layers")
    lc = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=targets, lora_dropout=0.0,
                    bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lc)


def run_dense_baseline(cfg: MoELPRConfig, out: str | Path, corpus=None) -> ExpansionResult:
    """Full fine-tuning or LoRA on the same data and token budget as MoE-LPR: stage-1 steps on new-language text,
    stage-2 steps on new text + the same replay; plain causal-LM loss. Writes a dense HF folder."""
    import torch

    from langmoe.data.corpus import open_corpus

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    base = load_base(cfg.model)
    if base.kind != "dense":
        raise LangmoeError(f"the {cfg.variant} baseline expands a dense model; {cfg.model} is an MoE model")
    corpus = corpus if corpus is not None else open_corpus(cfg.corpus)
    expert0 = check_languages(cfg, corpus, base)
    check_model_fits(cfg, base.model, base.tokenizer)
    check_replay(cfg)
    data = build_data(cfg, corpus, base.tokenizer, expert0)
    model, tok = base.model, base.tokenizer
    record: dict[str, Any] = {"method": "moe_lpr", "variant": cfg.variant, "config": cfg.model_dump(mode="json"),
                              "expert0_langs": expert0, "lifelong": False}
    if cfg.evaluate:
        record["before"] = old_new_table(model, tok, corpus, cfg, cfg.old)
    model.train()
    if cfg.variant == "lora":
        model = _lora_wrap(model, cfg)
        trainable = "lora"
        sel = {id(p) for n, p in model.named_parameters() if "lora_" in n}
    else:
        sel = "all"
        trainable = "all"
    work, is_tmp = work_dir_for(cfg)
    try:
        stages = {}
        if cfg.stage1.steps:
            stages["stage1"] = stage_record(train_stage1(model, cfg, data, work / "stage1", trainable=sel, terms=False))
        if cfg.stage2.steps:
            stages["stage2"] = stage_record(train_stage2(model, cfg, data, work / "stage2", trainable=sel, terms=False))
        if cfg.variant == "lora":
            model = model.merge_and_unload()
        model.eval()
        record.update({"stages": stages, "replay_tokens": data.replay_tokens, "trainable": trainable,
                       "params": params_of(model)})
        if cfg.evaluate:
            record["after"] = old_new_table(model, tok, corpus, cfg, cfg.old)
        save_result(model, tok, Path(out), record, work, moe=False)
    finally:
        if is_tmp:
            shutil.rmtree(work, ignore_errors=True)
    return ExpansionResult(Path(out), record, model)
