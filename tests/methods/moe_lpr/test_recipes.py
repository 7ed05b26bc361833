"""The shipped expansion recipes parse in the registry shape, hold the paper's loss weights, and give each system
the recipe's budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from langmoe.config import load_recipe
from langmoe.methods.expansion.config import stage_steps

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", ["moe_lpr", "layermoe"])
def test_recipe_validates(name):
    r = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    assert r.model == "builtin-g0" and r.languages == ["en", "zh", "es", "el", "hu", "tr"]
    s = r.settings(name)
    assert s.new == ["el", "hu", "tr"] and s.old == ["en", "zh", "es"]
    assert s.replay_share == 0.1 and s.stage2.lr == 1e-2 and s.lpr_weight == 0.1 and s.lb_weight == 0.01
    s1, s2 = stage_steps(r.budget_steps, s.stage2_share)
    assert (s1, s2) == (200, 50) and s1 + s2 == r.budget_steps


def test_recipe_entries_cannot_set_what_the_recipe_owns(tmp_path):
    from langmoe.config import parse_recipe
    from langmoe.errors import LangmoeError

    base = {"model": "builtin", "languages": ["en", "el"]}
    for bad, words in (({"model": "x"}, "recipe's top level"), ({"stage1": {"steps": 5}}, "budget_steps"),
                       ({"variant": "full_ft"}, "baselines as systems"), ({"old": ["el"]}, "also old")):
        entry = {"name": "moe_lpr", "new": ["el"], "old": ["en"], **bad}
        with pytest.raises(LangmoeError, match=words):
            parse_recipe({**base, "systems": [entry]})
