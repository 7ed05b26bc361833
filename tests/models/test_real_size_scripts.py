"""benchmarks/real_size.py and benchmarks/gpu/smoke.{sh,py}: their commands are valid CLI calls, their figures are
read and tabulated right, and the GPU smoke script runs end to end at a tiny size on the CPU (its dry run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from script_loader import load_script

from langmoe.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _real_size():
    return load_script("benchmarks/real_size.py")


def _smoke():
    return load_script("benchmarks/gpu/smoke.py")


def test_real_size_rows_are_valid_commands_on_the_issue_layers(tmp_path):
    rs = _real_size()
    assert rs._layers(24) == "0,6,12,18,23"  # the issue's upcycle --layers
    fill = {"model": "M", "work": str(tmp_path), "layers": rs._layers(rs.LAYERS["qwen2-362m"])}
    parser = build_parser()
    for name, (argv, _) in rs.ROWS.items():
        args = parser.parse_args([a.format(**fill) for a in argv])
        assert args.command == argv[0], name
    assert set(rs.ISSUE_ROWS) <= set(rs.ROWS)


def test_real_size_counts_parameters_from_headers_and_tabulates(tmp_path):
    import torch

    from langmoe.models.real_shapes import write_real_shaped_model

    rs = _real_size()
    folder = write_real_shaped_model("qwen2-tiny", tmp_path / "m", dtype=torch.bfloat16)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert rs.count_parameters(folder) == sum(p.numel() for p in model.parameters())  # tied: stored once
    row = {"wall_s": 10.0, "peak_rss_bytes": 1_750_000_000, "bytes_per_param": 4.8, "command": "langmoe x",
           "note": "n", "reported_peak_gb": 1.74}
    md = rs.markdown({"before": {"shape": "qwen2-362m", "parameters": 362e6, "rows": {"upcycle": row}}})
    assert "| `upcycle` | 10.0 s | 1.75 GB | 4.8 | 1.74 GB | n |" in md and "## before" in md
    log = tmp_path / "x.log"
    log.write_text("saved\npeak memory: 1.23 GB resident\n")
    assert rs._reported_peak(log) == 1.23


def test_smoke_settings_fit_the_design():
    m = _smoke()
    full, dry = m.settings(dry_run=False), m.settings(dry_run=True)
    assert full["shape"] == "qwen2-362m" and full["moe_layers"] == [0, 6, 12, 18, 23]
    assert full["precision"] == ["--mixed-precision", "bf16"] and full["dtype"] == "bfloat16"
    assert "bfloat16" in full["moe_block"] and dry["shape"] == "qwen2-tiny"
    from langmoe.config import parse_recipe

    for s in (full, dry):
        r = parse_recipe(m.recipe(s, Path("/base")))
        assert r.budget_steps == sum(s["stage_steps"]) and r.data.block_len == s["block_len"]


@pytest.mark.parametrize("dry", [False, True])
def test_smoke_commands_are_valid_cli_calls(tmp_path, dry):
    m = _smoke()
    parser = build_parser()
    steps = m.commands(m.settings(dry), tmp_path / "base", tmp_path)
    assert [n.split()[0] for n, _, _ in steps] == ["upcycle", "deviation", "run", "expand", "eval", "export"]
    for _, argv, _ in steps:
        args = parser.parse_args(argv)
        if args.command in ("deviation", "run", "expand") and not dry:
            assert args.mixed_precision == "bf16"


def test_mfu_is_six_n_tokens_over_peak():
    m = _smoke()
    assert m._mfu(1000.0, 362_000_000, 989.0) == f"{100 * 6 * 362e6 * 1000 / 989e12:.1f}%"
    assert m._mfu(1000.0, 1, None) == "n/a"


def test_smoke_dry_run_end_to_end(tmp_path):
    """The whole script on a CPU at the tiny shape: seven processes (~60 s of CPU)."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "smoke.sh"), str(tmp_path), "--cpu-dry-run"],
                   check=True, env=env, capture_output=True, timeout=1200)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["dry_run"] and [s["name"] for s in res["steps"]][0] == "upcycle" and len(res["steps"]) == 6
    assert all(s["peak_rss_bytes"] > 100e6 and s["wall_s"] > 0 for s in res["steps"])
    run = next(s for s in res["steps"] if s["name"].startswith("run"))
    assert set(run["throughput"]) == {"dmoe/stage1", "dmoe/stage2"}
    variants = {b["variant"] for b in res["moe_block"]}
    assert {"ours learned (auto)", "hf qwen3_moe (grouped_mm)", "hf qwen3_moe (eager)", "dense"} <= variants
    assert all(b["tokens_per_s"] > 0 for b in res["moe_block"])
    assert (tmp_path / "results.md").read_text().startswith("# GPU smoke: qwen2-tiny")
    assert (tmp_path / "moe_block.md").is_file() and (tmp_path / "work" / "exported" / "config.json").is_file()
