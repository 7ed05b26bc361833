"""`langmoe.precision`: a command's settings reach the loaders and stage keys only while they are active."""

from __future__ import annotations

import pytest
import torch

from langmoe.errors import LangmoeError
from langmoe.models.base import load_model_and_tokenizer
from langmoe.models.moe_io import load_model_any
from langmoe.pipeline.runner import stage_key
from langmoe.precision import Precision, active, apply_to_config, cache_fields, load_dtype, use_precision
from langmoe.train.trainer import TrainConfig


def test_nothing_is_set_outside_a_command():
    assert active() == Precision() and load_dtype(torch.float32) is torch.float32 and load_dtype(None) is None
    assert cache_fields() == {}
    config = TrainConfig(steps=1, mixed_precision="bf16")
    assert apply_to_config(config) is config


def test_active_settings_reach_loaders_and_are_restored():
    with use_precision(Precision(dtype="bfloat16")):
        assert load_model_and_tokenizer("builtin")[0].dtype == torch.bfloat16  # default fp32 replaced
        assert load_model_any("builtin")[0].dtype == torch.bfloat16  # the folder's own dtype replaced
        assert load_model_any("builtin", dtype="float32")[0].dtype == torch.float32  # an explicit dtype wins
    assert load_model_and_tokenizer("builtin")[0].dtype == torch.float32


def test_config_override_only_for_fields_that_are_set():
    config = TrainConfig(steps=1, mixed_precision="bf16")
    with use_precision(Precision(gradient_checkpointing=True)):
        got = apply_to_config(config)
    assert got.mixed_precision == "bf16" and got.gradient_checkpointing is True and config.gradient_checkpointing is False
    with use_precision(Precision(mixed_precision="no", attn_implementation="eager")):
        got = apply_to_config(config)
    assert got.mixed_precision == "no" and got.attn_implementation == "eager"


def test_stage_keys_change_with_settings_that_change_results():
    plain = stage_key("s", {"a": 1})
    with use_precision(Precision(gradient_checkpointing=True)):
        assert stage_key("s", {"a": 1}) == plain  # same result: the cached stage is reused
    with use_precision(Precision(mixed_precision="bf16")):
        bf16 = stage_key("s", {"a": 1})
    with use_precision(Precision(dtype="bfloat16")):
        weights = stage_key("s", {"a": 1})
    assert len({plain, bf16, weights}) == 3


def test_bad_values_are_refused():
    with pytest.raises(Exception, match="dtype"):
        Precision(dtype="float8")
    with pytest.raises(LangmoeError, match="attn_implementation"):
        TrainConfig.parse({"steps": 1, "attn_implementation": "flash"})
