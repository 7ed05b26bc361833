"""System `lora`: stage `lora/train` (the dense base with LoRA adapters, CPT's batches and budget), then
`eval/lora` on the merged model (or base + adapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langmoe.errors import LangmoeError
from langmoe.io import read_json, write_json
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import dense_params, load_dense
from langmoe.pipeline.stages import eval_stage
from langmoe.pipeline.summary import summary_row
from langmoe.train.mixed import train_mixed

STAGE = "lora/train"
SEED_OFFSET = 100  # CPT's: LoRA sees exactly CPT's batches


def _peft():
    try:
        import peft
    except ImportError:
        from langmoe.methods.lora.config import PEFT_MISSING

        raise LangmoeError(PEFT_MISSING) from None
    return peft


def run_lora(run: RecipeRun, settings) -> dict[str, Any]:

    peft = _peft()
    r = run.recipe
    cfg = run.train_cfg(settings.optim, offset=SEED_OFFSET, steps=r.budget_steps)
    lora = settings.model_dump(exclude={"optim"})

    def load():
        return peft.get_peft_model(run.base(), settings.peft_config())

    def train_fn(model, out: Path, fail):
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        write_json(out.parent / "adapter.json", {**lora, "trainable_params": trainable})
        return train_mixed(model, run.blocks(), cfg, out, tau=r.data.tau, fail_at=fail)

    def save(model, dest: Path) -> None:
        if settings.merge:
            model = model.merge_and_unload()
        model.save_pretrained(str(dest))
        run.tokenizer.save_pretrained(str(dest))

    info = run.train_stage(STAGE, {"input": run.input_key, "train": cfg, "lora": lora}, [], load, train_fn, save)

    def fn():
        adapter = read_json(run.runner.stage_dir(STAGE) / "adapter.json")
        if settings.merge:
            model = load_dense(run.model_dir(STAGE))
            params = dense_params(model)
        else:
            model = peft.PeftModel.from_pretrained(run.base(), str(run.model_dir(STAGE)))
            n = sum(p.numel() for p in model.parameters())
            params = {"total": n, "active": n}
        return run.evaluate(model, "lora", params, info["tokens_seen"], extra={"adapter": adapter})

    res = eval_stage(run, "eval/lora", {}, [STAGE], fn)
    return {"lora": summary_row(res)}
