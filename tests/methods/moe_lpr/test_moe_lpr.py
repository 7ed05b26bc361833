"""MoE-LPR: frozen expert 0 (bit for bit, also under AdamW decay), stage parameter sets, xavier routers, replay."""

from __future__ import annotations

import json
import math

import pytest
import torch
from expansion_world import fast_config
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from langmoe.data.corpus import open_corpus
from langmoe.methods import moe_lpr
from langmoe.methods.moe_lpr import MoELPRConfig, uniform_plan
from langmoe.models.moe_io import load_moe_pretrained
from langmoe.models.routing import routing
from langmoe.models.upcycle import upcycle
from langmoe.train.expansion import (
    ReplayMixSource,
    build_data,
    expand_model,
    load_base,
    stage_tokens,
    train_stage1,
    train_stage2,
    xavier_router_init,
)


def _setup(tmp_path, **over):
    cfg = MoELPRConfig(**fast_config(tmp_path, **over))
    base = load_base(cfg.model)
    data = build_data(cfg, open_corpus(cfg.corpus), base.tokenizer, cfg.old)
    return cfg, base, data


def _logits(model, ids, expert=None):
    model.eval()
    with torch.no_grad():
        if expert is None:
            return model(input_ids=ids).logits
        with routing(model, route_labels=torch.full_like(ids, expert)):
            return model(input_ids=ids).logits


def test_stage1_keeps_expert0_and_the_dense_model_bit_for_bit(tmp_path):
    stage1 = {"steps": 3, "lr": 0.05, "weight_decay": 0.5, "warmup_ratio": 0.0}
    cfg, base, data = _setup(tmp_path, stage1=stage1)
    model = base.model
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
    cfg, base, data = _setup(tmp_path, stage2={"steps": 3, "lr": 0.05, "weight_decay": 0.5, "warmup_ratio": 0.0})
    model = base.model
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


def test_xavier_normal_router_init():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=16, hidden_size=256, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(cfg)
    upcycle(model, "all", 8, 2, frozen_expert0=True)
    xavier_router_init(model, seed=1)
    w = dict(model.named_parameters())["model.layers.0.mlp.router.weight"]
    assert w.shape == (8, 256)
    assert float(w.detach().std()) == pytest.approx(math.sqrt(2 / (256 + 8)), rel=0.06)
    assert abs(float(w.detach().mean())) < 0.01


def test_replay_share_and_mix(tmp_path):
    cfg, base, data = _setup(tmp_path, replay_share=0.01, stage1={"steps": 400}, stage2={"steps": 10})
    s1 = stage_tokens(cfg, 400)
    assert data.replay_tokens == round(0.01 * s1)
    assert data.old.num_tokens() <= data.replay_tokens + cfg.block_len * len(cfg.old)
    share = data.replay_tokens / stage_tokens(cfg, 10)
    src = ReplayMixSource(data, cfg.micro_batch_size, share, seed=0)
    old_ids = {data.codes.index(c) for c in cfg.old}
    n_old = 0
    for step in range(10):
        b = src.get(step, 0)
        is_old = [int(r[0]) in old_ids for r in b["lang_ids"]]
        n_old += sum(is_old)
    assert n_old == math.floor(10 * cfg.micro_batch_size * share)
    assert torch.equal(src.get(3, 0)["input_ids"], src.get(3, 0)["input_ids"])  # pure function of the step


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
    loaded = load_moe_pretrained(out)
    ids = torch.arange(1, 17).reshape(1, 16)
    assert torch.equal(_logits(loaded, ids), _logits(res.model, ids))
    assert loaded.config.langmoe_expansion["expert0_langs"] == ["en", "de"]
    assert (out / "logs" / "stage1.jsonl").is_file()


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


def test_stage2_without_replay_has_no_lpr_term(tmp_path):
    cfg, base, data = _setup(tmp_path, replay_share=0.0, stage2={"steps": 2})
    assert data.old is None and data.expert0_ids == [] and data.replay_tokens == 0
    model = base.model
    expand_model(model, uniform_plan(model, 2), cfg.top_k, cfg.seed)
    model.train()
    train_stage2(model, cfg, data, tmp_path / "s2")
    rows = [json.loads(x) for x in (tmp_path / "s2" / "log.jsonl").read_text().splitlines()]
    assert "lpr" not in rows[-1]
