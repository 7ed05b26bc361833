"""DMoE's recipe settings for the probe: defaults, the stage key of runs that pin the old probe, one-line errors."""

from __future__ import annotations

import pytest

from langmoe.config import parse_recipe
from langmoe.errors import LangmoeError
from langmoe.methods.dmoe.config import DeviationSettings
from langmoe.methods.dmoe.deviation import DeviationConfig

PAPER = {"kind": "adamw", "params": "all", "attention": True, "center": False, "steps": 4, "grad_accum": 4,
         "lr": 3e-4}


def test_a_pinned_paper_probe_keeps_the_old_stage_key():
    """benchmarks/dmoe_builtin.yaml pins the probe it recorded: its stage key is the dump the settings had before
    they grew kinds (steps, lr, vector_layers, grad_accum, stability), so its runs are not re-probed."""
    key = DeviationSettings(**PAPER).stage_key()
    assert key == {"steps": 4, "lr": 3e-4, "vector_layers": "last3", "grad_accum": 4, "stability": True}
    assert DeviationSettings().stage_key()["kind"] == DeviationSettings().kind
    assert DeviationSettings(**{**PAPER, "center": True}).stage_key()["center"] is True


def test_probe_config_carries_every_setting():
    cfg = DeviationConfig.parse(DeviationSettings(**PAPER).probe_config(micro_batch_size=8, seed=3, num_layers=2))
    assert (cfg.kind, cfg.params, cfg.include_attention, cfg.center, cfg.lr) == ("adamw", "all", True, False, 3e-4)
    assert cfg.seed == 3 and cfg.micro_batch_size == 8 and cfg.last_n_layers == 2
    assert DeviationConfig.parse(DeviationSettings(vector_layers="all").probe_config(8, 0, 4)).last_n_layers is None
    assert DeviationConfig.parse(DeviationSettings(kind="sgd").probe_config(8, 0, 4)).lr == 0.3


@pytest.mark.parametrize(("bad", "field"), [({"kind": "lion"}, "kind"), ({"lr": 0}, "lr"),
                                            ({"params": "ffn"}, "params"), ({"centre": True}, "centre")])
def test_bad_probe_settings_are_one_line_recipe_errors(bad, field):
    with pytest.raises(LangmoeError, match=field) as e:
        parse_recipe({"languages": ["en", "de"], "systems": [{"name": "dmoe", "num_groups": 2, "deviation": bad,
                                                              "stage1": {"steps": 10}, "stage2": {"steps": 90}}],
                      "budget_steps": 100})
    assert "\n" not in str(e.value) and "deviation" in str(e.value)


def test_the_european_benchmark_pins_its_recorded_probe():
    """benchmarks/dmoe_builtin.yaml keeps the probe its recorded curve used: the old stage key, the paper's probe."""
    from pathlib import Path

    from langmoe.config import load_recipe
    from langmoe.methods.dmoe.config import grouping_settings

    recipe = load_recipe(Path(__file__).parents[3] / "benchmarks" / "dmoe_builtin.yaml")
    s = grouping_settings(recipe).deviation
    assert s.stage_key() == {"steps": 4, "lr": 3e-4, "vector_layers": "last3", "grad_accum": 4, "stability": True}
    assert (s.kind, s.params, s.attention, s.center) == ("adamw", "all", True, False)
