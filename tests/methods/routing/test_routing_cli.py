"""`langmoe routing` and `langmoe adapt` end to end on a tiny stock MoE with the built-in tokenizer and corpus."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers as tf
from routing_fixtures import tiny_moe

from langmoe.cli import main
from langmoe.methods.routing.plots import jsd_colour_max, pair_type
from langmoe.models.base import builtin_base_path, load_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tok = load_tokenizer(builtin_base_path())
    moe = tiny_moe("qwen3_moe", vocab=len(tok))
    moe.save_pretrained(root / "moe")
    tok.save_pretrained(root / "moe")
    other = tiny_moe("qwen3_moe", seed=1, vocab=len(tok))  # the "continued-pretrained" one: other weights
    other.save_pretrained(root / "moe2")
    tok.save_pretrained(root / "moe2")
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
               "--out", str(out), "--log-base", "2", "--min-tokens", "1000", "--adapt-pairs", "gl:es", "--alpha", "0.01"])
    assert rc == 0
    sel = json.loads((out / "selected_experts.json").read_text())
    assert set(sel) == {"_meta", "shared_experts", "gl"} and sel["_meta"]["pools"] == {"gl": ["es", "ru"]}
    assert set(sel["gl"]) == {"seft", "ssft_k1", "ssft_k3", "ssft_k5"} and set(sel["gl"]["seft"]) == {"1", "2"}
    m = json.loads((out / "routing_metrics.json").read_text())
    counts = json.loads((out / "routing_counts.json").read_text())
    assert counts["langs"] == ["es", "pt", "ru"] and m["log_base"] == 2.0
    assert set(m["plots"]) >= {"specialisation.png", "entropy.png", "expert_shares.png", "overlap_vs_jsd.png", "jsd_layer2.png"}
    assert all((out / f).is_file() for f in m["plots"]) and (out / "report.html").is_file()
    page = (out / "report.html").read_text()
    assert "<h2>Tokens per language</h2>" in page and "<td>es</td><td>400</td>" in page
    assert "Language-specific experts" in page and "Shared experts" in page and "Mantel test over languages" in page
    assert jsd_colour_max(m) == max(max(max(r) for r in mat) for mat in m["jsd"].values())
    assert len(m["specialisation"]) == 3 and all(0 <= s <= 1 for s in m["specialisation"])
    assert m["overlap_vs_last_layer_jsd"]["pairs"] == 3
    err = capsys.readouterr().err
    assert "warning: language 'es' has only 400 test tokens (< 1000" in err
    _check_selection_by_hand(counts, sel)
    for j in range(3):  # report.html's shared experts: the top 2 by mean share over the 3 routed languages
        mean = [sum(_shares(counts, i, j)[e] for i in range(3)) / 3 for e in range(8)]
        top2 = sorted(range(8), key=lambda e: (-mean[e], e))[:2]
        assert f"<tr><td>{j}</td><td>{top2[0]}, {top2[1]}</td></tr>" in page


def _check_selection_by_hand(counts, sel):
    """selected_experts.json against the written counts, by hand: the pool for gl via es is es and ru (pt is es's
    sibling); an expert is es-specific when es's share leads ru's by >= alpha (0.01 here); the shared experts are
    the top-k by the mean share over the pool (ties: lower id); ssft_k = seft + the shared ones not in it."""
    alpha = 0.01
    assert sel["_meta"]["alpha"] == alpha and sel["_meta"]["target_layers"] == [1, 2]
    assert any(sel["gl"]["seft"].values())  # the check below has specific experts to find
    for j, layer in ((1, "1"), (2, "2")):
        es, ru = (_shares(counts, counts["langs"].index(x), j) for x in ("es", "ru"))
        assert sel["gl"]["seft"][layer] == [e for e in range(8) if es[e] - ru[e] >= alpha]
        mean = [(es[e] + ru[e]) / 2 for e in range(8)]
        for k in (1, 3, 5):
            shared = sorted(range(8), key=lambda e: (-mean[e], e))[:k]
            assert sel["shared_experts"][f"k{k}"][layer] == shared
            seft = sel["gl"]["seft"][layer]
            assert sel["gl"][f"ssft_k{k}"][layer] == seft + [e for e in shared if e not in seft]


def test_pair_types():
    assert pair_type("es", "pt") == "same family" and pair_type("es", "de") == "same script"
    assert pair_type("es", "ru") == "other" and pair_type("es", "qq") == "other"


def _entropy(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def _jsd(p, q):
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl = lambda x: sum(a * math.log(a / b) for a, b in zip(x, m, strict=True) if a > 0)  # noqa: E731
    return (kl(p) + kl(q)) / 2


def _shares(counts, i, j):
    row = counts["counts"][i][j]
    return [c / sum(row) for c in row]


def test_routing_cli_compare_two_models_by_hand(folders, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["routing", "--model", str(folders / "moe"), "--compare", str(folders / "moe2"), "--compare-lang", "es",
               "--langs", "es", "pt", "ru", "--tokens-per-lang", "300", "--window", "64", "--out", str(out)])
    assert rc == 0
    cmp = json.loads((out / "compare.json").read_text())
    assert (out / "compare.png").is_file() and cmp["focus"] == "es"
    for name, file in (("model", "routing_counts.json"), ("other", "compare_counts.json")):
        counts = json.loads((out / file).read_text())
        assert counts["tokens"] == {"es": 300, "pt": 300, "ru": 300}  # same text, equal budgets
        for j in range(3):
            ent = [_entropy(_shares(counts, i, j)) for i in range(3)]
            assert cmp[name]["entropy_mean"][j] == pytest.approx(sum(ent) / 3)
            assert cmp[name]["entropy_focus"][j] == pytest.approx(ent[0])
            pairs = [_jsd(_shares(counts, a, j), _shares(counts, b, j)) for a, b in ((0, 1), (0, 2), (1, 2))]
            assert cmp[name]["mean_jsd"][j] == pytest.approx(sum(pairs) / 3)
            assert cmp[name]["mean_jsd_without_focus"][j] == pytest.approx(pairs[2])  # pt-ru only
    assert cmp["model"]["mean_jsd"] != cmp["other"]["mean_jsd"]
    assert cmp["difference"]["entropy_mean"] == pytest.approx(
        [b - a for a, b in zip(cmp["model"]["entropy_mean"], cmp["other"]["entropy_mean"], strict=True)])
    iv = cmp["difference_intervals"]  # same text, same units: a paired interval per layer and curve
    assert len(iv["mean_jsd"]) == 3 and all(lo <= hi for lo, hi in iv["mean_jsd_without_focus"])
    printed = capsys.readouterr().out
    assert "H model" in printed and "JSD-es other" in printed and "compare.json" in printed
    assert "95% paired bootstrap interval (200 draws)" in printed


@pytest.mark.parametrize("argv,msg", [
    (["--model", "{dense}", "--langs", "es"], "no MoE router"),
    (["--model", "{moe}", "--langs", "xx"], "not in the corpus"),
    (["--model", "{moe}", "--langs", "es", "--log-base", "1"], "--log-base"),
    (["--model", "{moe}", "--langs", "es", "pt", "--compare", "{moe}", "--compare-lang", "ru"], "not in --langs"),
    (["--model", "{moe}", "--langs", "es", "pt", "--compare-lang", "es"], "needs --compare"),
    (["--model", "{moe}", "--langs", "es", "pt", "--compare", "{dense}"], "no MoE router"),
    (["--model", "{moe}", "--langs", "es", "pt", "--adapt-pairs", "gl"], "CHILD:PARENT"),
    (["--model", "{moe}", "--langs", "es", "pt", "--adapt-pairs", "gl:ru"], "parent 'ru' is not in --langs"),
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
               "--langs", "ru", "es", "pt", "--counts-split", "valid", "--alpha", "0.01", "--tokens-per-lang", "300",
               "--steps", "2",
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
