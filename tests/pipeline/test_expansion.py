"""MoE-LPR and LayerMoE as recipe systems: the stages share the recipe's budget, the final folder is a lifelong-
expandable native MoE folder with expansion.json, the frozen expert 0 equals the base's FFN, and the report's
expansion section shows Old/New means and per-layer routing that equal the eval files."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_world import tiny_recipe  # noqa: E402

from langmoe.io import read_json  # noqa: E402
from langmoe.pipeline.run import run_recipe  # noqa: E402

EXPAND = {"new": ["de", "nl"], "old": ["en", "fr"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("expansion")
    systems = ["base", {"name": "moe_lpr", **EXPAND, "num_experts": 3},
               {"name": "layermoe", **EXPAND, "budget": 3, "top_k_cls": 1, "similarity_tokens_per_lang": 64}]
    recipe = tiny_recipe(tmp, systems=systems)
    return recipe, tmp / "run", run_recipe(recipe, tmp / "run")


def test_stages_split_the_budget_and_the_final_folder_is_expandable(run):
    from langmoe.methods.expansion.inputs import CONFIG_KEY
    from langmoe.models.moe_io import load_model_any

    recipe, run_dir, summary = run
    s1 = read_json(run_dir / "stages" / "moe_lpr" / "stage1" / "stage.json")["result"]
    s2 = read_json(run_dir / "stages" / "moe_lpr" / "stage2" / "stage.json")["result"]
    assert (s1["final_step"], s2["final_step"]) == (8, 2)  # budget 10, stage2_share 0.2
    final = run_dir / "stages" / "layermoe" / "stage2" / "model"
    rec = read_json(final / "expansion.json")
    assert rec["method"] == "layermoe" and rec["new_experts_total"] == 3 and rec["expert0_langs"] == ["en", "fr"]
    model, _ = load_model_any(final, dtype=torch.float32)
    lineage = getattr(model.config, CONFIG_KEY)
    assert lineage["known_langs"] == ["en", "fr", "de", "nl"] and lineage["generations"][0]["new"] == ["de", "nl"]


def test_frozen_expert0_is_the_base_ffn(run):
    from langmoe.models.moe import moe_blocks
    from langmoe.models.moe_io import load_model_any

    recipe, run_dir, _ = run
    base, _ = load_model_any(recipe["model"], dtype=torch.float32)
    model, _ = load_model_any(run_dir / "stages" / "moe_lpr" / "stage2" / "model", dtype=torch.float32)
    blocks = moe_blocks(model)
    assert len(blocks) == base.config.num_hidden_layers  # MoE-LPR: every layer
    x = torch.randn(5, base.config.hidden_size)
    with torch.no_grad():
        for block in blocks:
            dense = base.model.layers[block.layer_idx].mlp
            torch.testing.assert_close(block.experts.expert_forward(x, 0), dense(x), rtol=0, atol=1e-6)


def test_report_expansion_section_matches_the_eval_files(run):
    from langmoe.report.html import _fmt, build_report

    recipe, run_dir, _ = run
    page = build_report(run_dir).read_text()
    assert "Expansion to new languages" in page and "Old mean ppl" in page
    section = page[page.index("Old mean ppl"):]
    rows = re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)
    cells = [re.sub(r"<[^>]+>", " ", r).split() for r in rows]
    evals = {n: read_json(run_dir / "eval" / f"{n}.json") for n in ("base", "moe_lpr", "layermoe")}
    for name, e in evals.items():  # Old and New means computed here from the eval files, as the report prints them
        old = sum(e["langs"][x]["ppl"] for x in EXPAND["old"]) / 2
        new = sum(e["langs"][x]["ppl"] for x in EXPAND["new"]) / 2
        assert any(_fmt(old) in c and _fmt(new) in c for c in cells), (name, _fmt(old), _fmt(new))
    routing = evals["layermoe"]["expansion"]["routing"]
    assert routing and all(0 <= v["old_to_expert0"] <= 1 for v in routing.values())
    acc = [v["classifier_accuracy"] for v in routing.values() if v["classifier_accuracy"] is not None]
    assert len(acc) == 1  # one classifier layer (top_k_cls=1)


def test_a_stage2_setting_reruns_stage2_only(run, tmp_path):
    """Sweeping a stage-2 setting (here the LPR weight) keeps stage 1 cached; a stage-1 setting re-runs both."""
    import copy
    import shutil

    recipe, run_dir, _ = run
    work = tmp_path / "run"
    shutil.copytree(run_dir, work)

    def rerun(**settings) -> list[str]:
        r = copy.deepcopy(recipe)
        r["systems"] = [{**r["systems"][1], **settings}]  # moe_lpr only
        lines: list[str] = []
        run_recipe(r, work, log=lines.append)
        return [x for x in lines if x.startswith("stage moe_lpr/")]

    lines = rerun(lpr_weight=0.5)
    assert any("moe_lpr/stage1: cached" in x for x in lines), lines
    assert any("moe_lpr/stage2: running" in x for x in lines), lines
    lines = rerun(lpr_weight=0.5, lb_weight=0.05)
    assert not any("moe_lpr/stage1: cached" in x for x in lines), lines
