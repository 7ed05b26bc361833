"""benchmarks/dmoe_builtin.py: the scaling-curve logic (fast unit checks) and one tiny end-to-end run (~11 s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_loader import load_script

ROOT = Path(__file__).resolve().parents[3]


def _bench():
    return load_script("benchmarks/dmoe_builtin.py")


def test_shipped_benchmark_meets_the_design():
    """>= 9 languages in >= 3 genera mixing scripts, >= 4x the old 122,880-token budget, >= 20,000 test chars,
    stage 1 ~10%, continuous schedule."""
    from langmoe.config import load_recipe
    from langmoe.data.languages import get_language

    r = load_recipe(ROOT / "benchmarks" / "dmoe_builtin.yaml")
    langs = r.languages
    assert len(langs) >= 9 and len({get_language(x).genus for x in langs}) >= 3
    assert len({get_language(x).script for x in langs}) >= 2
    assert r.budget_tokens >= 4 * 122_880 and r.eval.max_chars_per_lang >= 20_000
    assert r.data.max_train_tokens_per_lang > 100_000
    d = r.settings("dmoe")
    assert d.schedule == "continuous" and d.stage1.steps / r.budget_steps == pytest.approx(0.1, abs=0.01)


def test_scale_recipe_multiplies_budget_and_stages_and_fixes_groups():
    b = _bench()
    data = {"budget_steps": 10, "systems": ["base", {"name": "dmoe", "stage1": {"steps": 1}, "stage2": {"steps": 9}},
                                            "cpt", {"name": "btx", "moe_steps": 8}, "xelm"]}
    out = b.scale_recipe(data, 4, ["dmoe", "cpt", "btx"], {"groups": [["en"], ["de"]], "moe_layers": [0]})
    assert out["budget_steps"] == 40
    assert [e["name"] for e in out["systems"]] == ["dmoe", "cpt", "btx"]
    dm = out["systems"][0]
    assert dm["stage1"]["steps"] == 4 and dm["stage2"]["steps"] == 36 and dm["groups"] == [["en"], ["de"]]
    assert out["systems"][2]["moe_steps"] == 32 and data["budget_steps"] == 10  # input untouched


def test_reading_states_the_result_either_way():
    b = _bench()
    row = {"seeds": 3, "std_ppl": 0.5, "params_total": 100}
    curve = {"1": {"dmoe": {**row, "mean_ppl": 100.0}, "cpt": {**row, "mean_ppl": 90.0}},
             "8": {"dmoe": {**row, "mean_ppl": 80.0}, "cpt": {**row, "mean_ppl": 90.0},
                   "xelm": {**row, "mean_ppl": 85.0, "params_total": 400}}}
    lines = b.reading(curve, "8")
    assert "loses to" in lines[0] and "+11.1%" in lines[0]
    assert "beats" in lines[1] and "-11.1%" in lines[1]
    assert "X-ELM 85.00" in lines[2] and "4.00x" in lines[2]


def test_tiny_benchmark_end_to_end(tmp_path):
    b = _bench()
    assert b.main(["--tiny", "--seeds", "0", "--multipliers", "1", "2", "--out", str(tmp_path), "--threads",
                   "1"]) == 0
    res = json.loads((tmp_path / "benchmark.json").read_text())
    assert set(res["curve"]) == {"1", "2"}
    assert {"base", "dmoe", "cpt"} <= set(res["curve"]["1"]) and "xelm" not in res["curve"]["1"]
    assert {"dmoe", "cpt", "xelm", "btx", "dmoe_random"} <= set(res["curve"]["2"])
    assert res["curve"]["2"]["dmoe"]["tokens_seen"] == 2 * res["curve"]["1"]["dmoe"]["tokens_seen"]
    assert (tmp_path / "scaling.png").stat().st_size > 1000 and (tmp_path / "benchmark.md").is_file()
    g1 = json.loads((tmp_path / "x1" / "seed-0" / "groups.json").read_text())["groups"]
    cfg2 = (tmp_path / "x2" / "seed-0" / "config.yaml").read_text()
    assert all(x in cfg2 for g in g1 for x in g) and not (tmp_path / "x2" / "seed-0" / "deviation.json").exists()
    # aggregating the finished runs again gives the same curve; a run the command needs but never ran is refused
    curve = res["curve"]
    assert b.main(["--tiny", "--seeds", "0", "--multipliers", "1", "2", "--out", str(tmp_path), "--threads", "1",
                   "--from-summaries"]) == 0
    assert json.loads((tmp_path / "benchmark.json").read_text())["curve"] == curve
    with pytest.raises(SystemExit, match="summary.json is missing"):
        b.main(["--tiny", "--seeds", "1", "--multipliers", "1", "--out", str(tmp_path), "--from-summaries"])
    with pytest.raises(SystemExit, match="has no"):  # x1 ran without the baselines
        b.main(["--tiny", "--seeds", "0", "--multipliers", "1", "--full-at", "1", "--out", str(tmp_path),
                "--from-summaries"])


def test_merge_recovers_two_seeds_exactly_and_refuses_three():
    import statistics

    m = load_script("benchmarks/dmoe_builtin_merge.py")
    a, b, c = 31.2, 31.9, 30.8
    old = {"seeds": 2, "mean_ppl": statistics.fmean([a, b]), "std_ppl": statistics.stdev([a, b]),
           "mean_bpb": 2.0, "std_bpb": 0.0, "ppl_per_lang": {"en": 10.0}, "tokens_seen": 5, "params_total": 7}
    new = {"seeds": 1, "mean_ppl": c, "std_ppl": 0.0, "mean_bpb": 2.3, "std_bpb": 0.0, "ppl_per_lang": {"en": 13.0},
           "tokens_seen": 5, "params_total": 7}
    row = m.merge_row(old, new)
    assert row["seeds"] == 3 and row["ppl_per_lang"]["en"] == pytest.approx(11.0)
    assert row["mean_ppl"] == pytest.approx(statistics.fmean([a, b, c]))
    assert row["std_ppl"] == pytest.approx(statistics.stdev([a, b, c]))
    assert row["mean_bpb"] == pytest.approx(2.1)
    with pytest.raises(SystemExit, match="cannot be split"):
        m.seed_values(1.0, 0.1, 3)
    rec = {"curve": {"8": {"dmoe": old}}}
    with pytest.raises(SystemExit, match="differ"):
        m.merge(rec, {"curve": {"8": {"dmoe": {**new, "tokens_seen": 6}}}}, "8")
    merged = m.merge(rec, {"curve": {"8": {"btx": new}}}, "8")
    assert merged["curve"]["8"]["btx"] == new
