"""The two expansion stages: stage 1 keeps expert 0 (and everything outside the MoE) bit for bit, also under AdamW
weight decay, while the new experts train; stage 2 trains the routers only; without replay there is no LPR term."""

from __future__ import annotations

import json

import torch
from expansion_world import expansion_run
from transformers import AutoModelForCausalLM

from langmoe.methods.expansion.data import build_data
from langmoe.methods.expansion.stages import train_stage1, train_stage2
from langmoe.methods.expansion.surgery import expand_model
from langmoe.methods.moe_lpr import uniform_plan
from langmoe.models.routing import routing


def _setup(tmp_path, **over):
    run, cfg = expansion_run(tmp_path, **over)
    return cfg, run.base(), build_data(run, cfg, cfg.old)


def _logits(model, ids, expert=None):
    model.eval()
    with torch.no_grad():
        if expert is None:
            return model(input_ids=ids).logits
        with routing(model, route_labels=torch.full_like(ids, expert)):
            return model(input_ids=ids).logits


def test_stage1_keeps_expert0_and_the_dense_model_bit_for_bit(tmp_path):
    stage1 = {"steps": 3, "lr": 0.05, "weight_decay": 0.5, "warmup_ratio": 0.0}
    cfg, model, data = _setup(tmp_path, stage1=stage1)
    dense_ref = AutoModelForCausalLM.from_pretrained(cfg.model)
    ids = data.new.tokens[:2]
    expand_model(model, uniform_plan(model, 3), cfg.top_k, cfg.seed)
    # independent reference: the dense base itself equals hard routing to expert 0 (up to matmul layout)
    assert torch.allclose(_logits(model, ids, 0), _logits(dense_ref, ids), atol=1e-5)
    ref0, ref1 = _logits(model, ids, 0), _logits(model, ids, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    train_stage1(model, cfg, data, tmp_path / "s1")
    assert torch.equal(_logits(model, ids, 0), ref0)  # expert 0 + everything outside the MoE: bit-identical
    assert not torch.allclose(_logits(model, ids, 1), ref1)  # the new experts did train
    after = model.state_dict()
    outside = [k for k in state if ".mlp." not in k]
    assert outside and all(torch.equal(state[k], after[k]) for k in outside)
    changed = [k for k in state if not torch.equal(state[k], after[k])]
    assert any("router" in k for k in changed) and any("router" not in k for k in changed)


def test_stage2_trains_routers_only(tmp_path):
    cfg, model, data = _setup(tmp_path, stage2={"steps": 3, "lr": 0.05, "weight_decay": 0.5, "warmup_ratio": 0.0})
    expand_model(model, uniform_plan(model, 3), cfg.top_k, cfg.seed)
    ids = data.new.tokens[:2]
    refs = [_logits(model, ids, e) for e in range(3)]
    learned = _logits(model, ids)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    res = train_stage2(model, cfg, data, tmp_path / "s2")
    assert all(torch.equal(_logits(model, ids, e), refs[e]) for e in range(3))
    assert not torch.equal(_logits(model, ids), learned)
    after = model.state_dict()
    changed = {k for k in state if not torch.equal(state[k], after[k])}
    assert changed and all("router" in k for k in changed)
    assert all("router" in n for n, p in model.named_parameters() if p.requires_grad)
    rows = [json.loads(x) for x in (tmp_path / "s2" / "log.jsonl").read_text().splitlines()]
    assert "lpr" in rows[-1] and res.final_step == 3


def test_stage2_without_replay_has_no_lpr_term(tmp_path):
    cfg, model, data = _setup(tmp_path, replay_share=0.0, stage2={"steps": 2})
    assert data.old is None and data.expert0_ids == [] and data.replay_tokens == 0
    expand_model(model, uniform_plan(model, 2), cfg.top_k, cfg.seed)
    model.train()
    train_stage2(model, cfg, data, tmp_path / "s2")
    rows = [json.loads(x) for x in (tmp_path / "s2" / "log.jsonl").read_text().splitlines()]
    assert "lpr" not in rows[-1]


def test_stage1_load_balancing_is_the_official_mixtral_form(tmp_path):
    """The official MoE-LPR adds `0.01 x` transformers' Mixtral-style loss per layer (mean over layers), which is
    top_k x langmoe's Switch-style form: stage 1 scales `lb_weight` by top_k so 0.01 means the official 0.01."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    from langmoe.train.router_losses import load_balancing_loss

    gen = torch.Generator().manual_seed(0)
    layers = [torch.randn(40, 4, generator=gen) for _ in range(3)]
    official = torch.stack([load_balancing_loss_func((t,), 4, 2) for t in layers]).mean()
    assert torch.allclose(official, 2 * load_balancing_loss(layers, top_k=2), atol=1e-6)
    cfg, model, data = _setup(tmp_path, stage1={"steps": 2, "warmup_ratio": 0.0}, lb_weight=0.5)
    expand_model(model, uniform_plan(model, 3), cfg.top_k, cfg.seed)
    model.train()
    train_stage1(model, cfg, data, tmp_path / "s1")
    row = json.loads((tmp_path / "s1" / "log.jsonl").read_text().splitlines()[0])
    assert abs(row["loss"] - (row["clm"] + 0.5 * cfg.top_k * row["load_balance"])) < 1e-4
