"""The probe benchmarks' bookkeeping on made-up probes: settings per kind, seed agreement, the memory table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from script_loader import load_script

signal = load_script("benchmarks/probe_signal.py")
memory = load_script("benchmarks/probe_memory.py")


def test_every_kind_sees_the_same_tokens_per_language():
    for budget in signal.BUDGETS:
        for kind in signal.KINDS:
            cfg = signal.probe_config(kind, budget, seed=1)
            assert cfg["steps"] * cfg["grad_accum"] * cfg["micro_batch_size"] * cfg["block_len"] == budget
            assert cfg["seed"] == 1 and not cfg["center"] and not cfg["stability"]
    assert signal.probe_config("adamw (paper)", 65536, 0)["params"] == "all"


def test_the_distant_set_has_four_families_and_scripts_and_blocks_of_three():
    from langmoe.data.languages import get_language

    langs, k = signal.SETS["distant"]
    assert k == 4 and len(langs) == 12 == len(set(langs))
    assert len({get_language(x).family for x in langs}) >= 4 and len({get_language(x).script for x in langs}) >= 4


def test_a_row_reads_the_seeds_agreement(monkeypatch):
    """Three seeds with the same similarity: correlation 1, group ARI 1; the European groups are the genera."""
    monkeypatch.setattr(signal, "SEEDS", [0, 1, 2])
    langs, _k = signal.SETS["european"]
    genus = {"en": 0, "de": 0, "nl": 0, "fr": 1, "es": 1, "it": 1, "ru": 2, "uk": 2, "pl": 2}
    rng = np.random.default_rng(0)
    sim = np.asarray([[1.0 if a == b else (0.6 if genus[a] == genus[b] else 0.1) for b in langs] for a in langs])
    sim = sim + np.triu(rng.normal(0, 0.01, sim.shape), 1) + np.triu(rng.normal(0, 0.01, sim.shape), 1).T
    probes = {f"european/gradient/4096/{s}": {"sim": {c: sim for c in signal.CENTRING},
                                              "dev_ffn": {x: [2.0, 1.0, 1.0, 1.0] for x in langs},
                                              "probe_s": 9.0} for s in (0, 1, 2)}
    row = signal._row(probes, "european", "gradient", 4096, center="raw")
    assert row["sim_corr"] == pytest.approx(1.0) and row["group_ari_seeds"] == 1.0 and row["ari_genus"] == 1.0
    assert row["layer_spread"] == 2.0 and row["probe_s_per_lang"] == 1.0 and row["tokens_per_step"] == 4096
    assert row["ru_uk"] == pytest.approx(sim[6, 7])


def test_memory_compare_of_two_probes():
    langs = ["a", "b", "c", "d"]
    s = np.eye(4) + 0.5 * (1 - np.eye(4))
    s[0, 1] = s[1, 0] = 0.9
    a = {"sim": s, "dev_ffn": {x: [1.0, 2.0] for x in langs}, "groups": [["a", "b"], ["c", "d"]]}
    b = {"sim": s, "dev_ffn": {x: [1.0, 3.0] for x in langs}, "groups": [["a", "c"], ["b", "d"]]}
    out = memory._compare(a, b, langs)
    assert out["sim_corr"] == pytest.approx(1.0)
    assert out["layer_diff"] == pytest.approx(abs(2 / 1.5 - 3 / 2))  # profiles scaled to mean 1: [2/3, 4/3] vs [.5, 1.5]
    assert out["group_ari"] < 0
    assert out["layer_corr"] == pytest.approx(1.0)  # every language's layers rise together
    c = {**b, "dev_ffn": {x: [3.0, 1.0] for x in langs}}
    assert memory._compare(a, c, langs)["layer_corr"] == pytest.approx(-1.0)


def test_a_variant_is_within_the_spread_only_when_as_close_as_the_worst_seed_pair_on_every_measure():
    pairs = [{"sim_corr": 0.9, "layer_corr": 0.99, "layer_diff": 0.02, "group_ari": 0.6},
             {"sim_corr": 0.95, "layer_corr": 0.999, "layer_diff": 0.01, "group_ari": 1.0}]
    close = [{"sim_corr": 0.92, "layer_corr": 0.995, "layer_diff": 0.015, "group_ari": 0.8}]
    assert memory.within_spread(close, pairs)
    for key, bad in (("sim_corr", 0.8), ("layer_corr", 0.9), ("layer_diff", 0.05), ("group_ari", 0.5)):
        assert not memory.within_spread([{**close[0], key: bad}], pairs), key


def test_the_362m_config_is_the_issues_model():
    """hidden 896, 24 layers, GQA 14/2, FFN 4864, tied embeddings and the shipped 4,096-token tokenizer: 361.6M
    parameters (counted on the meta device, without building the weights)."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from langmoe.models.base import resolve_model_path

    cfg = memory.model_config(AutoTokenizer.from_pretrained(str(resolve_model_path("builtin"))))
    assert (cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size) == (2, 4864, 4096)
    with torch.device("meta"):
        n = sum(p.numel() for p in Qwen2ForCausalLM(cfg).parameters())
    assert n == 361_568_128


def test_memory_rows_are_valid_deviation_commands_and_the_default_row_adds_nothing():
    """Every --memory row (but the old code's) parses as `langmoe deviation`; the row called the default passes no
    probe option, so it measures the library's default probe (sgd on the FFN, centred)."""
    from langmoe.cli import build_parser
    from langmoe.methods.dmoe.deviation import DeviationConfig

    parser = build_parser()
    base = ["deviation", "--model", "M", "--out", "O", *memory.PROBE_ARGS, "--grad-accum", "1"]
    for key, (_label, extra) in memory.MEMORY_ROWS.items():
        if extra != ["old"]:
            assert parser.parse_args([*base, *extra]).command == "deviation", key
    assert memory.MEMORY_ROWS["default"][1] == [] and "default" in memory.MEMORY_ROWS["default"][0]
    cfg = DeviationConfig()
    assert (cfg.kind, cfg.params, cfg.center) == ("sgd", "measured", True)


def test_rewriting_the_results_keeps_the_reading_and_each_rows_command(tmp_path):
    out = tmp_path / "probe_memory.md"
    row = {"key": "default", "label": "the default", "args": ["--langs", "en"], "old": False, "rc": 0, "wall_s": 1.0,
           "peak_bytes": 2e9, "ratio": 1.4, "base_copy_bytes": None, "vector_dim": 65536, "sketched": True,
           "command": "python benchmarks/probe_memory.py --memory --rows default"}
    out.with_suffix(".json").write_text(json.dumps(
        {"memory": {"params": 1, "fp32_bytes": 4, "threads": 1, "probe_args": ["--langs", "en"], "rows": [row]}}))
    out.write_text("# old\n\nold table\n\n## Reading\n\n- the target is met\n")
    memory.main(["--work", str(tmp_path / "w"), "--out", str(out)])
    text = out.read_text()
    assert "old table" not in text and text.endswith("## Reading\n\n- the target is met\n")
    assert "- `python benchmarks/probe_memory.py --memory --rows default`" in text and "| 2.00 | 1.40 |" in text


def test_first_group_margin_is_the_gap_to_the_next_best_first_group():
    langs = ["a", "b", "c", "d"]
    s = np.full((4, 4), 0.1)
    np.fill_diagonal(s, 1.0)
    s[0, 1] = s[1, 0] = 0.9  # a-b: distance 0.1, the first pick
    s[2, 3] = s[3, 2] = 0.85  # c-d: distance 0.15, the runner-up
    assert memory.first_group_margin(langs, s, size=2) == pytest.approx(0.05)
    s[2, 3] = s[3, 2] = 0.9
    assert memory.first_group_margin(langs, s, size=2) == pytest.approx(0.0)  # a tie


def test_memory_rows_are_kept_per_grad_accum(tmp_path, monkeypatch):
    """A row rerun with another --grad-accum is added beside the one before; the same value replaces it."""
    monkeypatch.setattr(memory, "make_model", lambda _path: 100)
    peaks = iter([1000, 2000, 3000])
    monkeypatch.setattr(memory, "_time_v", lambda *_a: {"rc": 0, "wall_s": 1.0, "peak_bytes": next(peaks)})
    first = memory.memory(tmp_path, None, 1, ["default"], 1)
    second = memory.memory(tmp_path, None, 1, ["default", "default-no-ckpt"], 16, first)
    assert [(r["key"], memory._grad_accum(r), r["peak_bytes"]) for r in second["rows"]] == [
        ("default", 1, 1000), ("default", 16, 2000), ("default-no-ckpt", 16, 3000)]
    assert second["rows"][2]["args"][-1] == "--no-gradient-checkpointing"
    monkeypatch.setattr(memory, "_time_v", lambda *_a: {"rc": 0, "wall_s": 1.0, "peak_bytes": 5})
    third = memory.memory(tmp_path, None, 1, ["default"], 16, second)
    assert [r["peak_bytes"] for r in third["rows"]] == [1000, 5, 3000]
