"""The draft recipes hold exactly the method configs' fields (so they cannot drift from the code)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from langmoe.methods.layermoe import LayerMoEConfig
from langmoe.methods.moe_lpr import MoELPRConfig

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name,cls", [("moe_lpr", MoELPRConfig), ("layermoe", LayerMoEConfig)])
def test_recipe_validates(name, cls):
    raw = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    assert raw.pop("name") == name
    cfg = cls.model_validate(raw)
    assert cfg.new == ["el", "hu", "tr"] and cfg.old == ["en", "zh", "es"]
    assert cfg.replay_share == 0.1 and cfg.stage2.lr == 1e-2 and cfg.lpr_weight == 0.1 and cfg.lb_weight == 0.01
