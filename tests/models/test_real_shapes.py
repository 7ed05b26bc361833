"""A real-shaped model (Qwen2 body: 18 layers, GQA 6/2, tied embeddings, ~30M parameters, saved in bf16) through
the whole path a user runs, command by command: upcycle, the deviation probe, the DMoE stages of a recipe (with
gradient checkpointing), add-language, expand (trained in fp32 from the bf16 folder: `--dtype`), routing, adapt,
export and lm-eval. Every training command records its peak memory. CPU bf16 matmuls are slow, so the evaluation
-heavy parts are kept small (no expansion report, the learned router instead of the language gate)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from langmoe.cli import main
from langmoe.models.moe_io import load_model_any
from langmoe.models.real_shapes import REAL_SHAPES, real_shaped_config, write_real_shaped_model

RECIPE = """\
name: real30m
model: {base}
corpus: builtin
languages: [en, de, fr, es]
data: {{block_len: 32, micro_batch_size: 2, max_train_tokens_per_lang: 3000}}
budget_steps: 4
optim: {{lr: 1.0e-3, warmup_ratio: 0.0}}
eval: {{window: 32, stride: 16, max_chars_per_lang: 200, batch_size: 4, routing_tokens_per_lang: 256}}
seed: 0
threads: 1
save_every: 2
systems:
  - name: dmoe
    num_groups: 2
    moe_layers: [0, 9, 17]
    deviation: {{steps: 1, grad_accum: 1, stability: false}}
    stage1: {{steps: 2}}
    stage2: {{steps: 2}}
    hard_routing_eval: false
"""


def test_shapes_have_the_sizes_they_claim():
    from transformers import Qwen2ForCausalLM

    sizes = {}
    for name in ("qwen2-30m", "qwen2-tiny"):
        with torch.device("meta"):
            model = Qwen2ForCausalLM(real_shaped_config(name, 4096))
        sizes[name] = sum(p.numel() for p in model.parameters())
    with torch.device("meta"):
        big = Qwen2ForCausalLM(real_shaped_config("qwen2-362m", 4096))
    assert sum(p.numel() for p in big.parameters()) == pytest.approx(362e6, rel=0.01)
    assert sizes["qwen2-30m"] == pytest.approx(30e6, rel=0.01) and sizes["qwen2-tiny"] < 1e6
    shape = REAL_SHAPES["qwen2-362m"]
    assert shape["num_attention_heads"] // shape["num_key_value_heads"] == 7  # grouped-query attention


def _peak(path) -> int:
    return json.loads(path.read_text())["peak_memory"]["peak_rss_bytes"]


def test_the_whole_path_on_a_30m_real_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(1)
    base = write_real_shaped_model("qwen2-30m", tmp_path / "base", dtype=torch.bfloat16)
    t = ["--threads", "1"]
    up, dev, run, al, ex = (tmp_path / n for n in ("up", "dev", "run", "al", "ex"))
    assert main(["upcycle", "--model", str(base), "--layers", "0,9,17", "--experts", "2", "--top-k", "1",
                 "--out", str(up), *t]) == 0
    assert main(["deviation", "--model", str(base), "--langs", "en", "de", "fr", "--steps", "1",
                 "--micro-batch-size", "2", "--grad-accum", "1", "--block-len", "32", "--max-tokens", "2000",
                 "--no-stability", "--last-n-layers", "2", "--out", str(dev), *t]) == 0
    assert len(json.loads((dev / "deviation.json").read_text())["dev_ffn"]["en"]) == 18
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(base=base))
    assert main(["run", str(recipe), "--run-dir", str(run), "--no-report",
                 "--gradient-checkpointing"]) == 0
    dmoe = run / "stages" / "dmoe" / "stage2" / "model"
    model, _ = load_model_any(dmoe)
    assert model.config.num_key_value_heads == 2 and len(model.model.layers) == 18
    assert main(["add-language", "--model", str(dmoe), "--lang", "it", "--steps", "1", "--micro-batch-size", "2",
                 "--block-len", "32", "--max-tokens", "2000", "--max-chars", "200", "--window", "32",
                 "--stride", "16", "--routing", "router", "--init", "copy", "--out", str(al), *t]) == 0
    assert main(["expand", "--method", "moe_lpr", "--model", str(base), "--new", "el", "--old", "en",
                 "--experts", "2", "--stage1-steps", "1", "--stage2-steps", "1", "--block-len", "32",
                 "--micro-batch-size", "2", "--max-train-tokens", "2000",
                 "--no-eval", "--dtype", "float32", "--out", str(ex), *t]) == 0
    assert main(["routing", "--model", str(dmoe), "--langs", "en", "de", "--tokens-per-lang", "200",
                 "--window", "32", "--out", str(tmp_path / "rt"), *t]) == 0
    assert main(["adapt", "--model", str(dmoe), "--child", "es", "--parent", "fr", "--mode", "aeft", "--steps", "1",
                 "--batch-size", "2", "--block-len", "32", "--eval-chars", "200", "--out", str(tmp_path / "ad"),
                 *t]) == 0
    assert main(["export", "--model", str(dmoe), "--out", str(tmp_path / "hf"), *t]) == 0
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))  # no langmoe code needed
    assert plain.config.num_key_value_heads == 2
    assert main(["lm-eval", "--model", str(tmp_path / "hf"), "--tasks", "langmoe_bpb_en", "--limit", "2",
                 "--out", str(tmp_path / "lm.json")]) == 0
    bpb = json.loads((tmp_path / "lm.json").read_text())["results"]["langmoe_bpb_en"]["bits_per_byte"]
    assert 0 < bpb < 30
    for record in (dev / "deviation.json", run / "summary.json", al / "add_language.json", ex / "expansion.json",
                   tmp_path / "ad" / "adapt.json"):
        assert _peak(record) > 100e6, record
    assert json.loads((run / "summary.json").read_text())["precision"]["gradient_checkpointing"] is True
