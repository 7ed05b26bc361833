"""What the two DMoE stages train, parameter by parameter (docs/methods.md §1 E: both stages train ALL parameters).

One tiny recipe run (stages of unequal length, 4 + 6 steps, weight decay 0 so a tensor moves only by gradient).
Stage 1 against the freshly upcycled model, stage 2 against stage 1: every tensor moved; every expert row moved
(stage 1: each group's expert gets its group's hard-routed tokens, so an expert that no group reaches stays put);
every router row moved; input-embedding rows of characters no recipe language holds stay bit-equal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from param_moves import check_embedding_rows, check_moves, moved_rows, snapshot, token_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
from tiny_world import ALPHABETS, tiny_recipe  # noqa: E402

from langmoe.methods.dmoe import build  # noqa: E402
from langmoe.pipeline.models import load_dense, load_moe  # noqa: E402
from langmoe.pipeline.run import run_recipe  # noqa: E402

NO_DECAY = {"lr": 3e-3, "warmup_ratio": 0.0, "weight_decay": 0.0}
EMBED = "model.embed_tokens.weight"


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("dmoe_trained")
    recipe = tiny_recipe(tmp, systems=["dmoe"], dmoe={"hard_routing_eval": False}, optim=NO_DECAY,
                         eval={"window": 32, "stride": 16, "max_chars_per_lang": 100, "batch_size": 4})
    run_recipe(recipe, tmp / "run")
    st = tmp / "run" / "stages" / "dmoe"
    start = build.build_dmoe(load_dense(tmp / "base"), [0, 2], 2, 2, seed=0)  # what stage 1 starts from
    return {"start": snapshot(start), "stage1": snapshot(load_moe(st / "stage1" / "model")),
            "stage2": snapshot(load_moe(st / "stage2" / "model")), "tok": AutoTokenizer.from_pretrained(str(tmp / "base"))}


def _rule(name: str) -> bool | None:
    return None if name == EMBED else True  # the embedding: row by row below


@pytest.mark.parametrize(("before", "after"), [("start", "stage1"), ("stage1", "stage2")])
def test_each_stage_trains_every_parameter_expert_and_router_row(stages, before, after):
    b, a = stages[before], stages[after]
    seen = check_moves(b, a, _rule, f"dmoe {after}")
    assert seen["moved"] > 20
    experts = [n for n in b if build.is_expert_param(n)]
    routers = [n for n in b if build.is_router_param(n)]
    assert len(routers) == 2 and experts  # MoE layers 0 and 2, two experts each
    for n in experts + routers:
        assert moved_rows(b[n], a[n]) == [0, 1], f"{after}: {n}: rows {moved_rows(b[n], a[n])} moved, not both"
    tok = stages["tok"]
    seen_chars = ALPHABETS["en"] + ALPHABETS["fr"] + ALPHABETS["de"] + ALPHABETS["nl"]
    unseen = sorted(set(ALPHABETS["es"] + ALPHABETS["it"]) - set(seen_chars))
    check_embedding_rows(b[EMBED], a[EMBED], token_rows(tok, "".join(sorted(set(seen_chars)))),
                         token_rows(tok, "".join(unseen)), f"dmoe {after}")


def test_stage1_starts_from_the_upcycled_base(stages):
    """The reference is right: the dense FFN copies and routers the test compares against are stage 1's start
    (the upcycle is seeded), so 'moved' above means trained, not merely built differently."""
    start, s1 = stages["start"], stages["stage1"]
    assert set(start) == set(s1)
    n = next(n for n in start if build.is_router_param(n))
    # a trained router row moves by at most steps x lr per element (AdamW); a differently seeded one by ~0.02
    assert (s1[n] - start[n]).abs().max() < 4 * 3e-3 * 1.01
