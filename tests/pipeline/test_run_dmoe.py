"""run_recipe with DMoE and every baseline on the tiny world: outputs, budgets, exact resume inside stage 2."""

import pytest
import torch
from tiny_world import tiny_recipe

from langmoe.io import read_json
from langmoe.pipeline.run import run_recipe
from langmoe.train.faults import InjectedFault


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_dmoe_killed_in_stage2_resumes_to_identical_metrics(tmp_path):
    recipe = tiny_recipe(tmp_path, systems=["dmoe"], dmoe={"hard_routing_eval": False},
                         eval={"window": 32, "stride": 16, "max_chars_per_lang": 200, "batch_size": 4})
    ref = run_recipe(recipe, tmp_path / "ref")
    with pytest.raises(InjectedFault):
        run_recipe(recipe, tmp_path / "killed", fail_at={"dmoe/stage2": 3})
    stage2 = tmp_path / "killed" / "stages" / "dmoe" / "stage2"
    assert (stage2 / "train" / "checkpoints" / "step-2").is_dir() and not (stage2 / "stage.json").exists()
    assert (tmp_path / "killed" / "stages" / "dmoe" / "stage1" / "stage.json").is_file()
    resumed = run_recipe(recipe, tmp_path / "killed")
    assert resumed["systems"]["dmoe"]["ppl"] == ref["systems"]["dmoe"]["ppl"]
    assert resumed["systems"]["dmoe"]["routing_accuracy"] == ref["systems"]["dmoe"]["routing_accuracy"]
    assert resumed["systems"]["dmoe"]["tokens_seen"] == ref["systems"]["dmoe"]["tokens_seen"] == 10 * 4 * 16


def test_all_systems_equal_budget_and_outputs(tmp_path):
    recipe = tiny_recipe(tmp_path, systems=["base", "dmoe", "dmoe_random", "cpt", "xelm", "btx"],
                         new_language={"lang": "es", "steps": 3, "lr": 3e-3})
    run_dir = tmp_path / "run"
    s = run_recipe(recipe, run_dir)
    rows = s["systems"]
    assert set(rows) == {"base", "dmoe", "dmoe_hard", "dmoe_random", "dmoe_random_hard", "cpt", "xelm",
                         "xelm_ensemble", "btx"}
    budget = s["budget_tokens"]
    for name in ("dmoe", "dmoe_random", "cpt", "xelm", "xelm_ensemble", "btx"):
        assert rows[name]["tokens_seen"] == budget, name
    dense = rows["base"]["params_total"]
    assert rows["xelm"]["params_total"] == 2 * dense and rows["xelm"]["params_active"] == dense
    assert rows["xelm_ensemble"]["params_active"] == 2 * dense
    assert rows["dmoe"]["params_total"] > dense and rows["dmoe_hard"]["params_active"] < rows["dmoe"]["params_active"]
    routing = read_json(run_dir / "routing.json")
    assert set(routing["accuracy"]) == {"0", "2"}
    nl = read_json(run_dir / "new_language.json")
    assert nl["lang"] == "es" and nl["new_expert"] == 2 and len(nl["per_expert_ppl"]) == 2
    assert nl["after"]["ppl"] < nl["before"]["ppl"]
    assert set(nl["old_ppl_change"]) == {"en", "fr", "de", "nl"}
    assert s["new_language"]["lang"] == "es"
    for f in ("groups.json", "layers.json", "groups_random.json", "eval/btx.json", "eval/xelm_ensemble.json",
              "eval/dmoe_hard.json"):
        assert (run_dir / f).is_file(), f
