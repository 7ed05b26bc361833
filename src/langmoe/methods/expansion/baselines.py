"""The dense baselines of an expansion at the same token budget (the MoE-LPR paper's): full fine-tuning of every
parameter (`full_ft`) or peft LoRA adapters (`lora`) on the same two data phases as the MoE (new-language text,
then new text + the same old-language replay), plain causal-LM loss. Two cached stages of the run, like the MoE
flow; LoRA keeps one adapter over both phases (saved as an adapter after phase 1, merged after phase 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langmoe.errors import LangmoeError
from langmoe.io import write_json
from langmoe.methods.expansion.inputs import EXPANSION_FILE, InputModel, check_languages, read_input
from langmoe.methods.expansion.stages import (
    ExpansionFlow,
    stage_record,
    train_stage1,
    train_stage2,
    untrained,
)
from langmoe.methods.expansion.surgery import params_of
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import load_dense, save_dense

__all__ = ["DenseBaselineFlow"]


def lora_wrap(model, cfg):
    """`model` with peft LoRA adapters on the linear layers named in `cfg.lora_targets` (those it has)."""
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


class DenseBaselineFlow(ExpansionFlow):
    """`cfg.variant` ("full_ft" | "lora") of an expansion config, as stages `<name>/stage1` and `<name>/stage2`."""

    def __init__(self, run: RecipeRun, name: str, cfg, method: str | None = None):
        self.run, self.name, self.cfg, self.method = run, name, cfg, method or name
        self.input: InputModel = read_input(run.model_path)
        if self.input.kind != "dense":
            raise LangmoeError(f"the {cfg.variant} baseline expands a dense model; {cfg.model} is an MoE model")
        self.expert0 = check_languages(cfg.new, cfg.old, run.corpus, self.input)
        if cfg.train_new_embeddings:
            raise LangmoeError(f"--train-new-embeddings is for the MoE systems; the {cfg.variant} baseline trains "
                               "its own parameters")
        self.final_model = None
        self._prepared: dict[str, Any] = {}

    def _trainable(self, model):
        return {id(p) for n, p in model.named_parameters() if "lora_" in n} if self.cfg.variant == "lora" else "all"

    def run_stages(self) -> dict[str, Any]:
        run, settings = self.run, self.settings()
        s1, s2 = f"{self.name}/stage1", f"{self.name}/stage2"
        key = {"input": run.input_key, "baseline": settings}
        info1 = run.train_stage(s1, key, [], self._load1, self._train1, self._save(final=False))
        info2 = run.train_stage(s2, key, [s1], lambda: self._load2(s1), self._train2, self._save(final=True))
        stages = {"stage1": stage_record(info1), "stage2": stage_record(info2)}
        return {"stage": s2, "tokens": sum(s["tokens_seen"] for s in stages.values()), "stages": stages}

    def _load1(self):
        model = self.run.base()
        return lora_wrap(model, self.cfg) if self.cfg.variant == "lora" else model

    def _train1(self, model, out: Path, fail: int | None):
        if not self.cfg.stage1.steps:
            return untrained(out)
        return train_stage1(model, self.cfg, self.data(), out, trainable=self._trainable(model), terms=False,
                            save_every=self.run.recipe.save_every, fail_at=fail)

    def _load2(self, stage1: str):
        if self.cfg.variant != "lora":
            return load_dense(self.run.model_dir(stage1))
        from peft import PeftModel

        model = PeftModel.from_pretrained(self.run.base(), str(self.run.model_dir(stage1)), is_trainable=True)
        model.train()
        return model

    def _train2(self, model, out: Path, fail: int | None):
        if not self.cfg.stage2.steps:
            return untrained(out)
        return train_stage2(model, self.cfg, self.data(), out, trainable=self._trainable(model), terms=False,
                            save_every=self.run.recipe.save_every, fail_at=fail)

    def _save(self, final: bool):
        dense = save_dense(self.run.tokenizer)

        def save(model, dest: Path) -> None:
            if not final:  # full_ft: the dense model; lora: the adapter, trained on in phase 2
                return dense(model, dest) if self.cfg.variant != "lora" else model.save_pretrained(str(dest))
            if self.cfg.variant == "lora":
                model = model.merge_and_unload()
            model.eval()
            dense(model, dest)
            write_json(dest / EXPANSION_FILE, self.record(model))
            self.final_model = model

        return save

    def record(self, model) -> dict[str, Any]:
        cfg, data = self.cfg, self.data()
        return {"method": self.method, "variant": cfg.variant, "config": cfg.model_dump(mode="json"),
                "expert0_langs": self.expert0, "lifelong": False, "replay_tokens": data.replay_tokens,
                "trainable": "lora" if cfg.variant == "lora" else "all", "params": params_of(model)}
