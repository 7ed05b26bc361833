"""What each X-ELM branch trains (docs/methods.md §1, baselines: a full copy of the base trained on its group's data
only), tensor by tensor: every tensor of the base moved in every branch, the branches differ, and a branch's
input-embedding rows move for its own group's characters only (weight decay 0: rows of characters the branch never
sees get an exactly zero gradient), so a branch trained on the other group's or on every language's data fails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from param_moves import check_embedding_rows, check_moves, folder_weights, token_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
from tiny_world import ALPHABETS, tiny_recipe  # noqa: E402

from langmoe.pipeline.run import run_recipe  # noqa: E402

NO_DECAY = {"lr": 3e-3, "warmup_ratio": 0.0, "weight_decay": 0.0}
EVAL = {"window": 32, "stride": 16, "max_chars_per_lang": 100, "batch_size": 4}
EMBED = "model.embed_tokens.weight"
GROUPS = [["en", "fr"], ["de", "nl"]]  # tiny_world's DMoE groups, which X-ELM shares


def _chars(langs) -> set[str]:
    return set("".join(ALPHABETS[x] for x in langs))


@pytest.fixture(scope="module")
def branches(tmp_path_factory):
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("xelm_trained")
    # the dmoe entry fixes the groups (no probe); X-ELM reads them from it
    recipe = tiny_recipe(tmp, systems=["dmoe", "xelm"], optim=NO_DECAY, eval=EVAL, dmoe={"hard_routing_eval": False})
    assert recipe["systems"][0]["groups"] == GROUPS
    run_recipe(recipe, tmp / "run")
    st = tmp / "run" / "stages" / "xelm"
    return (folder_weights(tmp / "base"), [folder_weights(st / f"branch-{k}" / "model") for k in range(2)],
            AutoTokenizer.from_pretrained(str(tmp / "base")))


@pytest.mark.parametrize("k", [0, 1])
def test_each_branch_trains_every_parameter_on_its_group_only(branches, k):
    base, trained, tok = branches
    seen = check_moves(base, trained[k], lambda n: None if n == EMBED else True, f"xelm branch {k}")
    assert seen["moved"] == len(base) - 1
    own = _chars(GROUPS[k]) - _chars(GROUPS[1 - k])  # letters only this group's languages use
    others = (_chars(GROUPS[1 - k]) | _chars(["es", "it"])) - _chars(GROUPS[k])
    check_embedding_rows(base[EMBED], trained[k][EMBED], token_rows(tok, "".join(sorted(own))),
                         token_rows(tok, "".join(sorted(others))), f"xelm branch {k}")


def test_branches_are_different_models(branches):
    _base, (b0, b1), _tok = branches
    assert all(not torch.equal(b0[n], b1[n]) for n in b0 if n != EMBED)


CROSSED = [["en", "de"], ["fr", "nl"]]  # not the DMoE groups: the control a user runs on groups of their own


def test_given_groups_train_those_branches_without_a_probe(tmp_path):
    """`groups` given: branch k trains on exactly those languages (its own characters move, the others' rows stay),
    and no deviation probe or grouping stage runs."""
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    recipe = tiny_recipe(tmp_path, systems=[{"name": "xelm", "groups": CROSSED}], optim=NO_DECAY, eval=EVAL)
    run_recipe(recipe, tmp_path / "run")
    stages = tmp_path / "run" / "stages"
    assert not (stages / "deviation").exists() and not (stages / "groups").exists()
    base, tok = folder_weights(tmp_path / "base"), AutoTokenizer.from_pretrained(str(tmp_path / "base"))
    for k in range(2):
        trained = folder_weights(stages / "xelm" / f"branch-{k}" / "model")
        own = _chars(CROSSED[k]) - _chars(CROSSED[1 - k])
        others = (_chars(CROSSED[1 - k]) | _chars(["es", "it"])) - _chars(CROSSED[k])
        check_embedding_rows(base[EMBED], trained[EMBED], token_rows(tok, "".join(sorted(own))),
                             token_rows(tok, "".join(sorted(others))), f"xelm branch {k} on {CROSSED[k]}")


def test_given_groups_must_partition_the_languages(tmp_path):
    from langmoe.config import parse_recipe
    from langmoe.errors import LangmoeError

    recipe = tiny_recipe(tmp_path, systems=["xelm"])
    for groups in ([["en", "de"], ["fr"]], [["en", "de"], ["fr", "nl", "en"]], [["en", "de", "fr", "nl"], []]):
        with pytest.raises(LangmoeError, match="systems.xelm: xelm groups must partition"):
            parse_recipe({**recipe, "systems": [{"name": "xelm", "groups": groups}]})
    assert parse_recipe({**recipe, "systems": [{"name": "xelm", "groups": CROSSED}]}).settings("xelm").groups == CROSSED
