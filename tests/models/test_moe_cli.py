"""The upcycle and export commands end to end on a tiny Llama folder."""

import torch
from moe_fixtures import tiny_model, tokens

from langmoe.cli import main
from langmoe.models.moe import moe_blocks
from langmoe.models.moe_io import load_moe_pretrained
from langmoe.models.overrides.classifier import RoutingClassifier

torch.set_num_threads(1)


def test_upcycle_dry_run_and_write_then_export(tmp_path, capsys):
    dense = tiny_model("llama")
    dense.save_pretrained(tmp_path / "dense")
    assert main(["upcycle", "--model", str(tmp_path / "dense"), "--layers", "0,2", "--experts", "4",
                 "--top-k", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "active_per_token" in out and "total" in out
    assert not (tmp_path / "moe").exists()
    assert main(["upcycle", "--model", str(tmp_path / "dense"), "--layers", "all", "--experts", "4",
                 "--top-k", "2", "--out", str(tmp_path / "moe")]) == 0
    moe = load_moe_pretrained(tmp_path / "moe")
    assert len(moe_blocks(moe)) == 3
    x = tokens()
    with torch.no_grad():
        assert (moe(x).logits - dense(x).logits).abs().max() <= 1e-5
    assert main(["export", "--model", str(tmp_path / "moe"), "--out", str(tmp_path / "stock")]) == 0
    assert "mixtral" in capsys.readouterr().out


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    tiny_model("llama").save_pretrained(tmp_path / "dense")
    assert main(["upcycle", "--model", str(tmp_path / "dense"), "--layers", "0,9", "--dry-run"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["upcycle", "--model", str(tmp_path / "dense"), "--layers", "x"]) == 2
    assert "--layers" in capsys.readouterr().err
    assert main(["upcycle", "--model", str(tmp_path / "dense"), "--layers", "0"]) == 2
    assert "--out is required" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "dense"), "--out", str(tmp_path / "s")]) == 2
    assert "dense model" in capsys.readouterr().err


def test_upcycle_per_layer_experts_and_frozen(tmp_path):
    tiny_model("qwen2").save_pretrained(tmp_path / "dense")
    assert main(["upcycle", "--model", str(tmp_path / "dense"), "--layers", "0,2", "--experts", "0:2,2:5",
                 "--top-k", "1", "--frozen-expert0", "--classifier-layers", "2", "--out", str(tmp_path / "m")]) == 0
    moe = load_moe_pretrained(tmp_path / "m")
    blocks = {b.layer_idx: b for b in moe_blocks(moe)}
    assert blocks[0].num_experts == 2 and blocks[2].num_experts == 5
    assert isinstance(blocks[2].override, RoutingClassifier) and blocks[0].frozen_expert0
