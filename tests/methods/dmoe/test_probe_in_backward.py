"""The sgd probe's step inside backward (`SGDInBackward`) against the optimizer path it replaces: the same weights,
bit for bit, with clipping active; it is the path taken by default with one micro-batch a step."""

from __future__ import annotations

import pytest
import torch
from dmoe_fixtures import synthetic_blocks, tiny_llama

import langmoe.methods.dmoe.probe as probe_mod
from langmoe.methods.dmoe.deviation import DeviationConfig, measure_deviation

torch.set_num_threads(1)
BASE = {"micro_batch_size": 4, "stability": False, "last_n_layers": None, "center": False, "kind": "sgd",
        "grad_accum": 1, "steps": 3, "lr": 0.5, "sketch_above": None}


def _both(monkeypatch, cfg: dict):
    """(in backward, through the optimizer) on the same model and data."""
    model, blocks = tiny_llama(), synthetic_blocks()
    new = measure_deviation(model, blocks, cfg)
    with monkeypatch.context() as m:
        m.setattr(probe_mod, "sgd_in_backward", lambda _s: False)
        old = measure_deviation(model, blocks, cfg)
    return new, old


@pytest.mark.parametrize("extra", [
    {"grad_clip": 0.05},  # clipped at every step (the gradient norm is far above 0.05)
    {"grad_clip": 1e6},  # never clipped: the coefficient is 1
    {"grad_clip": 0.0},  # no clipping: one backward pass
    {"grad_clip": 0.05, "weight_decay": 0.1, "params": "all", "include_attention": True},  # norms: no decay
    {"grad_clip": 0.05, "mixed_precision": "bf16"},
])
def test_in_backward_gives_the_optimizers_weights_bit_for_bit(monkeypatch, extra):
    new, old = _both(monkeypatch, {**BASE, **extra})
    assert new.dev_ffn == old.dev_ffn and new.dev_attn == old.dev_attn
    assert new.similarity == old.similarity
    for lang in old.langs:
        assert torch.equal(new.vectors[lang], old.vectors[lang]), lang
        assert new.probe[lang].first_loss == old.probe[lang].first_loss
        assert new.probe[lang].last_loss == old.probe[lang].last_loss


def test_clipping_is_applied_in_backward(monkeypatch):
    """A step that skipped the clip (or applied it to the wrong weights) would move them further."""
    clipped, _ = _both(monkeypatch, {**BASE, "grad_clip": 0.05, "steps": 1})
    free, _ = _both(monkeypatch, {**BASE, "grad_clip": 0.0, "steps": 1})
    ratio = clipped.vectors["en"].norm() / free.vectors["en"].norm()
    assert 0 < float(ratio) < 0.5
    torch.testing.assert_close(clipped.vectors["en"] / clipped.vectors["en"].norm(),
                               free.vectors["en"] / free.vectors["en"].norm(), rtol=1e-4, atol=1e-6)


def test_default_sgd_with_one_micro_batch_steps_in_backward_and_frees_each_gradient(monkeypatch):
    settings = DeviationConfig.parse({"grad_accum": 1}).settings()
    assert settings.kind == "sgd" and probe_mod.sgd_in_backward(settings)
    assert not probe_mod.sgd_in_backward(DeviationConfig.parse({"grad_accum": 2}).settings())
    assert not probe_mod.sgd_in_backward(DeviationConfig.parse({"kind": "adamw", "grad_accum": 1}).settings())

    def no_optimizer(*_a, **_k):
        raise AssertionError("the optimizer path ran")

    monkeypatch.setattr(probe_mod, "_optimizer", no_optimizer)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", no_optimizer)
    model, blocks = tiny_llama(), synthetic_blocks()
    alive: list[int] = []
    ffn = [p for e in probe_mod.layer_params(model) for _, p in e["ffn"]]
    for p in ffn:  # registered before the probe's own hooks, so it runs first: counts the gradients held
        p.register_post_accumulate_grad_hook(lambda _p: alive.append(sum(q.grad is not None for q in ffn)))
    res = measure_deviation(model, blocks, {"micro_batch_size": 4, "stability": False, "grad_accum": 1,
                                            "steps": 2})
    assert all(max(v) > 0 for v in res.dev_ffn.values())
    assert alive and max(alive) == 1  # each gradient is gone before the next one arrives
    assert all(p.grad is None for p in model.parameters())


def test_in_backward_with_activation_checkpointing_is_the_same():
    """The norm pass and the step pass each recompute the checkpointed layers: same weights as without."""
    from langmoe.precision import _enable_checkpointing

    cfg = {**BASE, "grad_clip": 0.05}
    blocks = synthetic_blocks()
    plain = measure_deviation(tiny_llama(), blocks, cfg)
    model = tiny_llama()
    _enable_checkpointing(model)
    ckpt = measure_deviation(model, blocks, cfg)
    assert ckpt.dev_ffn == plain.dev_ffn
    assert all(torch.equal(ckpt.vectors[x], plain.vectors[x]) for x in plain.langs)
