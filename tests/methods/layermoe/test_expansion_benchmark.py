"""The expansion benchmark script's logic at a tiny size (2 seeds, a few steps, the synthetic world)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from expansion_world import fast_config

ROOT = Path(__file__).resolve().parents[3]


def _load():
    spec = importlib.util.spec_from_file_location("expansion_builtin", ROOT / "benchmarks" / "expansion_builtin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
