"""Adaptation moves what it trains, expert row by expert row, by gradient (weight decay 0, so decay alone cannot
move a row), and nothing else: SEFT with expert 0 among the trained ones, SSFT, AEFT, and the baselines (the
last N layers, full fine-tuning, LoRA merged back)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from param_moves import check_moves
from routing_fixtures import tiny_moe

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "eval"))
from eval_fixtures import ListCorpus, char_tokenizer  # noqa: E402

from langmoe.methods.routing.adapt import AdaptConfig, build_plan, run_adaptation  # noqa: E402
from langmoe.models.routers import iter_router_layers  # noqa: E402

torch.set_num_threads(1)

CORPUS = ListCorpus({
    "kid": {"train": ["abcab cabca " * 30, "bca abc " * 30], "test": ["abcab cabca abc " * 6]},
    "par": {"train": ["ddé éd " * 30], "test": ["dédé ddé " * 6]},
})


def _snap(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _cfg(mode: str, **kw) -> AdaptConfig:
    return AdaptConfig(mode=mode, child="kid", parent="par", last_n=1, steps=3, lr=2e-2, weight_decay=0.0,
                       warmup_ratio=0.0, batch_size=4, block_len=16, eval_chars=100, **kw)


def _moved_rows(before, after, name) -> list[int]:
    return [e for e in range(before[name].shape[0]) if not torch.equal(before[name][e], after[name][e])]


def test_seft_moves_each_trained_expert_row_by_gradient_only_those(tmp_path):
    """Experts 0 and 3 of the last layer train (expert 0: the first row of a fused tensor); the routing mask
    sends every token to them, so each must move with weight decay 0; the other rows and layers stay."""
    model = tiny_moe("qwen3_moe")
    plan = build_plan(model, "seft", 1, {2: [0, 3]})
    assert all(r.tolist() == [True, False, False, True, False, False, False, False] for _, r in plan.partial.values())
    before = _snap(model)
    adapted, _ = run_adaptation(model, char_tokenizer(), CORPUS, _cfg("seft"), None, tmp_path, plan=plan)
    after = _snap(adapted)
    experts = [n for n in plan.partial if ".experts." in n]
    assert experts
    for name in plan.partial:
        assert _moved_rows(before, after, name) == [0, 3], name
    untouched = [n for n in before if n not in plan.partial and n not in plan.full]
    assert untouched and all(torch.equal(before[n], after[n]) for n in untouched)


def test_aeft_moves_every_expert_of_the_last_layer(tmp_path):
    model = tiny_moe("olmoe")
    plan = build_plan(model, "aeft", 1, {2: list(range(8))})
    before = _snap(model)
    adapted, _ = run_adaptation(model, char_tokenizer(), CORPUS, _cfg("aeft"), None, tmp_path, plan=plan)
    after = _snap(adapted)
    fused = [n for n in plan.full if ".experts." in n and before[n].dim() == 3]
    assert fused
    routed = set()
    for name in fused:
        routed |= set(_moved_rows(before, after, name))
    assert len(routed) >= 6, routed  # top-2 of 8 experts over 3 steps of 64 tokens: nearly all get tokens
    assert all(torch.equal(before[n], after[n]) for n in before if n not in plan.full)


def test_lastn_moves_the_whole_last_layer_and_nothing_before(tmp_path):
    model = tiny_moe("qwen3_moe")
    plan = build_plan(model, "lastn", 1)
    before = _snap(model)
    adapted, _ = run_adaptation(model, char_tokenizer(), CORPUS, _cfg("lastn"), None, tmp_path, plan=plan)
    after = _snap(adapted)
    attn = [n for n in plan.full if "self_attn" in n and n.endswith("proj.weight")]
    assert attn and all(not torch.equal(before[n], after[n]) for n in attn)
    assert all(n.startswith("model.layers.2.") for n in plan.full)
    assert all(torch.equal(before[n], after[n]) for n in before if n not in plan.full)


def test_alpha_boundary_is_inclusive():
    """A share gap of exactly alpha makes an expert specific (>=); just above the gap none is. (Read on the metric
    itself: `adapt` now refuses SEFT when the experts it allows are no more than top-k, see test_adapt.py.)"""
    from langmoe.methods.routing.metrics import specific_experts

    counts = np.array([[[40, 30, 20, 10]], [[10, 20, 30, 40]], [[25, 25, 25, 25]]], dtype=float)
    gap = 40 / 100 - 25 / 100  # expert 0: the parent's share minus the runner-up's, as the metric computes it
    langs = ["par", "oth", "kid"]
    assert specific_experts(counts, langs, 0, alpha=gap)["par"] == [0]
    assert specific_experts(counts, langs, 0, alpha=float(np.nextafter(gap, 1.0)))["par"] == []


def test_ssft_moves_each_specific_and_shared_expert_row_only_those(tmp_path):
    """SSFT: the specific expert 1 plus the shared experts 0 and 4 train (expert 0: the first row of a fused tensor,
    expert 4 not next to the others); every other row, and every other parameter, stays bit-equal."""
    model = tiny_moe("qwen3_moe")
    plan = build_plan(model, "ssft", 1, {2: [0, 1, 4]})
    assert plan.allowed == {2: [0, 1, 4]}
    before = _snap(model)
    adapted, _ = run_adaptation(model, char_tokenizer(), CORPUS, _cfg("ssft"), None, tmp_path, plan=plan)
    after = _snap(adapted)
    assert [n for n in plan.partial if ".experts." in n] and not plan.full
    for name in plan.partial:
        assert _moved_rows(before, after, name) == [0, 1, 4], name
    check_moves(before, after, lambda n: None if n in plan.partial else False, "ssft")


def test_full_moves_every_parameter(tmp_path):
    """The full fine-tuning baseline: every tensor of the model moved (weight decay 0: by gradient)."""
    model = tiny_moe("qwen3_moe")
    plan = build_plan(model, "full", 1)
    before = _snap(model)
    adapted, res = run_adaptation(model, char_tokenizer(), CORPUS, _cfg("full"), None, tmp_path, plan=plan)
    seen = check_moves(before, _snap(adapted), lambda n: True, "full")
    assert seen["moved"] == len(before) and res["trainable_share"] == 1.0


def test_lora_moves_the_last_layers_projections_and_experts_only(tmp_path):
    """LoRA, merged back: in the last MoE layer every attention projection and every fused expert tensor moved
    (a low-rank update each); its router and norms, and every earlier layer, the embeddings and the LM head are
    bit-equal."""
    model = tiny_moe("qwen3_moe")
    routers = {n for r in iter_router_layers(model) for n in r.router_params}
    experts = {n for r in iter_router_layers(model) for n in r.expert_params}
    before = _snap(model)
    adapted, _ = run_adaptation(model, char_tokenizer(), CORPUS, _cfg("lora"), None, tmp_path)
    after = _snap(adapted)

    def rule(name: str) -> bool:
        last = name.startswith("model.layers.2.")
        return last and name not in routers and (name in experts or name.endswith("_proj.weight"))

    seen = check_moves(before, after, rule, "lora")
    assert seen["moved"] == 4 + 2  # q, k, v, o + the fused gate_up / down expert tensors
    assert {n for n in experts if n.startswith("model.layers.2.")} <= {n for n in before if rule(n)}
