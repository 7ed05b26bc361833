"""benchmarks/gpu/dmoe_scale.{sh,py}: the recipe logic (fast) and the whole script at a tiny size on CPU (~17 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[3]


def _mod():
    return load_script("benchmarks/gpu/dmoe_scale.py")


def test_full_settings_fit_the_design():
    m = _mod()
    s = m.settings(tiny=False)
    p = s["preset"]
    non_emb = p["num_hidden_layers"] * (4 * p["hidden_size"] ** 2 + 3 * p["hidden_size"] * p["intermediate_size"])
    total = non_emb + 2 * s["vocab"] * p["hidden_size"]
    assert 20e6 <= total <= 50e6 and s["precision"] == "bf16" and s["epochs"] == [1, 2, 4]
    assert len(s["langs"]) == 9 and s["pretrain_langs"] is None  # the whole corpus
    r = m.recipe_for(s, Path("/base"), 500)
    d = r["systems"][1]
    assert d["stage1"]["steps"] == 50 and d["stage2"]["steps"] == 450 and d["schedule"] == "continuous"
    from langmoe.config import parse_recipe

    assert parse_recipe(r).budget_tokens == 500 * 64 * 512


def test_tiny_run_of_the_script(tmp_path):
    env = {**os.environ, "LANGMOE_GPU_TINY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "dmoe_scale.sh"), str(tmp_path)], check=True,
                   env=env, capture_output=True, timeout=900)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["tiny"] and set(res["epochs"]) == {"1", "2"}
    assert res["epochs"]["2"]["tokens"] == 2 * res["epochs"]["1"]["tokens"]
    assert {"base", "dmoe", "cpt"} <= set(res["epochs"]["1"]["systems"])
    assert "| 2 |" in (tmp_path / "results.md").read_text()
