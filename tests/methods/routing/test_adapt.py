"""Expert-level adaptation: frozen slices bit-identical under AdamW with weight decay, masking during training,
trainable shares by hand, selection errors, and a short run that lowers the child's loss."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from routing_fixtures import tiny_langmoe, tiny_moe, tokens

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "eval"))
from eval_fixtures import ListCorpus, char_tokenizer  # noqa: E402

from langmoe.errors import LangmoeError  # noqa: E402
from langmoe.methods.routing.adapt import (  # noqa: E402
    AdaptConfig,
    SliceFreezer,
    apply_lora,
    build_plan,
    prepare_adaptation,
    run_adaptation,
    select_experts,
    set_trainable,
)
from langmoe.methods.routing.collect import RoutingCounts  # noqa: E402
from langmoe.methods.routing.routers import iter_router_layers  # noqa: E402

torch.set_num_threads(1)


def _snap(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _adamw_steps(model, plan, steps=4, freeze=True):
    set_trainable(model, plan)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    x = tokens(batch=4, length=16)
    model.train()
    ctx = SliceFreezer(plan.partial) if freeze else None
    if ctx:
        ctx.__enter__()
    try:
        for _ in range(steps):
            loss = model(x, labels=x).loss  # no routing mask: frozen experts DO get gradients to be zeroed
            loss.backward()
            opt.step()
            opt.zero_grad()
    finally:
        if ctx:
            ctx.__exit__(None, None, None)
    return opt


@pytest.mark.parametrize("arch", ["qwen3_moe", "gpt_oss", "olmoe"])
def test_frozen_expert_slices_bit_identical_under_adamw_decay(arch):
    model = tiny_moe(arch)
    before = _snap(model)
    plan = build_plan(model, "ssft", 1, {2: [1, 3]})
    opt = _adamw_steps(model, plan)
    after = _snap(model)
    frozen_rows = torch.ones(8, dtype=torch.bool)
    frozen_rows[[1, 3]] = False
    assert plan.partial, "fused expert tensors must be partially trainable"
    for name, (p, rows) in plan.partial.items():
        assert torch.equal(rows, ~frozen_rows)
        assert torch.equal(after[name][frozen_rows], before[name][frozen_rows]), name  # bit-identical
        assert not torch.equal(after[name][~frozen_rows], before[name][~frozen_rows]), name  # trained rows moved
        st = opt.state[p]
        assert not st["exp_avg"][frozen_rows].any() and not st["exp_avg_sq"][frozen_rows].any()
    trained = set(plan.partial) | set(plan.full)
    for name in before:  # everything else untouched
        if name not in trained:
            assert torch.equal(after[name], before[name]), name


def test_without_the_freezer_decay_moves_frozen_slices():
    """Control: plain AdamW (weight decay 0.1) does change frozen rows of a fused parameter."""
    model = tiny_moe("qwen3_moe")
    before = _snap(model)
    plan = build_plan(model, "seft", 1, {2: [1]})
    _adamw_steps(model, plan, steps=2, freeze=False)
    name = next(n for n in plan.partial if n.endswith("gate_up_proj"))
    assert not torch.equal(model.get_parameter(name)[0], before[name][0])


def test_trainable_share_by_hand():
    model = tiny_moe("qwen3_moe")
    total = sum(p.numel() for p in model.parameters())
    # per expert in layer 2: gate_up [64, 32] + down [32, 32] + router row [32]
    per_expert = 64 * 32 + 32 * 32 + 32
    plan = build_plan(model, "seft", 1, {2: [1, 3]})
    assert plan.trainable == 2 * per_expert and plan.total == total
    assert plan.share == pytest.approx(2 * per_expert / total)
    aeft = build_plan(model, "aeft", 1, {2: list(range(8))})
    assert aeft.trainable == 8 * per_expert and not aeft.partial and aeft.allowed is None
    lastn = build_plan(model, "lastn", 1)
    assert lastn.trainable == sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.layers.2."))
    assert build_plan(model, "full", 1).trainable == total
    assert build_plan(model, "aeft", 2, {1: list(range(8)), 2: list(range(8))}).trainable == 16 * per_expert


def _counts(langs, shares, layers=(0, 1, 2), E=4, top_k=2):
    c = np.asarray(shares, dtype=float)
    return RoutingCounts(langs=langs, layers=list(layers), num_experts=[E] * len(layers), top_k=[top_k] * len(layers),
                         counts=c.tolist(), tokens={lang: 100 for lang in langs})


def test_selection_by_hand_and_errors():
    layer = [[40, 30, 20, 10], [10, 20, 30, 40], [25, 25, 25, 25]]  # p (parent), q, child
    rc = _counts(["p", "q", "k"], [[layer[0]] * 3, [layer[1]] * 3, [layer[2]] * 3], top_k=0)
    # reference = p, q (child left out): shares p .4 .3 .2 .1 / q .1 .2 .3 .4 -> p leads e0 (gap .3), e1 (.1)
    assert select_experts(rc, "seft", "p", "k", 1, alpha=0.2) == {2: [0]}
    assert select_experts(rc, "seft", "p", "k", 2, alpha=0.05) == {1: [0, 1], 2: [0, 1]}
    # shared by mean share over p, q: all .25 -> lowest ids first
    assert select_experts(rc, "ssft", "p", "k", 1, alpha=0.2, n_shared=2) == {2: [0, 1]}
    assert select_experts(rc, "aeft", "p", "k", 1) == {2: [0, 1, 2, 3]}
    with pytest.raises(LangmoeError, match=r"no specific experts at alpha=0.5.*smaller --alpha \(e.g. --alpha 0.27\)"):
        select_experts(rc, "seft", "p", "k", 1, alpha=0.5)
    with pytest.raises(LangmoeError, match="larger than the number of MoE layers"):
        select_experts(rc, "seft", "p", "k", 4, alpha=0.1)
    with pytest.raises(LangmoeError, match="not in the routing counts"):
        select_experts(rc, "seft", "zz", "k", 1, alpha=0.1)
    with pytest.raises(LangmoeError, match="only the parent"):
        select_experts(_counts(["p", "k"], [[layer[0]] * 3, [layer[2]] * 3]), "seft", "p", "k", 1, alpha=0.1)
    # top-2 routing: seft's 1 allowed expert, ssft's 2, leave the router no choice -> one-line refusal
    rc2 = _counts(["p", "q", "k"], [[layer[0]] * 3, [layer[1]] * 3, [layer[2]] * 3], top_k=2)
    with pytest.raises(LangmoeError, match=r"seft allows 1 expert\(s\) in layer 2 .* routes every token to 2"):
        select_experts(rc2, "seft", "p", "k", 1, alpha=0.2)
    with pytest.raises(LangmoeError, match="at least 1 more"):
        select_experts(rc2, "ssft", "p", "k", 1, alpha=0.2, n_shared=2)
    assert select_experts(rc2, "ssft", "p", "k", 1, alpha=0.2, n_shared=3) == {2: [0, 1, 2]}
    # default last_n: the paper's last 2 MoE layers
    assert set(select_experts(rc, "seft", "p", "k", None, alpha=0.05)) == {1, 2}


CORPUS = ListCorpus({
    "kid": {"train": ["abcab cabca " * 30, "bca abc " * 30], "test": ["abcab cabca abc " * 6]},
    "par": {"train": ["ddé éd " * 30], "test": ["dédé ddé " * 6]},
    "oth": {"train": ["aaa " * 30], "test": ["aaaa a " * 6]},
})


def test_short_ssft_run_lowers_child_loss_keeps_frozen_and_masks(tmp_path):
    model, tok = tiny_moe("qwen3_moe"), char_tokenizer()
    counts = _counts(["par", "oth", "kid"], [[[10, 60, 10, 10, 5, 2, 2, 1]] * 3,
                                             [[10, 10, 60, 10, 5, 2, 2, 1]] * 3,
                                             [[1] * 8] * 3], E=8)
    cfg = AdaptConfig(mode="ssft", child="kid", parent="par", last_n=1, alpha=0.2, n_shared=3, steps=12, lr=2e-2,
                      batch_size=4, block_len=16, eval_chars=0)
    plan = prepare_adaptation(model, cfg, counts)
    # specific e1 + shared top-3 by mean share over par, oth {e1, e2, e0}: 3 allowed > top-2
    assert plan.experts == {2: [0, 1, 2]} and plan.allowed == {2: [0, 1, 2]} and plan.pool == ["par", "oth"]
    before = _snap(model)
    seen = []
    r2 = iter_router_layers(model)[-1]
    h = r2.block.experts.register_forward_pre_hook(
        lambda m, a: seen.append(a[1].unique().tolist()) if m.training else None)
    adapted, res = run_adaptation(model, tok, CORPUS, cfg, counts, tmp_path, plan=plan)
    h.remove()
    assert seen and all(set(s) <= {0, 1, 2} for s in seen)  # masked experts got no tokens while training
    assert res["after"]["kid"]["ppl"] < res["before"]["kid"]["ppl"]
    assert res["trainable_share"] == pytest.approx(plan.share) and res["train_tokens"] == 12 * 4 * 16
    after = _snap(adapted)
    for name, (_p, rows) in plan.partial.items():
        assert torch.equal(after[name][~rows], before[name][~rows]), name
    layer0 = "model.layers.0.mlp.experts.gate_up_proj"
    assert torch.equal(after[layer0], before[layer0])
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])


def test_lora_and_langmoe_modes(tmp_path):
    tok = char_tokenizer()
    cfg = AdaptConfig(mode="lora", child="kid", parent="par", last_n=1, steps=3, batch_size=2, block_len=16,
                      eval_chars=200)
    for arch in ("olmoe", "gpt_oss"):
        model = tiny_moe(arch)
        plan = build_plan(model, "lora", 1)
        wrapped = apply_lora(model, plan, r=2)
        lora = {n for n, p in wrapped.named_parameters() if p.requires_grad}
        assert any(".experts." in n for n in lora) and any("self_attn" in n for n in lora)
        with torch.no_grad():  # make the update non-zero, then merging must give the same function
            for n, p in wrapped.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
            x = tokens()
            y = wrapped(x).logits
            merged = wrapped.merge_and_unload()
            assert torch.allclose(merged(x).logits, y, atol=1e-5), arch
    model = tiny_moe("olmoe")
    adapted, res = run_adaptation(model, tok, CORPUS, cfg, None, tmp_path / "lora")
    assert 0 < res["trainable_share"] < 0.2
    assert not any("lora" in n for n, _ in adapted.named_parameters())  # merged back into a plain model
    lm = tiny_langmoe()
    before = _snap(lm)
    plan = build_plan(lm, "seft", 1, {2: [1]})
    _adamw_steps(lm, plan, steps=3)
    for name, (_p, rows) in plan.partial.items():
        assert torch.equal(lm.get_parameter(name)[~rows], before[name][~rows])
    with pytest.raises(LangmoeError, match="larger than the number of MoE layers"):
        build_plan(lm, "lastn", 5)


def test_seft_run_on_langmoe_blocks_masks_through_routing(tmp_path):
    lm, tok = tiny_langmoe(top_k=1), char_tokenizer()
    counts = _counts(["par", "oth", "kid"], [[[10, 50, 10, 40]] * 3, [[10, 10, 60, 20]] * 3, [[1] * 4] * 3],
                     top_k=1)
    cfg = AdaptConfig(mode="seft", child="kid", parent="par", last_n=1, alpha=0.15, steps=4, lr=1e-2, batch_size=2,
                      block_len=16, eval_chars=200)
    plan = prepare_adaptation(lm, cfg, counts)  # par leads e1 (gap .35) and e3 (gap .16)
    assert plan.experts == {2: [1, 3]} and plan.allowed == {2: [1, 3]}
    before = _snap(lm)
    block = iter_router_layers(lm)[-1].block
    seen = []
    h = block.router.register_forward_hook(
        lambda m, a, o: seen.append(o[2].unique().tolist()) if m.training else None)
    adapted, res = run_adaptation(lm, tok, CORPUS, cfg, counts, tmp_path, plan=plan)
    h.remove()
    assert seen and all(set(s) <= {1, 3} for s in seen) and any(len(s) == 2 for s in seen)
    for name, (_p, rows) in plan.partial.items():
        assert torch.equal(adapted.get_parameter(name)[~rows], before[name][~rows])
        assert not torch.equal(adapted.get_parameter(name)[rows], before[name][rows])
