"""Every training command takes the shared precision options; a run records them and its peak memory."""

from __future__ import annotations

import json

import pytest
import torch

from langmoe.cli import build_parser, main

TRAINING_COMMANDS = ["train", "pretrain", "run", "expand", "add-language", "adapt", "deviation"]


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_every_training_command_has_the_options(command):
    sub = _subparsers()[command]
    flags = {s for a in sub._actions for s in a.option_strings}
    assert {"--dtype", "--mixed-precision", "--gradient-checkpointing", "--attn-implementation"} <= flags
    opts = sub._option_string_actions
    assert opts["--dtype"].choices == ["float32", "bfloat16"] and opts["--dtype"].default is None
    assert opts["--mixed-precision"].default is None  # None: the command's or recipe's own setting


def test_train_in_bf16_with_checkpointing_records_settings_and_peak(tmp_path, capsys):
    out = tmp_path / "cpt"
    rc = main(["train", "--model", "builtin", "--langs", "en", "de", "--out", str(out), "--steps", "2",
               "--block-len", "32", "--batch-size", "2", "--max-train-tokens", "4000", "--save-every", "0",
               "--threads", "1", "--dtype", "bfloat16", "--mixed-precision", "bf16", "--gradient-checkpointing"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("peak memory: ") and last.endswith(" GB resident")
    rec = json.loads((out / "train.json").read_text())
    assert rec["peak_memory"]["peak_rss_bytes"] > 100e6
    assert float(last.split()[2]) == pytest.approx(rec["peak_memory"]["peak_rss_bytes"] / 1e9, abs=0.006)
    assert rec["precision"] == {"dtype": "bfloat16", "mixed_precision": "bf16", "gradient_checkpointing": True,
                                "attn_implementation": None}
    assert rec["config"]["optim"]["mixed_precision"] == "bf16"
    from langmoe.models.base import load_model_and_tokenizer

    trained, _ = load_model_and_tokenizer(out)
    base, _ = load_model_and_tokenizer("builtin")
    assert trained.dtype == torch.float32  # saved in the source folder's dtype
    assert not torch.equal(trained.lm_head.weight, base.lm_head.weight)  # trained weights moved


def test_a_command_without_the_options_prints_no_peak(capsys):
    assert main(["languages"]) == 0
    assert "peak memory" not in capsys.readouterr().out
