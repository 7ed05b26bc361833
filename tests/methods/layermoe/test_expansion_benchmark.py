"""The expansion benchmark script's logic at a tiny size (2 seeds, a few steps, the synthetic world)."""

from __future__ import annotations

import json

import pytest
from expansion_world import fast_config
from script_loader import load_script


def _load():
    return load_script("benchmarks/expansion_builtin.py")


@pytest.mark.slow
def test_benchmark_tables(tmp_path):
    cfg = fast_config(tmp_path)
    bench = _load()
    out = tmp_path / "res.md"
    argv = ["--model", cfg["model"], "--corpus", cfg["corpus"], "--new", "es,it", "--old", "en,de", "--g2", "fr,nl",
            "--seeds", "0", "1", "--systems", "full_ft", "moe_lpr", "layermoe", "--experts", "3",
            "--stage1-steps", "2", "--stage2-steps", "2", "--replay-share", "0.5", "--block-len", "16",
            "--micro-batch-size", "4", "--max-train-tokens", "1500", "--eval-window", "32", "--eval-max-chars", "200",
            "--threads", "1", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(argv) == 0
    text = out.read_text()
    for name in ("base", "full_ft", "moe_lpr", "layermoe", "Lifelong"):
        assert name in text
    res = json.loads(out.with_suffix(".json").read_text())
    assert len(res["rows"]["moe_lpr"]["old"]) == 2 and len(res["rows"]["base"]["old"]) == 2
    assert res["rows"]["moe_lpr"]["new_experts"] == [4.0, 4.0]
    # LayerMoE's default budget: 40% of MoE-LPR's uniform count (2 layers x 2 new) -> round(1.6) = 2
    assert res["rows"]["layermoe"]["new_experts"] == [2.0, 2.0]
    assert len(res["rows"]["moe_lpr"]["tokens"]) == 2
    assert set(res["rows"]["full_ft"]["tokens"]) == set(res["rows"]["moe_lpr"]["tokens"])  # equal token budgets
    life = res["lifelong"]["layermoe"]
    assert len(life["G1 after"]) == 2 and "G2 before" in life
    assert "## Targets (issue 10)" in text and "moe_lpr: Old within +1% of the base" in text
    # a rerun reads every finished run back instead of training again: same rows, no new folder
    before = sorted(p.name for p in (tmp_path / "work").rglob("*"))
    assert bench.main(argv) == 0
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == res["rows"]
    assert sorted(p.name for p in (tmp_path / "work").rglob("*")) == before


def test_targets_are_read_from_the_means():
    bench = _load()
    rows = {"base": {"old": [100.0], "new": [300.0], "new_experts": [0.0], "tokens": [0.0]},
            "full_ft": {"old": [110.0], "new": [150.0], "new_experts": [0.0], "tokens": [1.0]},
            "moe_lpr": {"old": [100.5], "new": [160.0], "new_experts": [12.0], "tokens": [1.0]},
            "layermoe": {"old": [101.5], "new": [158.0], "new_experts": [5.0], "tokens": [1.0]}}
    got = {t: ok for t, ok, _ in bench.targets({"rows": rows, "lifelong": None})}
    assert got["moe_lpr: Old within +1% of the base"] and not got["layermoe: Old within +1% of the base"]
    assert got["full fine-tuning: Old rises"] and got["moe_lpr: New far below the base"]
    assert got["layermoe: New <= MoE-LPR's with >= 40% fewer new experts"]  # 158 <= 160, 58% fewer
    assert not got["layermoe: Old no worse than MoE-LPR's"]
