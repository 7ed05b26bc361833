"""The LoRA baseline on the tiny world: what changes (a rank-≤ r update on the targeted projections, nothing else),
merged vs adapter evaluation, the trainable-parameter count, and the one-line error without peft."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
from tiny_world import tiny_recipe  # noqa: E402

from langmoe.config import parse_recipe  # noqa: E402
from langmoe.errors import LangmoeError  # noqa: E402
from langmoe.io import read_json  # noqa: E402
from langmoe.pipeline.run import run_recipe  # noqa: E402

R = 4


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_merged_model_is_the_base_plus_low_rank_updates(tmp_path):
    recipe = tiny_recipe(tmp_path, systems=[{"name": "lora", "r": R, "alpha": 8}])
    s = run_recipe(recipe, tmp_path / "run")
    base, merged = _weights(tmp_path / "base"), _weights(tmp_path / "run" / "stages" / "lora" / "train" / "model")
    assert set(merged) == set(base)
    changed = set()
    for name, w in base.items():
        delta = (merged[name].double() - w.double())
        if delta.abs().max() > 0:
            changed.add(name.split(".")[-2])
            assert delta.dim() == 2 and torch.linalg.matrix_rank(delta, atol=1e-6) <= R, name
    # 'all-linear': every attention and FFN projection, never embeddings, norms or the LM head
    assert changed == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # tiny Llama: hidden 32, FFN 64, 3 layers; a rank-r adapter on (in -> out) has r·(in + out) parameters
    per_layer = 4 * R * (32 + 32) + 2 * R * (32 + 64) + R * (64 + 32)
    assert read_json(tmp_path / "run" / "eval" / "lora.json")["adapter"]["trainable_params"] == 3 * per_layer
    assert s["systems"]["lora"]["tokens_seen"] == s["budget_tokens"]


def test_adapter_folder_scores_like_the_merged_model(tmp_path):
    merged = run_recipe(tiny_recipe(tmp_path, systems=["base", {"name": "lora", "r": R}]), tmp_path / "m")
    adapter = run_recipe(tiny_recipe(tmp_path, systems=[{"name": "lora", "r": R, "merge": False}]), tmp_path / "a")
    folder = tmp_path / "a" / "stages" / "lora" / "train" / "model"
    assert (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").exists()
    a, m = adapter["systems"]["lora"], merged["systems"]["lora"]
    for lang in m["ppl"]:
        assert a["ppl"][lang] == pytest.approx(m["ppl"][lang], rel=1e-4)
    assert a["params_total"] > m["params_total"] == merged["systems"]["base"]["params_total"]
    assert m["mean_ppl"] < merged["systems"]["base"]["mean_ppl"]  # 10 steps at lr 3e-3 learn the alphabets


def test_missing_peft_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "peft" else real(n, *a))
    with pytest.raises(LangmoeError, match=r"systems\.lora: the lora system needs peft: pip install 'langmoe\[peft\]'"):
        parse_recipe({"languages": ["en", "de"], "systems": ["lora"]})


@pytest.mark.parametrize("bad, field", [
    pytest.param({"r": 0}, "systems.lora.r", id="rank"),
    pytest.param({"dropout": 1.0}, "systems.lora.dropout", id="dropout"),
    pytest.param({"target_modules": "attention"}, "systems.lora.target_modules", id="targets"),
    pytest.param({"optim": {"lr": 0}}, "systems.lora.optim.lr", id="lr"),
])
def test_bad_settings_name_the_field(bad, field):
    with pytest.raises(LangmoeError, match=field.replace(".", r"\.")):
        parse_recipe({"languages": ["en", "de"], "systems": [{"name": "lora", **bad}]})
