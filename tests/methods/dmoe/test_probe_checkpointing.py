"""Activation checkpointing in the deviation probe: the same numbers as without, switched on automatically where
the probe keeps every trained weight's gradient and those are large (`use_checkpointing`), off again after."""

from __future__ import annotations

import pytest
import torch
from dmoe_fixtures import synthetic_blocks, tiny_llama

import langmoe.methods.dmoe.probe as probe_mod
from langmoe.errors import LangmoeError
from langmoe.methods.dmoe.deviation import DeviationConfig, measure_deviation

torch.set_num_threads(1)
BASE = {"micro_batch_size": 4, "stability": False, "last_n_layers": None, "center": False, "steps": 2,
        "grad_accum": 3, "sketch_above": None}


def _checkpointed(model) -> bool:
    on = getattr(model, "is_activation_checkpointing", None)  # transformers >= 5.x; older: is_gradient_checkpointing
    return bool(model.is_gradient_checkpointing if on is None else on)


def _spy(monkeypatch) -> list[bool]:
    """Records, at each probe, whether the model recomputes activations."""
    seen: list[bool] = []
    run = probe_mod.run_probe

    def spy(model, *a, **k):
        seen.append(_checkpointed(model))
        return run(model, *a, **k)

    monkeypatch.setattr("langmoe.methods.dmoe.deviation.run_probe", spy)
    return seen


@pytest.mark.parametrize("extra", [
    {"kind": "sgd", "lr": 0.5, "grad_clip": 0.05},  # the default kind, several micro-batches: optimizer path
    {"kind": "sgd", "lr": 0.5, "grad_clip": 0.05, "grad_accum": 1},  # the in-backward step
    {"kind": "adamw", "lr": 1e-3},
    {"kind": "gradient"},
    {"kind": "sgd", "lr": 0.5, "params": "all", "include_attention": True, "weight_decay": 0.1},
])
def test_checkpointed_probe_gives_the_same_numbers(monkeypatch, extra):
    cfg = {**BASE, **extra}
    blocks = synthetic_blocks()
    plain_model, ckpt_model = tiny_llama(), tiny_llama()
    seen = _spy(monkeypatch)
    plain = measure_deviation(plain_model, blocks, {**cfg, "checkpointing": "off"})
    ckpt = measure_deviation(ckpt_model, blocks, {**cfg, "checkpointing": "on"})
    assert seen == [False] * len(plain.langs) + [True] * len(plain.langs)
    assert ckpt.dev_ffn == plain.dev_ffn and ckpt.dev_attn == plain.dev_attn
    assert ckpt.similarity == plain.similarity
    assert [ckpt.probe[x].last_loss for x in ckpt.langs] == [plain.probe[x].last_loss for x in plain.langs]
    for lang in plain.langs:
        assert torch.equal(ckpt.vectors[lang], plain.vectors[lang]), lang
    assert not _checkpointed(ckpt_model)  # switched off again
    assert all(torch.equal(a, b) for a, b in zip(ckpt_model.state_dict().values(),
                                                  plain_model.state_dict().values(), strict=True))


def _settings(**kw):
    return DeviationConfig.parse({**BASE, **kw}).settings()


def test_auto_rule_is_size_and_kept_gradients(monkeypatch):
    """auto: on exactly when the probe keeps every trained weight's gradient (not sgd's in-backward step) and
    those weights exceed CHECKPOINT_ABOVE bytes."""
    target = probe_mod.probe_target(tiny_llama(), attention=False)
    size = sum(p.numel() * p.element_size() for p in target.trained.values())
    use = probe_mod.use_checkpointing
    assert probe_mod.CHECKPOINT_ABOVE == 256 << 20
    monkeypatch.setattr(probe_mod, "CHECKPOINT_ABOVE", size - 1)  # just below this model's trained bytes
    assert use("auto", target, _settings(kind="sgd", grad_accum=16))
    assert use("auto", target, _settings(kind="sgd", grad_accum=2))
    assert use("auto", target, _settings(kind="gradient", grad_accum=1))
    assert use("auto", target, _settings(kind="adamw", grad_accum=1))
    assert not use("auto", target, _settings(kind="sgd", grad_accum=1))  # in backward: gradients never all kept
    assert not use("off", target, _settings(kind="sgd", grad_accum=16))
    monkeypatch.setattr(probe_mod, "CHECKPOINT_ABOVE", size)  # at the threshold: off
    assert not use("auto", target, _settings(kind="sgd", grad_accum=16))
    assert use("on", target, _settings(kind="sgd", grad_accum=1))
    monkeypatch.setattr(probe_mod, "CHECKPOINT_ABOVE", size - 1)
    assert not use("auto", target, _settings(kind="sgd", grad_accum=16), supported=False)  # auto leaves it be
    assert use("on", target, _settings(kind="sgd", grad_accum=16), supported=False)  # asked for: refused later
    with pytest.raises(LangmoeError, match="auto, on or off"):
        use("yes", target, _settings())


def test_default_probe_checkpoints_above_the_size_and_not_below(monkeypatch):
    """The library default (sgd, grad_accum 16) through measure_deviation: on above the size, off below."""
    blocks = synthetic_blocks()
    cfg = {"micro_batch_size": 4, "stability": False, "steps": 1}
    assert DeviationConfig.parse(cfg).grad_accum == 16 and DeviationConfig.parse(cfg).checkpointing == "auto"
    seen = _spy(monkeypatch)
    measure_deviation(tiny_llama(), blocks, cfg)
    assert seen and not any(seen)  # the tiny model is far below 256 MiB
    seen.clear()
    monkeypatch.setattr(probe_mod, "CHECKPOINT_ABOVE", 0)
    model = tiny_llama()
    measure_deviation(model, blocks, cfg)
    assert seen and all(seen)
    assert not _checkpointed(model)


def test_checkpointing_on_before_the_probe_stays_on():
    model = tiny_llama()
    from langmoe.precision import _enable_checkpointing

    _enable_checkpointing(model)
    measure_deviation(model, synthetic_blocks(), {**BASE, "kind": "sgd", "checkpointing": "on"})
    assert _checkpointed(model)


def test_cli_options_set_it():
    import argparse

    from langmoe.commands.deviation import build_deviation_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    base = ["deviation", "--model", "m", "--langs", "de", "--out", "o"]
    assert build_deviation_config(parser.parse_args(base)).checkpointing == "auto"
    assert build_deviation_config(parser.parse_args([*base, "--gradient-checkpointing"])).checkpointing == "on"
    assert build_deviation_config(parser.parse_args([*base, "--no-gradient-checkpointing"])).checkpointing == "off"


def test_checkpointing_is_not_in_the_cache_key():
    a = DeviationConfig.parse({"checkpointing": "on"}).key_fields(10)
    assert a == DeviationConfig.parse({"checkpointing": "off"}).key_fields(10) == DeviationConfig().key_fields(10)
