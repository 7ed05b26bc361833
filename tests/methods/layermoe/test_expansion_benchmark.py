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
            "--unseen", "nl", "--seeds", "0", "1", "--systems", "full_ft", "moe_lpr", "layermoe", "--experts", "3",
            "--stage1-steps", "2", "--stage2-steps", "2", "--replay-share", "0.5", "--block-len", "16",
            "--micro-batch-size", "4", "--max-train-tokens", "1500", "--eval-window", "32", "--eval-max-chars", "200",
            "--threads", "1", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(argv) == 0
    text = out.read_text()
    for name in ("base", "full_ft", "moe_lpr", "layermoe", "Lifelong", "Unseen script", "Diagnosis"):
        assert name in text
    res = json.loads(out.with_suffix(".json").read_text())
    rows = res["main"]["rows"]
    assert len(rows["moe_lpr"]["old"]) == 2 and len(rows["base"]["old"]) == 2
    assert rows["moe_lpr"]["new_experts"] == [4.0, 4.0]
    # LayerMoE's default budget: 40% of MoE-LPR's uniform count (2 layers x 2 new) -> round(1.6) = 2
    assert rows["layermoe"]["new_experts"] == [2.0, 2.0]
    assert set(rows["full_ft"]["tokens"]) == set(rows["moe_lpr"]["tokens"])  # equal token budgets
    # the diagnosis: hard-routing old tokens to expert 0 scores exactly as the base (bits per byte)
    for d in res["main"]["diagnosis"]["moe_lpr"]:
        assert d["ways"]["expert0"] == pytest.approx(rows["base"]["old"][0], abs=1e-12)
    assert rows["base"]["old"][0] > 0 and "full_ft" not in res["main"]["diagnosis"]
    assert res["unseen"]["new"] == "nl" and len(res["unseen"]["rows"]["moe_lpr"]["new"]) == 2
    life = res["lifelong"]["layermoe"]
    assert len(life["G1 after"]) == 2 and "G2 before" in life
    assert "## Targets (issue 22)" in text and "paper-shape MoE-LPR: Old <= +5% over the base" in text
    # a rerun reads every finished run back instead of training again: same rows, no new folder
    before = sorted(p.name for p in (tmp_path / "work").rglob("*"))
    assert bench.main(argv) == 0
    assert json.loads(out.with_suffix(".json").read_text())["main"]["rows"] == rows
    assert sorted(p.name for p in (tmp_path / "work").rglob("*")) == before


def _rows(**systems):
    cols = ("old", "new", "old_ppl", "new_ppl", "new_experts", "tokens")
    return {k: dict(zip(cols, ([v] for v in vals), strict=True)) for k, vals in systems.items()}


def test_targets_are_read_from_the_means():
    bench = _load()
    rows = _rows(base=(1.0, 3.0, 9, 9, 0.0, 0.0), lora=(1.02, 2.0, 9, 9, 0.0, 1.0),
                 moe_lpr=(1.04, 1.9, 9, 9, 12.0, 1.0), moe_lpr_gate=(1.005, 1.95, 9, 9, 12.0, 1.0),
                 layermoe=(1.06, 1.85, 9, 9, 5.0, 1.0), layermoe_nocls=(1.05, 1.8, 9, 9, 5.0, 1.0))
    life = {"moe_lpr_gate": {"G0 before": [1.0], "G0 after": [1.01], "G1 before": [2.0], "G1 after": [2.1]}}
    got = {t: ok for t, ok, _ in bench.targets({"main": {"rows": rows}, "lifelong": life})}
    assert got["paper-shape MoE-LPR: Old <= +5% over the base"]  # +4%
    assert got["paper-shape MoE-LPR: New better than LoRA's"]
    assert got["moe_lpr_gate: Old <= +1% over the base"] and got["moe_lpr_gate: New within 5% of moe_lpr's"]
    assert got["layermoe: New <= MoE-LPR's with >= 40% fewer new experts"]  # 1.85 <= 1.9, 58% fewer
    assert not got["no classifier worse than LayerMoE on Old"]  # 1.05 < 1.06
    assert got["lifelong moe_lpr_gate: G0 within +2% after G2"]
    assert not got["lifelong moe_lpr_gate: G1 within +2% after G2"]  # +5%
