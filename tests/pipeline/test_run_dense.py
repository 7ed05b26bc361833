"""run_recipe on dense systems (base, CPT): outputs, caching, and an exact resume after an injected crash."""

import pytest
import torch
from tiny_world import tiny_recipe

from langmoe.io import read_json
from langmoe.pipeline.run import run_recipe
from langmoe.train.faults import InjectedFault


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_base_and_cpt_outputs_and_cache(tmp_path):
    recipe = tiny_recipe(tmp_path)
    run_dir = tmp_path / "run"
    summary = run_recipe(recipe, run_dir)
    assert set(summary["systems"]) == {"base", "cpt"}
    cpt = summary["systems"]["cpt"]
    assert cpt["tokens_seen"] == summary["budget_tokens"] == 10 * 4 * 16
    assert cpt["params_total"] == cpt["params_active"] == summary["systems"]["base"]["params_total"]
    assert set(cpt["ppl"]) == {"en", "fr", "de", "nl"}
    assert cpt["mean_ppl"] < summary["systems"]["base"]["mean_ppl"]  # 10 steps at lr 3e-3 learn the alphabets
    assert "equal token budget" in summary["note"]
    for f in ("config.yaml", "summary.json", "eval/base.json", "eval/cpt.json"):
        assert (run_dir / f).is_file(), f
    assert not (run_dir / "stages" / "cpt" / "train" / "checkpoints").exists()
    again = run_recipe(recipe, run_dir)
    assert again == summary
    assert read_json(run_dir / "stages" / "cpt" / "train" / "stage.json")["result"]["final_step"] == 10


def test_killed_training_resumes_to_identical_metrics(tmp_path):
    recipe = tiny_recipe(tmp_path, systems=["cpt"])
    ref = run_recipe(recipe, tmp_path / "ref")
    with pytest.raises(InjectedFault):
        run_recipe(recipe, tmp_path / "killed", fail_at={"cpt/train": 5})
    ckpts = sorted(p.name for p in (tmp_path / "killed" / "stages" / "cpt" / "train" / "train" / "checkpoints").iterdir())
    assert ckpts == ["step-2", "step-4"]  # keep 2: a damaged newest one falls back to the one before
    logs: list[str] = []
    resumed = run_recipe(recipe, tmp_path / "killed", log=logs.append)
    assert "stage cpt/train: resuming from step 4" in logs  # said before the stage trains on
    assert read_json(tmp_path / "killed" / "stages" / "cpt" / "train" / "stage.json")["result"]["resumed_from_step"] == 4
    assert resumed["systems"]["cpt"]["ppl"] == ref["systems"]["cpt"]["ppl"]
    assert resumed["systems"]["cpt"]["tokens_seen"] == ref["systems"]["cpt"]["tokens_seen"]


def test_save_every_zero_means_no_checkpoints_and_a_clean_restart(tmp_path):
    recipe = tiny_recipe(tmp_path, systems=["cpt"], save_every=0)
    ref = run_recipe(recipe, tmp_path / "ref")
    with pytest.raises(InjectedFault):
        run_recipe(recipe, tmp_path / "killed", fail_at={"cpt/train": 5})
    ckpts = tmp_path / "killed" / "stages" / "cpt" / "train" / "train" / "checkpoints"
    assert not ckpts.exists() or not any(ckpts.iterdir())
    resumed = run_recipe(recipe, tmp_path / "killed")  # restarts the stage from step 0: same numbers
    assert resumed["systems"]["cpt"] == ref["systems"]["cpt"]


def test_eval_json_stores_the_researcher_warnings(tmp_path):
    """The pipeline's eval/<system>.json keeps the warnings `langmoe eval --json` stores: the tiny world scores
    300 characters per language, below the bytes needed to measure (hand-checked against the threshold)."""
    from langmoe.diagnostics import MIN_SCORED_BYTES

    recipe = tiny_recipe(tmp_path, systems=["base"])
    run_recipe(recipe, tmp_path / "run")
    res = read_json(tmp_path / "run" / "eval" / "base.json")
    small = sorted(x for x, r in res["langs"].items() if r["bytes"] < MIN_SCORED_BYTES)
    assert small, "the tiny world should score too little text to measure"
    for lang in small:
        assert any(w.startswith(f"language '{lang}': only") and "too little to measure" in w
                   for w in res["warnings"]), res["warnings"]
