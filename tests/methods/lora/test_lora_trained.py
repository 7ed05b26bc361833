"""What the LoRA baseline trains, tensor by tensor, in the merged model: every attention and FFN projection of
EVERY layer moved (a rank-r update), and nothing else did (embeddings, norms, LM head bit-equal)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from param_moves import check_moves, folder_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
from tiny_world import tiny_recipe  # noqa: E402

from langmoe.pipeline.run import run_recipe  # noqa: E402

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EVAL = {"window": 32, "stride": 16, "max_chars_per_lang": 100, "batch_size": 4}


def test_lora_moves_every_projection_of_every_layer_and_nothing_else(tmp_path):
    torch.set_num_threads(1)
    recipe = tiny_recipe(tmp_path, systems=[{"name": "lora", "r": 4, "alpha": 8}], eval=EVAL,
                         optim={"lr": 3e-3, "warmup_ratio": 0.0, "weight_decay": 0.0})
    run_recipe(recipe, tmp_path / "run")
    base = folder_weights(tmp_path / "base")
    merged = folder_weights(tmp_path / "run" / "stages" / "lora" / "train" / "model")
    seen = check_moves(base, merged, lambda n: n.endswith(tuple(f"{p}.weight" for p in PROJ)), "lora")
    assert seen["moved"] == 3 * len(PROJ) and seen["kept"] == len(base) - 3 * len(PROJ)
