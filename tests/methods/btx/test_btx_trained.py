"""What BTX trains, parameter by parameter, on a tiny recipe run (weight decay 0: a tensor moves only by gradient):
each branch moves every tensor of the base (its group's data: see test_xelm_trained.py for the rows); the MoE stage,
started from the merge of the saved branches, moves every tensor, every expert row and every router row."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from param_moves import check_moves, folder_weights, moved_rows, snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
from tiny_world import tiny_recipe  # noqa: E402

from langmoe.methods.btx.merge import merge_branches  # noqa: E402
from langmoe.methods.dmoe import build  # noqa: E402
from langmoe.pipeline.models import load_dense, load_moe  # noqa: E402
from langmoe.pipeline.run import run_recipe  # noqa: E402

NO_DECAY = {"lr": 3e-3, "warmup_ratio": 0.0, "weight_decay": 0.0}
EVAL = {"window": 32, "stride": 16, "max_chars_per_lang": 100, "batch_size": 4}


def test_btx_branches_and_moe_stage_train_every_parameter(tmp_path):
    torch.set_num_threads(1)
    # the dmoe entry fixes the groups (no probe); BTX reads them from it
    recipe = tiny_recipe(tmp_path, systems=["dmoe", "btx"], optim=NO_DECAY, eval=EVAL, dmoe={"hard_routing_eval": False})
    run_recipe(recipe, tmp_path / "run")
    st = tmp_path / "run" / "stages" / "btx"
    base = folder_weights(tmp_path / "base")
    for k in range(2):
        seen = check_moves(base, folder_weights(st / f"branch-{k}" / "model"), lambda n: True, f"btx branch {k}")
        assert seen["moved"] == len(base)
    start = snapshot(merge_branches([load_dense(st / f"branch-{k}" / "model") for k in range(2)], top_k=2, seed=0))
    moe = snapshot(load_moe(st / "moe" / "model"))
    router = next(n for n in start if build.is_router_param(n))  # the reference is the MoE stage's start:
    assert (moe[router] - start[router]).abs().max() < 6 * 3e-3 * 1.01  # AdamW moves <= lr a step (6 steps)
    seen = check_moves(start, moe, lambda n: True, "btx moe")
    assert seen["moved"] == len(start)
    rowed = [n for n in start if build.is_expert_param(n) or build.is_router_param(n)]
    assert len([n for n in rowed if build.is_router_param(n)]) == 3  # an MoE in every layer
    for n in rowed:
        assert moved_rows(start[n], moe[n]) == [0, 1], f"btx moe: {n}: rows {moved_rows(start[n], moe[n])} moved"
