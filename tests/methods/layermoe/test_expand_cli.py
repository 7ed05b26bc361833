"""`langmoe expand`: bad input is one stderr line, exit 2, nothing written; a small run writes the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from expansion_world import char_tokenizer, fast_config, make_corpus
from transformers import AutoModelForCausalLM, MixtralConfig, MixtralForCausalLM

from langmoe.cli import main
from langmoe.models.moe_io import load_moe_pretrained, save_moe_pretrained
from langmoe.models.upcycle import upcycle

FAST = ["--stage1-steps", "2", "--stage2-steps", "2", "--block-len", "16", "--micro-batch-size", "4",
        "--max-train-tokens", "1500", "--replay-share", "0.5", "--threads", "1", "--eval-window", "32",
        "--eval-stride", "16", "--eval-max-chars", "300"]


@pytest.fixture
def world(tmp_path) -> dict:
    cfg = fast_config(tmp_path)
    return {"model": cfg["model"], "corpus": cfg["corpus"], "tmp": tmp_path}


def _expand(world, method, new="es,it", old="en,de", extra=(), model=None, corpus=None):
    out = world["tmp"] / "out"
    argv = ["expand", "--method", method, "--model", model or world["model"], "--new", new, "--old", old,
            "--corpus", corpus or world["corpus"], "--out", str(out), *FAST, *extra]
    return main(argv), out


def _one_error(capsys, match: str):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("langmoe expand: error:"), err
    assert match in err[0], err[0]


@pytest.mark.parametrize("method,new,old,extra,match", [
    ("layermoe", "es,en", "en,de", [], "also old languages"),
    ("moe_lpr", "es", "en,en", [], "twice"),
    ("layermoe", "es,xx", "en", [], "not in the corpus"),
    ("layermoe", "es,it", "en,de", ["--budget", "1"], "smaller than one per MoE layer"),
    ("layermoe", "es,it", "en,de", ["--delta", "0.5"], "allocates no new expert"),
    ("layermoe", "es,it", "en,de", ["--top-k-cls", "3"], "larger than the model's 2 layers"),
    ("moe_lpr", "es,it", "en,de", ["--budget", "4"], "does not apply to --method moe_lpr"),
    ("layermoe", "es,it", "en,de", ["--budget", "4", "--budget-fraction", "0.5"], "not both"),
    ("moe_lpr", "es,it", "en,de", ["--protect", "gate", "--stage2-steps", "0", "--replay-share", "0"],
     "--protect gate fits its gates after stage 2"),
    ("moe_lpr", "es,it", "en,de", ["--protect", "gate", "--max-intrusion", "1.5"], "max_intrusion"),
])
def test_bad_input(world, capsys, method, new, old, extra, match):
    rc, out = _expand(world, method, new, old, extra)
    assert rc == 2
    _one_error(capsys, match)
    assert not out.exists()


def test_language_without_data(world, capsys, tmp_path):
    corpus = make_corpus(tmp_path / "thin", empty=("it",))
    rc, out = _expand(world, "layermoe", corpus=str(corpus))
    assert rc == 2
    _one_error(capsys, "have no train text")
    assert not out.exists()


def test_not_dense_and_not_langmoe(world, capsys, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(world["model"])
    upcycle(model, "all", 2, 1)  # an MoE no expansion wrote (no frozen expert 0, no lineage)
    save_moe_pretrained(model, char_tokenizer(), tmp_path / "foreign")
    rc, out = _expand(world, "moe_lpr", model=str(tmp_path / "foreign"))
    assert rc == 2
    _one_error(capsys, "no langmoe expansion wrote")
    assert not out.exists()
    torch.manual_seed(0)
    mix = MixtralForCausalLM(MixtralConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=2))
    mix.save_pretrained(str(tmp_path / "mixtral"))
    char_tokenizer().save_pretrained(str(tmp_path / "mixtral"))
    rc, out = _expand(world, "layermoe", model=str(tmp_path / "mixtral"))
    assert rc == 2
    _one_error(capsys, "stock MoE model")
    assert not out.exists()


def test_cli_layermoe_run(world, capsys):
    rc, out = _expand(world, "layermoe", extra=["--budget", "3", "--top-k-cls", "1", "--no-eval"])
    assert rc == 0, capsys.readouterr().err
    rec = json.loads((Path(out) / "expansion.json").read_text())
    assert rec["new_experts_total"] == 3 and rec["config"]["stage1"]["steps"] == 2
    model = load_moe_pretrained(out)
    assert sum(b - 1 for b in (int(v["num_experts"]) for v in model.config.langmoe["layers"].values())) == 3


def test_cli_protect_gate_run(world, capsys):
    rc, out = _expand(world, "moe_lpr", extra=["--experts", "3", "--protect", "gate", "--max-intrusion", "0.05",
                                               "--no-eval"])
    assert rc == 0, capsys.readouterr().err
    assert "gate: worst old-language intrusion" in capsys.readouterr().out
    rec = json.loads((Path(out) / "expansion.json").read_text())
    assert rec["protect"]["kind"] == "gate" and rec["config"]["max_intrusion"] == 0.05
    assert all(v["route_override"]["kind"] == "expansion_gate"
               for v in load_moe_pretrained(out).config.langmoe["layers"].values())
