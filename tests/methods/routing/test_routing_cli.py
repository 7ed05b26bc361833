"""`langmoe routing` and `langmoe adapt` end to end on a tiny stock MoE with the built-in tokenizer and corpus."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from routing_fixtures import tiny_moe

from langmoe.cli import main
from langmoe.models.base import builtin_base_path, load_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tok = load_tokenizer(builtin_base_path())
    moe = tiny_moe("qwen3_moe", vocab=len(tok))
    moe.save_pretrained(root / "moe")
    tok.save_pretrained(root / "moe")
    dense = tf.AutoModelForCausalLM.from_config(tf.Qwen3Config(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=128))
    dense.save_pretrained(root / "dense")
    tok.save_pretrained(root / "dense")
    return root


def test_routing_cli_writes_counts_metrics_plots(folders, tmp_path, capsys):
    out = tmp_path / "r"
    # no --window: the default is min(256, the model's 128 positions)
    rc = main(["routing", "--model", str(folders / "moe"), "--langs", "es,pt", "ru", "--tokens-per-lang", "400",
               "--out", str(out), "--log-base", "2", "--min-tokens", "1000"])
    assert rc == 0
    m = json.loads((out / "routing_metrics.json").read_text())
    counts = json.loads((out / "routing_counts.json").read_text())
    assert counts["langs"] == ["es", "pt", "ru"] and m["log_base"] == 2.0
    assert set(m["plots"]) >= {"specialisation.png", "entropy.png", "expert_shares.png", "overlap_vs_jsd.png", "jsd_layer2.png"}
    assert all((out / f).is_file() for f in m["plots"]) and (out / "report.html").is_file()
    assert len(m["specialisation"]) == 3 and all(0 <= s <= 1 for s in m["specialisation"])
    assert m["overlap_vs_last_layer_jsd"]["pairs"] == 3
    err = capsys.readouterr().err
    assert "warning: language 'es' has only 400 test tokens (< 1000" in err


@pytest.mark.parametrize("argv,msg", [
    (["--model", "{dense}", "--langs", "es"], "no MoE router"),
    (["--model", "{moe}", "--langs", "xx"], "not in the corpus"),
    (["--model", "{moe}", "--langs", "es", "--log-base", "1"], "--log-base"),
])
def test_routing_cli_bad_input_writes_nothing(folders, tmp_path, capsys, argv, msg):
    out = tmp_path / "r"
    argv = [a.format(dense=folders / "dense", moe=folders / "moe") for a in argv]
    assert main(["routing", *argv, "--window", "64", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("extra,msg", [
    (["--model", "{dense}", "--mode", "aeft"], "no MoE router"),
    (["--model", "{moe}", "--mode", "aeft", "--last-n", "4"], "larger than the number of MoE layers (3)"),
    (["--model", "{moe}", "--mode", "seft", "--langs", "ru", "es", "--alpha", "0.9"], "smaller --alpha"),
])
def test_adapt_cli_bad_input_writes_nothing(folders, tmp_path, capsys, extra, msg):
    out = tmp_path / "a"
    extra = [a.format(dense=folders / "dense", moe=folders / "moe") for a in extra]
    rc = main(["adapt", "--child", "uk", "--parent", "ru", "--tokens-per-lang", "300", "--block-len", "32",
               "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and not out.exists()


def test_adapt_cli_seft_run(folders, tmp_path, capsys):
    out = tmp_path / "a"
    rc = main(["adapt", "--model", str(folders / "moe"), "--child", "uk", "--parent", "ru", "--mode", "seft",
               "--langs", "ru", "es", "pt", "--alpha", "0.01", "--tokens-per-lang", "300", "--steps", "2",
               "--batch-size", "2", "--block-len", "32", "--eval-chars", "600", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "adapt.json").read_text())
    assert res["mode"] == "seft" and 0 < res["trainable_share"] < 0.06 and res["train_tokens"] == 2 * 2 * 32
    assert res["layers"] == [1, 2]  # the paper's last 2 MoE layers by default
    assert res["reference_pool"] == ["ru", "es"]  # pt: es already stands for Romance
    counts = json.loads((out / "routing_counts.json").read_text())
    assert counts["langs"] == ["ru", "es"]
    assert all(len(v) > counts["top_k"][0] for v in res["allowed"].values())
    loaded = tf.AutoModelForCausalLM.from_pretrained(out / "model")
    assert loaded.config.model_type == "qwen3_moe"
    assert "trainable share" in capsys.readouterr().out
