"""What LayerMoE's stage 2 trains, parameter by parameter (docs/methods.md §3: routers and classifiers, with
`L_NTP + 0.1 · L_LPR + 0.1 · L_cls`): every router and every classifier (in the classifier layers only) moved,
every row of them; the experts (frozen FFN and new ones), attention, embeddings, norms and LM head are bit-equal.
Weight decay 0, so a tensor moves only by gradient: a classifier or a router left out of the trainable set shows as
'did not move', an expert wrongly trained as 'moved'."""

from __future__ import annotations

import torch
from expansion_world import expansion_run
from param_moves import check_moves, moved_rows, snapshot

from langmoe.methods.expansion.data import build_data
from langmoe.methods.expansion.stages import train_stage2
from langmoe.methods.expansion.surgery import block_parts, expand_model, set_classifiers
from langmoe.models.moe import moe_blocks

NO_DECAY = {"steps": 3, "lr": 0.05, "weight_decay": 0.0, "warmup_ratio": 0.0}


def test_stage2_trains_every_router_and_classifier_and_nothing_else(tmp_path):
    torch.set_num_threads(1)
    run, cfg = expansion_run(tmp_path, stage2=NO_DECAY)
    model, data = run.base(), build_data(run, cfg, cfg.old)
    n = model.config.num_hidden_layers
    expand_model(model, dict.fromkeys(range(n), 2), cfg.top_k, cfg.seed)
    model = set_classifiers(model, [1], "token", seed=cfg.seed + 3)  # a classifier in layer 1 only
    ids = {id(p): name for name, p in model.named_parameters()}
    parts = {role: {ids[id(p)] for b in moe_blocks(model) for p in block_parts(b)[role]} for role in
             ("router", "classifier", "experts")}
    assert len(parts["router"]) == n and parts["classifier"] and parts["experts"]
    assert all(".1." in x for x in parts["classifier"])
    before = snapshot(model)
    model.train()
    train_stage2(model, cfg, data, tmp_path / "s2", cls_weight=0.1)
    after = snapshot(model)
    seen = check_moves(before, after, lambda x: x in parts["router"] or x in parts["classifier"], "layermoe stage 2")
    assert seen["moved"] == len(parts["router"]) + len(parts["classifier"])
    for x in parts["router"]:  # every router row: the LPR term pushes every old token to expert 0
        assert moved_rows(before[x], after[x]) == list(range(before[x].shape[0])), x
