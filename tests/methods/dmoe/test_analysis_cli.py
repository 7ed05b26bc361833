"""`langmoe deviation | group | select-layers` end to end on a saved tiny Llama and a JSONL corpus."""

from __future__ import annotations

import json

import torch
from dmoe_fixtures import make_corpus, make_model_dir

from langmoe.cli import main

torch.set_num_threads(1)


def test_deviation_group_select_layers(tmp_path, capsys):
    model = make_model_dir(tmp_path / "model")
    corpus = make_corpus(tmp_path / "corpus")
    out = tmp_path / "dev"
    rc = main(["deviation", "--model", str(model), "--corpus", str(corpus), "--langs", "en,fr", "de",
               "--out", str(out), "--steps", "2", "--lr", "1e-3", "--micro-batch-size", "2", "--block-len", "32",
               "--threads", "1"])
    assert rc == 0
    dev = json.loads((out / "deviation.json").read_text())
    assert dev["langs"] == ["en", "fr", "de"] and len(dev["dev_ffn"]["de"]) == 3
    assert dev["config"]["block_len"] == 32
    assert "cosine similarity" in capsys.readouterr().out

    groups = tmp_path / "groups.json"
    assert main(["group", "--deviation", str(out / "deviation.json"), "--groups", "2", "--out", str(groups)]) == 0
    g = json.loads(groups.read_text())
    assert sorted(len(x) for x in g["groups"]) == [1, 2] and "genus" in g["agreement"]

    layers = tmp_path / "layers.json"
    assert main(["select-layers", "--deviation", str(out / "deviation.json"), "--top-n", "2",
                 "--out", str(layers)]) == 0
    assert len(json.loads(layers.read_text())["selected"]) == 2
    assert main(["select-layers", "--deviation", str(out / "deviation.json"), "--epsilon", "0.6"]) == 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["group", "--deviation", str(tmp_path / "nope.json"), "--groups", "2"]) == 2
    assert "run `langmoe deviation` first" in capsys.readouterr().err
    (tmp_path / "dev.json").write_text(json.dumps({"langs": ["a"]}))
    assert main(["select-layers", "--deviation", str(tmp_path / "dev.json")]) == 2
    assert "is not a deviation result" in capsys.readouterr().err


def test_deviation_probe_options_reach_the_result(tmp_path, capsys):
    model = make_model_dir(tmp_path / "model")
    corpus = make_corpus(tmp_path / "corpus")
    common = ["deviation", "--model", str(model), "--corpus", str(corpus), "--langs", "en", "fr", "de",
              "--steps", "1", "--micro-batch-size", "2", "--block-len", "32", "--threads", "1", "--no-stability"]
    assert main([*common, "--out", str(tmp_path / "default")]) == 0
    dev = json.loads((tmp_path / "default" / "deviation.json").read_text())
    cfg = dev["config"]
    assert (cfg["kind"], cfg["steps"], cfg["grad_accum"], cfg["lr"], cfg["center"]) == ("sgd", 1, 16, 0.3, True)
    assert dev["dev_attn"] is None and dev["base_copy_bytes"] > 0
    assert "sgd probe" in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "grad"), "--kind", "gradient", "--grad-accum", "2"]) == 0
    dev = json.loads((tmp_path / "grad" / "deviation.json").read_text())
    assert dev["config"]["kind"] == "gradient" and dev["config"]["lr"] is None and dev["base_copy_bytes"] is None
    assert main([*common, "--out", str(tmp_path / "sgd"), "--kind", "sgd", "--lr", "0.1", "--params", "all",
                 "--attention", "--no-center", "--mixed-precision", "bf16", "--sketch-dim", "64",
                 "--sketch-method", "gaussian", "--seed", "2"]) == 0
    dev = json.loads((tmp_path / "sgd" / "deviation.json").read_text())
    cfg = dev["config"]
    assert (cfg["kind"], cfg["lr"], cfg["params"], cfg["center"], cfg["mixed_precision"], cfg["seed"]) == \
        ("sgd", 0.1, "all", False, "bf16", 2)
    assert dev["sketched"] and dev["sketch_method"] == "gaussian" and dev["vector_dim"] == 64
    assert len(dev["dev_attn"]["de"]) == 3 and dev["base_copy_bytes"] > 0
    assert main([*common, "--out", str(tmp_path / "exact"), "--exact-vectors"]) == 0
    assert json.loads((tmp_path / "exact" / "deviation.json").read_text())["config"]["sketch_above"] is None
