"""Deviation = Frobenius norm of the FFN weight-matrix deltas per layer, biases and norms excluded, checked on GPT-2
(whose MLP has biases next to its matrices) against hand-set deltas and an independent fine-tune."""

import copy
import math

import pytest
import torch
from dmoe_fixtures import SEQ, VOCAB, synthetic_blocks
from transformers import GPT2Config, GPT2LMHeadModel

from langmoe.data.samplers import TemperatureSampler
from langmoe.methods.dmoe.deviation import (
    DeviationConfig,
    _language_view,
    layer_params,
    measure_deviation,
)
from langmoe.methods.dmoe.probe import measure
from langmoe.train.trainer import TrainConfig, train


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=SEQ, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def test_layer_params_are_the_weight_matrices_only():
    lp = layer_params(tiny_gpt2())
    assert len(lp) == 2
    for i, entry in enumerate(lp):
        assert [n for n, _ in entry["ffn"]] == [f"transformer.h.{i}.mlp.c_fc.weight", f"transformer.h.{i}.mlp.c_proj.weight"]
        assert [n for n, _ in entry["attn"]] == [f"transformer.h.{i}.attn.c_attn.weight",
                                                 f"transformer.h.{i}.attn.c_proj.weight"]


def test_measure_on_hand_set_deltas():
    model = tiny_gpt2()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = dict(model.named_parameters())
    with torch.no_grad():
        params["transformer.h.0.mlp.c_fc.weight"].add_(0.5)  # 16 x 64 entries
        params["transformer.h.0.mlp.c_proj.weight"][0, 0] += 3.0
        params["transformer.h.0.mlp.c_fc.bias"].add_(100.0)  # biases and norms must not count
        params["transformer.h.0.ln_2.weight"].add_(100.0)
        params["transformer.h.1.mlp.c_proj.bias"].add_(100.0)
        params["transformer.h.1.attn.c_proj.weight"][1, 2] -= 2.0
        params["transformer.h.1.attn.c_attn.bias"].add_(100.0)
    m = measure(layer_params(model), lambda n, p: p.detach() - base[n], [0], attention=True)
    dev_ffn, dev_attn, vec = m.dev_ffn, m.dev_attn, m.vector
    assert dev_ffn[0] == pytest.approx(math.sqrt(0.25 * 16 * 64 + 9.0), rel=1e-6)
    assert dev_ffn[1] == 0.0
    assert dev_attn == pytest.approx([0.0, 2.0], rel=1e-6)
    assert vec.numel() == 2 * 16 * 64  # layer 0's c_fc and c_proj deltas, no bias
    assert float(vec.pow(2).sum()) == pytest.approx(dev_ffn[0] ** 2, rel=1e-5)


def test_probe_on_gpt2_equals_an_independent_fine_tune(tmp_path):
    model, blocks = tiny_gpt2(), synthetic_blocks()
    ref = copy.deepcopy(model)
    base = {n: p.detach().clone() for n, p in ref.named_parameters()}
    res = measure_deviation(model, blocks, DeviationConfig(steps=2, lr=1e-2, micro_batch_size=4, last_n_layers=1,
                                                           grad_accum=1, stability=False, kind="adamw",
                                                           params="all"),
                            langs=["de"])
    tc = TrainConfig(steps=2, lr=1e-2, warmup_ratio=0.0, min_lr_ratio=1.0, weight_decay=0.0, grad_clip=1.0, micro_batch_size=4,
                     log_every=1, progress=False)
    train(ref, TemperatureSampler(_language_view(blocks, "de"), 4, seed=0), tc, tmp_path / "ref")
    after = dict(ref.named_parameters())
    for layer in range(2):
        names = [f"transformer.h.{layer}.mlp.{w}.weight" for w in ("c_fc", "c_proj")]
        expected = math.sqrt(sum(float(((after[n].detach() - base[n]).double() ** 2).sum()) for n in names))
        assert res.dev_ffn["de"][layer] == pytest.approx(expected, rel=1e-5)
        bias = f"transformer.h.{layer}.mlp.c_fc.bias"
        with_bias = math.sqrt(expected**2 + float(((after[bias].detach() - base[bias]).double() ** 2).sum()))
        assert res.dev_ffn["de"][layer] != pytest.approx(with_bias, rel=1e-6)  # the bias moved, and is left out
