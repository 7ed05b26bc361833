from pathlib import Path

import pytest
import yaml

from langmoe.config import builtin_recipe_path, load_recipe, parse_recipe
from langmoe.errors import LangmoeError

ROOT = Path(__file__).parents[2]


def test_defaults_and_budget():
    r = parse_recipe({"languages": ["en", "de", "fr"], "budget_steps": 10, "optim": {"lr": 3e-3},
                      "systems": ["base", {"name": "dmoe", "stage1": {"steps": 3}, "stage2": {"steps": 7,
                                                                                           "lr": 1e-3}}, "cpt"],
                      "data": {"block_len": 16, "micro_batch_size": 2}})
    assert r.budget_steps == 10 and r.budget_tokens == 10 * 2 * 16
    d = r.settings("dmoe")
    assert d.alpha_rc == 1.28 and d.lambda_lb == 0.02 and d.epsilon == 0.6
    assert d.stage1.lr == 3e-3 and d.stage2.lr == 1e-3  # shared optim fills gaps, the entry wins
    assert d.stage1.grad_clip == 0.3 and d.stage1.weight_decay == 0.01  # one set of defaults (the paper's)
    assert r.settings("cpt").optim.lr == 3e-3 and r.settings("xelm") is None
    cfg = r.train_config(d.stage2, seed_offset=1)
    assert cfg["steps"] == 7 and cfg["micro_batch_size"] == 2 and cfg["seed"] == 1 and cfg["lr"] == 1e-3


@pytest.mark.parametrize("bad, msg", [
    pytest.param({"languages": ["en"]}, "languages", id="one-language"),
    pytest.param({"languages": ["en", "de"], "systems": [{"name": "dmoe", "num_groups": 3}]},
                 "systems.dmoe: num_groups 3 exceeds", id="num-groups"),
    pytest.param({"languages": ["en", "de"], "systems": [{"name": "dmoe", "groups": [["en"], ["fr"]]}]},
                 "partition", id="groups-partition"),
    pytest.param({"languages": ["en", "de"], "systems": [{"name": "dmoe", "new_language": {"lang": "en"}}]},
                 "new_language", id="new-language-old"),
    pytest.param({"languages": ["en", "de"], "systems": ["dmoe", "nope"]}, "unknown system 'nope'",
                 id="unknown-system"),
    pytest.param({"languages": ["en", "de"], "typo": 1}, "typo", id="typo"),
    pytest.param({"languages": ["en", "de"], "systems": [{"name": "dmoe", "stage1": {"steps": -3}}]},
                 "systems.dmoe.stage1.steps", id="nested-field"),
    pytest.param({"languages": ["en", "de"], "budget_steps": 50, "systems": ["dmoe"]},
                 "stage1.steps \\+ stage2.steps = 100 but budget_steps is 50", id="budget-mismatch"),
    pytest.param({"languages": ["en", "de"], "systems": [{"name": "cpt", "optim": {"lr": -1}}]},
                 "systems.cpt.optim.lr", id="method-optim"),
    pytest.param({"languages": ["en", "de"], "systems": [{"name": "xelm", "ensemble": "max"}]},
                 "systems.xelm.ensemble", id="xelm-ensemble"),
    pytest.param({"languages": ["en", "de"], "systems": ["cpt", "cpt"]}, "once", id="duplicate"),
    pytest.param({"languages": ["en", "de"], "systems": [{"num_groups": 2}]}, "name", id="entry-without-name"),
    pytest.param({"languages": ["en", "de"], "systems": [{"name": "dmoe", "num_groups": 1, "top_k": 1},
                                                        {"name": "dmoe_random", "num_groups": 2, "top_k": 1}]},
                 "must match", id="two-groupings"),
    pytest.param({"languages": ["en", "de"], "epsilon": 0.5, "systems": [{"name": "dmoe"}]},
                 "epsilon is a DMoE setting now: move it into the dmoe entry", id="old-key-new-shape"),
    pytest.param({"languages": ["en", "de"], "eval": {"hard_routing": False}, "systems": [{"name": "dmoe"}]},
                 "eval.hard_routing is a DMoE setting now: .*hard_routing_eval", id="old-eval-key-new-shape"),
    pytest.param({"languages": ["en", "de"], "xelm_ensemble": "uniform", "systems": [{"name": "xelm"}]},
                 "name: xelm, ensemble:", id="old-xelm-key-new-shape"),
    pytest.param({"languages": ["en", "de"], "stage1": {"steps": 2}, "budget_steps": 5, "systems": ["dmoe"]},
                 "cannot be mixed", id="old-and-new-budget"),
    pytest.param({"languages": ["en", "de"], "stage1": 5}, "stage1: give a mapping", id="old-stage-not-a-mapping"),
    pytest.param({"languages": ["en", "de"], "num_groups": 2, "systems": ["xelm"]},
                 "num_groups is a DMoE setting now", id="old-grouping-without-dmoe"),
])
def test_bad_recipes_name_the_field(bad, msg):
    with pytest.raises(LangmoeError, match=msg) as e:
        parse_recipe(bad)
    assert "\n" not in str(e.value)


def test_shipped_recipes_validate():
    demo = load_recipe(builtin_recipe_path("demo"))
    assert demo.system_names == ["base", "dmoe", "cpt"]
    for p in ("recipes/dmoe.yaml", "recipes/demo.yaml", "benchmarks/dmoe_builtin.yaml"):
        load_recipe(ROOT / p)


@pytest.mark.parametrize("path", ["recipes/demo.yaml", "recipes/dmoe.yaml", "benchmarks/dmoe_builtin.yaml"])
def test_old_recipe_shape_resolves_to_the_same_recipe(path):
    """The recipes as they were before the registry (DMoE's knobs at the top level) still load, to exactly the
    recipe of the new shape: same budget, same optimiser settings in every stage, same method settings."""
    old = ROOT / "tests" / "pipeline" / "legacy" / Path(path).name
    assert old.is_file(), old
    assert parse_recipe(yaml.safe_load(old.read_text())).model_dump() == load_recipe(ROOT / path).model_dump()


def test_old_shape_keeps_stage1_defaults_apart_from_stage2():
    r = parse_recipe({"languages": ["en", "de"], "stage1": {"steps": 2}, "stage2": {"steps": 3, "lr": 5e-3},
                      "systems": ["dmoe", "cpt", "btx"], "xelm_ensemble": "uniform", "lambda_lb": 0.5})
    d = r.settings("dmoe")
    assert r.budget_steps == 5 and d.stage1.lr == 1e-4 and d.stage2.lr == 5e-3 and d.lambda_lb == 0.5
    assert r.settings("cpt").optim.lr == 5e-3  # old CPT trained with stage 2's settings
    assert r.settings("btx").moe_steps == 3 and r.settings("btx").lambda_lb == 0.5


def test_round_trip_through_yaml(tmp_path):
    r = load_recipe(ROOT / "recipes" / "dmoe.yaml")
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(r.model_dump(mode="json"), sort_keys=False))
    assert load_recipe(p).model_dump() == r.model_dump()


def test_missing_file(tmp_path):
    with pytest.raises(LangmoeError, match="does not exist"):
        load_recipe(tmp_path / "no.yaml")


def test_demo_recipe_copies_agree():
    shipped = builtin_recipe_path("demo").read_text()
    assert (ROOT / "recipes" / "demo.yaml").read_text() == shipped



def test_one_set_of_optimiser_defaults():
    """Recipe stages, the trainer and `langmoe train` share one optimiser model and its defaults (the paper's
    continued-training values); pretraining from scratch states its own values explicitly."""
    from langmoe.pretrain import FROM_SCRATCH, ContinueTrainConfig, PretrainConfig, TrainSettings
    from langmoe.train.optim import OPTIM_FIELDS, OptimSettings, StageOptim
    from langmoe.train.trainer import TrainConfig

    paper = {"lr": 1e-4, "warmup_ratio": 0.03, "min_lr_ratio": 0.1, "weight_decay": 0.01, "grad_clip": 0.3,
             "mixed_precision": "no"}
    for cfg in (OptimSettings(), StageOptim(steps=1), TrainConfig(steps=1), TrainSettings(),
                ContinueTrainConfig(model="m", out="o").optim, parse_recipe({"languages": ["a", "b"]}).optim):
        assert {k: getattr(cfg, k) for k in OPTIM_FIELDS} == paper, type(cfg).__name__
    scratch = PretrainConfig(out="o").optim
    assert {k: getattr(scratch, k) for k in FROM_SCRATCH} == FROM_SCRATCH
    assert FROM_SCRATCH == {"lr": 2e-3, "warmup_ratio": 0.02, "weight_decay": 0.1, "grad_clip": 1.0}
    assert TrainSettings(save_every=0).save_every == 0  # 0 = no checkpoints
    assert parse_recipe({"languages": ["a", "b"], "save_every": 0}).save_every == 0
