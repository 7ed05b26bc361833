"""The recipe sweep script (benchmarks/expansion_recipe_sweep.py) on the tiny world: one line per setting, a
setting already done is skipped, settings sharing `_work` train stage 1 once."""

from __future__ import annotations

import json

from expansion_world import fast_config
from script_loader import load_script


def test_sweep_lines_and_resume(tmp_path, monkeypatch):
    sweep = load_script("benchmarks/expansion_recipe_sweep.py")
    cfg = fast_config(tmp_path)
    monkeypatch.setattr(sweep, "BASE", {k: v for k, v in cfg.items() if k not in ("stage1", "stage2")})
    grid = {"a": {"stage1": {"steps": 2}, "stage2": {"steps": 2, "lr": 1e-2}, "_work": "w"},
            "b": {"stage1": {"steps": 2}, "stage2": {"steps": 2, "lr": 1e-3}, "_work": "w"}}
    out = tmp_path / "sweep"
    assert sweep.main(["--out", str(out), "--grid", json.dumps(grid)]) == 0
    lines = [json.loads(x) for x in (out / "sweep.jsonl").read_text().splitlines()]
    assert [x["name"] for x in lines] == ["a", "b"]
    assert lines[0]["ways"]["expert0"] == lines[0]["old_base"]  # hard-routed to expert 0 = the base, exactly
    assert len(lines[0]["e0_top1"]) == 2 and lines[0]["new"] != lines[1]["new"]
    assert len(list((out / "work" / "w").rglob("stage1/**/model.safetensors"))) <= 1  # stage 1 trained once
    assert sweep.main(["--out", str(out), "--grid", json.dumps(grid)]) == 0  # both done: nothing runs again
    assert len((out / "sweep.jsonl").read_text().splitlines()) == 2
