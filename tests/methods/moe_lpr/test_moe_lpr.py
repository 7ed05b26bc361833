"""MoE-LPR: the uniform plan, `run` writing a native MoE folder with expansion.json (the flow itself:
tests/methods/expansion/), and the dense baselines on the same data and tokens."""

from __future__ import annotations

import json

import pytest
import torch
from expansion_world import fast_config
from transformers import AutoModelForCausalLM

from langmoe.methods import moe_lpr
from langmoe.methods.moe_lpr import uniform_plan
from langmoe.models.moe_io import load_moe_pretrained


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_uniform_plan_adds_the_same_experts_to_every_layer(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(fast_config(tmp_path)["model"])
    assert uniform_plan(model, 4) == {0: 3, 1: 3}


def test_run_writes_native_moe_folder(tmp_path):
    res = moe_lpr.run(fast_config(tmp_path, num_experts=3), tmp_path / "out")
    out = tmp_path / "out"
    rec = json.loads((out / "expansion.json").read_text())
    assert rec["method"] == "moe_lpr" and rec["experts_per_layer"] == {"0": 3, "1": 3}
    assert rec["new_experts_total"] == 4
    for k in ("before", "after", "routing", "stages", "lineage"):
        assert k in rec
    assert set(rec["routing"]["layers"]) == {"0", "1"}
    assert 0.0 <= rec["routing"]["layers"]["0"]["old_to_expert0"] <= 1.0
    assert rec["stages"]["stage1"]["steps"] == 4 and rec["stages"]["stage1"]["weight_decay"] == 0.0
    loaded = load_moe_pretrained(out)
    ids = torch.arange(1, 17).reshape(1, 16)
    assert torch.equal(_logits(loaded, ids), _logits(res.model, ids))  # the trained model, saved exactly
    assert loaded.config.langmoe_expansion["expert0_langs"] == ["en", "de"]
    assert (out / "logs" / "stage1.jsonl").is_file() and (out / "logs" / "stage2.jsonl").is_file()


@pytest.mark.parametrize("variant", ["full_ft", "lora"])
def test_dense_baselines(tmp_path, variant):
    res = moe_lpr.run(fast_config(tmp_path, variant=variant, evaluate=False), tmp_path / variant)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / variant))
    base = AutoModelForCausalLM.from_pretrained(fast_config(tmp_path)["model"])
    assert not getattr(model.config, "langmoe", None)
    sd, bd = model.state_dict(), base.state_dict()
    changed = [k for k in bd if not torch.equal(sd[k], bd[k])]
    if variant == "full_ft":
        assert "model.embed_tokens.weight" in changed
    else:  # LoRA merged into the adapted projections only
        assert changed and all(k.endswith("_proj.weight") for k in changed)
    assert res.record["stages"]["stage2"]["tokens_seen"] == res.record["stages"]["stage1"]["tokens_seen"]
    assert res.record["variant"] == variant and res.record["trainable"] == ("lora" if variant == "lora" else "all")


def test_the_lora_baseline_keeps_one_adapter_over_both_phases(tmp_path):
    """Phase 2 continues phase 1's adapter (saved, then loaded as trainable) instead of starting a fresh one."""
    from peft import PeftModel

    work = tmp_path / "work"
    moe_lpr.run(fast_config(tmp_path, variant="lora", evaluate=False, work_dir=str(work)), tmp_path / "lora")
    adapter = work / "stages" / "moe_lpr_lora" / "stage1" / "model"
    assert (adapter / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(fast_config(tmp_path)["model"])
    phase1 = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    final = AutoModelForCausalLM.from_pretrained(str(tmp_path / "lora"))
    changed = [k for k, v in phase1.state_dict().items() if not torch.equal(v, final.state_dict()[k])]
    assert changed and all(k.endswith("_proj.weight") for k in changed)  # phase 2 moved the same projections
