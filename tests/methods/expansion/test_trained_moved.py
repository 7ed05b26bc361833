"""What each expansion stage must train has moved, expert by expert, and what it must not has not; fixtures that
break symmetries: a lifelong step where every earlier expert is trained (not a copy), stages of unequal length,
the LPR term checked by value on old and new tokens."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from expansion_world import expansion_run

import langmoe.methods.expansion.stages as S
from langmoe.methods.expansion.config import check_replay, stage_steps
from langmoe.methods.expansion.data import build_data, stage2_old_share
from langmoe.methods.expansion.stages import train_stage1, train_stage2
from langmoe.methods.expansion.surgery import expand_model
from langmoe.models.router_recorder import router_outputs
from langmoe.models.routers import iter_router_layers, router_weight

HARD = {"lr": 0.05, "weight_decay": 0.5, "warmup_ratio": 0.0}


def _setup(tmp_path, **over):
    run, cfg = expansion_run(tmp_path, **over)
    return cfg, run.base(), build_data(run, cfg, cfg.old)


def _experts(model) -> dict[int, list[torch.Tensor]]:
    """{layer: [expert e's slice of every fused expert tensor, concatenated]} (expert 0 a buffer: left out)."""
    out = {}
    for r in iter_router_layers(model):
        rows = []
        for e in range(r.expert_offset, r.num_experts):
            rows.append(torch.cat([p.detach()[e - r.expert_offset].reshape(-1) for p in r.expert_params.values()]))
        out[r.layer] = [None] * r.expert_offset + [x.clone() for x in rows]
    return out


def _routers(model) -> dict[int, torch.Tensor]:
    return {r.layer: router_weight(r).detach().clone() for r in iter_router_layers(model)}


def _trained_first_expansion(tmp_path, new_per_layer: int = 1):
    """A G0 -> G1 expansion whose new experts and routers have trained (no longer copies of the FFN)."""
    cfg, model, data = _setup(tmp_path, stage1={"steps": 3, **HARD})
    n = len(iter_router_layers(model)) or model.config.num_hidden_layers
    expand_model(model, dict.fromkeys(range(n), new_per_layer), cfg.top_k, cfg.seed)
    model.train()
    train_stage1(model, cfg, data, tmp_path / "g1")
    return cfg, model, data


def test_stage1_moves_every_new_expert_and_router_row(tmp_path):
    cfg, model, data = _setup(tmp_path, stage1={"steps": 3, **HARD})
    n = model.config.num_hidden_layers
    expand_model(model, dict.fromkeys(range(n), 2), cfg.top_k, cfg.seed)  # 3 experts: frozen FFN + 2 new
    before, routers = _experts(model), _routers(model)
    model.train()
    train_stage1(model, cfg, data, tmp_path / "s1")
    after, routers_after = _experts(model), _routers(model)
    for layer in before:
        for e in (1, 2):
            assert not torch.equal(before[layer][e], after[layer][e]), f"layer {layer}: new expert {e} did not train"
        assert not torch.equal(routers[layer], routers_after[layer]), f"layer {layer}: router did not train"


def test_stage2_moves_routers_and_no_expert(tmp_path):
    cfg, model, data = _setup(tmp_path, stage2={"steps": 3, **HARD})
    expand_model(model, dict.fromkeys(range(model.config.num_hidden_layers), 2), cfg.top_k, cfg.seed)
    before, routers = _experts(model), _routers(model)
    model.train()
    train_stage2(model, cfg, data, tmp_path / "s2")
    after, routers_after = _experts(model), _routers(model)
    for layer in before:
        assert all(torch.equal(before[layer][e], after[layer][e]) for e in (1, 2)), f"layer {layer}: experts moved"
        assert not torch.equal(routers[layer], routers_after[layer])


def test_lifelong_stage1_freezes_every_earlier_expert_and_trains_every_new_one(tmp_path):
    """G1 experts are trained (not copies), so a wrong frozen count or decay on them is visible; the LAST G2
    expert must train too."""
    cfg, model, data = _trained_first_expansion(tmp_path)
    before_expand = _routers(model)
    frozen = expand_model(model, dict.fromkeys(range(model.config.num_hidden_layers), 2), cfg.top_k, cfg.seed + 1)
    assert set(frozen.values()) == {2}
    for r in iter_router_layers(model):  # the earlier router rows are kept, the new rows drawn fresh
        w = router_weight(r).detach()
        assert torch.equal(w[:2], before_expand[r.layer]) and not torch.equal(w[2], w[3])
    before, routers = _experts(model), _routers(model)
    for layer in before:  # the new experts start as copies of the frozen FFN, not of a trained G1 expert
        assert torch.equal(before[layer][2], before[layer][3]) and not torch.equal(before[layer][1], before[layer][2])
    model.train()
    train_stage1(model, cfg, data, tmp_path / "g2", frozen_prefix=frozen)  # stage 1's weight decay is 0.5
    after = _experts(model)
    for layer in before:
        assert torch.equal(before[layer][1], after[layer][1]), f"layer {layer}: the G1 expert moved"
        for e in (2, 3):
            assert not torch.equal(before[layer][e], after[layer][e]), f"layer {layer}: G2 expert {e} did not train"
    assert any(not torch.equal(routers[k], v) for k, v in _routers(model).items())


def test_lpr_term_pushes_only_old_language_tokens_by_value(tmp_path, monkeypatch):
    """The stage-2 LPR term equals CE(router logits, expert 0) over the OLD-language tokens alone."""
    cfg, model, data = _setup(tmp_path)
    expand_model(model, dict.fromkeys(range(model.config.num_hidden_layers), 2), cfg.top_k, cfg.seed)
    seen = {}
    monkeypatch.setattr(S, "train", lambda *a, **kw: seen.update(kw))
    train_stage2(model, cfg, data, tmp_path / "s2")
    lpr = next(t for t in seen["loss_terms"] if t.name == "lpr")
    assert lpr.weight == cfg.lpr_weight
    old_ids = [data.codes.index(c) for c in cfg.old]
    new_ids = [data.codes.index(c) for c in cfg.new]
    assert data.expert0_ids == old_ids and set(old_ids).isdisjoint(new_ids)
    ids = data.merged.tokens[:2]
    lang = torch.tensor([[new_ids[0]] * ids.shape[1], [old_ids[0]] * ids.shape[1]])
    batch = {"input_ids": ids, "labels": ids.clone(), "lang_ids": lang}
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids)
        got = float(lpr.fn(model, batch, out))
        logits = [o.logits.reshape(2, ids.shape[1], -1)[1] for o in router_outputs(model)]  # the old row only
    want = sum(float(F.cross_entropy(t.float(), torch.zeros(t.shape[0], dtype=torch.long))) for t in logits)
    assert got == pytest.approx(want / len(logits), rel=1e-5)


def test_stage1_has_the_load_balance_term_and_stage2_the_classifier_term(tmp_path, monkeypatch):
    cfg, model, data = _setup(tmp_path)
    expand_model(model, dict.fromkeys(range(model.config.num_hidden_layers), 1), cfg.top_k, cfg.seed)
    seen = []
    monkeypatch.setattr(S, "train", lambda *a, **kw: seen.append(kw))
    train_stage1(model, cfg, data, tmp_path / "s1")
    train_stage2(model, cfg, data, tmp_path / "s2", cls_weight=0.3)
    # the official (Mixtral-style) scale: lb_weight x top_k
    assert [(t.name, t.weight) for t in seen[0]["loss_terms"]] == [("load_balance", cfg.lb_weight * cfg.top_k)]
    assert [(t.name, t.weight) for t in seen[1]["loss_terms"]] == [("lpr", cfg.lpr_weight), ("classifier", 0.3)]


def test_replay_share_uses_stage2_length_with_unequal_stages(tmp_path):
    """stage 1: 4 steps, stage 2: 8 steps: old rows are replay_share x stage-1 tokens / stage-2 tokens = 0.25."""
    cfg, _model, data = _setup(tmp_path, stage1={"steps": 4}, stage2={"steps": 8}, replay_share=0.5)
    per_step = cfg.micro_batch_size * cfg.block_len
    assert data.replay_tokens == 0.5 * 4 * per_step
    assert stage2_old_share(cfg, data) == pytest.approx(0.25)
    # the replay holds that many tokens, spread over the old languages (not one block each)
    per_lang = data.replay_tokens / len(cfg.old)
    counts = data.old.counts()
    assert all(counts[c] * cfg.block_len >= per_lang for c in cfg.old), counts


def test_replay_and_stage_split_boundaries():
    check_replay(0.5, 64, 4, 2)  # replay = 0.5 * 4 * 64 = 128 = stage 2's 2 * 64 tokens: fits exactly
    with pytest.raises(ValueError, match="larger than stage 2"):
        check_replay(0.5, 64, 4, 1)
    assert stage_steps(10, 0.27) == (7, 3)  # rounded, not floored
    assert stage_steps(10, 0.0) == (10, 0)


def test_expansion_record_written_by_a_stage_run(tmp_path):
    """The stage-1 log of a trained expansion holds the load-balance term (the term ran, not only was listed)."""
    _cfg, _model, _data = _trained_first_expansion(tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "g1" / "log.jsonl").read_text().splitlines()]
    assert rows and "load_balance" in rows[-1] and rows[-1]["load_balance"] > 0
