"""What the expansion's dense baselines train, parameter by parameter (both phases: new-language text, then new
text + replay): `full_ft` moves every tensor of the base; `lora` moves every targeted projection of EVERY layer in
each phase and nothing else (embeddings, norms, LM head bit-equal)."""

from __future__ import annotations

import pytest
import torch
from expansion_world import fast_config
from param_moves import check_moves, snapshot

from langmoe.methods import moe_lpr

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LAYERS = 2


def _dense(folder):
    from transformers import AutoModelForCausalLM

    return snapshot(AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32))


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_full_ft_moves_every_parameter(tmp_path):
    moe_lpr.run(fast_config(tmp_path, variant="full_ft", evaluate=False), tmp_path / "full")
    base = _dense(tmp_path / "base")
    seen = check_moves(base, _dense(tmp_path / "full"), lambda n: True, "full_ft")
    assert seen["moved"] == len(base)


def test_lora_moves_every_projection_in_each_phase_and_nothing_else(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    work = tmp_path / "work"
    moe_lpr.run(fast_config(tmp_path, variant="lora", evaluate=False, work_dir=str(work)), tmp_path / "lora")
    base = _dense(tmp_path / "base")
    adapter = work / "stages" / "moe_lpr_lora" / "stage1" / "model"
    dense = AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"), dtype=torch.float32)
    phase1 = snapshot(PeftModel.from_pretrained(dense, str(adapter)).merge_and_unload())
    final = _dense(tmp_path / "lora")
    rule = lambda n: n.endswith(tuple(f"{p}.weight" for p in PROJ))  # noqa: E731
    for what, a, b in (("lora phase 1", base, phase1), ("lora phase 2", phase1, final)):
        seen = check_moves(a, b, rule, what)
        assert seen["moved"] == LAYERS * len(PROJ), what
