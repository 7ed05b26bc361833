"""`langmoe run` and `langmoe demo` argument handling (the pipeline itself is tested in test_run_*.py)."""

import torch
import yaml
from tiny_world import tiny_recipe

from langmoe.cli import main


def test_run_command_writes_summary_and_rejects_bad_recipes(tmp_path, capsys):
    torch.set_num_threads(1)
    recipe = tiny_recipe(tmp_path, systems=["base"])
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--run-dir", str(tmp_path / "run"), "--no-report"]) == 0
    assert (tmp_path / "run" / "summary.json").is_file()
    assert "equal token budget" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**recipe, "systems": ["base", {"name": "dmoe", "num_groups": 9}]}))
    assert main(["run", str(bad), "--run-dir", str(tmp_path / "run2")]) == 2
    assert "num_groups" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({**recipe, "languages": ["en", "xx"]}))
    assert main(["run", str(unknown), "--run-dir", str(tmp_path / "run3")]) == 2
    assert "not in corpus" in capsys.readouterr().err


def test_demo_command_runs_a_recipe_and_builds_the_report(tmp_path, capsys):
    torch.set_num_threads(1)
    recipe = tiny_recipe(tmp_path, systems=["base", "dmoe", "cpt"], new_language={"lang": "es", "steps": 2})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["demo", "--recipe", str(path), "--out", str(tmp_path / "demo"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "HTML report" in out and "demo finished" in out and "new language es" in out
    assert (tmp_path / "demo" / "report.html").is_file()
