import pytest

from langmoe.config import builtin_recipe_path, load_recipe, parse_recipe
from langmoe.errors import LangmoeError


def test_defaults_and_budget():
    r = parse_recipe({"languages": ["en", "de", "fr"], "stage1": {"steps": 3}, "stage2": {"steps": 7},
                      "data": {"block_len": 16, "micro_batch_size": 2}})
    assert r.budget_steps == 10 and r.budget_tokens == 10 * 2 * 16
    assert r.alpha_rc == 1.28 and r.lambda_lb == 0.02 and r.epsilon == 0.6
    cfg = r.train_config(r.stage2, seed_offset=1)
    assert cfg["steps"] == 7 and cfg["micro_batch_size"] == 2 and cfg["seed"] == 1


@pytest.mark.parametrize("bad, msg", [
    ({"languages": ["en"]}, "languages"),
    ({"languages": ["en", "de"], "num_groups": 3}, "num_groups"),
    ({"languages": ["en", "de"], "groups": [["en"], ["fr"]]}, "partition"),
    ({"languages": ["en", "de"], "new_language": {"lang": "en"}}, "new_language"),
    ({"languages": ["en", "de"], "systems": ["dmoe", "nope"]}, "systems"),
    ({"languages": ["en", "de"], "typo": 1}, "typo"),
])
def test_bad_recipes_name_the_field(bad, msg):
    with pytest.raises(LangmoeError, match=msg):
        parse_recipe(bad)


def test_shipped_recipes_validate():
    demo = load_recipe(builtin_recipe_path("demo"))
    assert "dmoe" in demo.systems and "cpt" in demo.systems
    from pathlib import Path

    load_recipe(Path(__file__).parents[2] / "recipes" / "dmoe.yaml")
    load_recipe(Path(__file__).parents[2] / "recipes" / "demo.yaml")


def test_missing_file(tmp_path):
    with pytest.raises(LangmoeError, match="does not exist"):
        load_recipe(tmp_path / "no.yaml")


def test_demo_recipe_copies_agree():
    from pathlib import Path

    shipped = builtin_recipe_path("demo").read_text()
    assert (Path(__file__).parents[2] / "recipes" / "demo.yaml").read_text() == shipped
