"""The new-language stage copies the expert with the LOWEST hard-routed perplexity (docs/methods.md §1 G), checked on a
real run and with perplexities forced so that the lowest is not the first (argmin, not argmax or the first)."""

import pytest
import torch
from tiny_world import tiny_recipe

import langmoe.methods.dmoe.new_language as new_language
from langmoe.io import read_json
from langmoe.methods.dmoe import build
from langmoe.pipeline.run import run_recipe


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_source_expert_is_the_argmin_of_the_per_expert_perplexity(tmp_path, monkeypatch):
    real = new_language.expert_perplexities
    forced = {}

    def fake(model, tokenizer, corpus, lang, num_experts, eval_kwargs):
        ppl = real(model, tokenizer, corpus, lang, num_experts, eval_kwargs)
        forced["real"] = ppl
        # keep the real values but make the lowest one the last expert and the highest the first
        ranked = sorted(ppl, reverse=True)
        return ranked

    copied = []
    real_add = build.add_language_expert

    def spy(model, source, gate_mode=None):
        copied.append(source)
        return real_add(model, source, gate_mode)

    monkeypatch.setattr(new_language, "expert_perplexities", fake)
    monkeypatch.setattr(build, "add_language_expert", spy)
    recipe = tiny_recipe(tmp_path, systems=["dmoe"], budget_steps=4,
                         dmoe={"groups": [["en", "fr"], ["de"], ["nl"]], "num_groups": 3,
                               "stage1": {"steps": 2, "lr": 3e-3, "warmup_ratio": 0.0},
                               "stage2": {"steps": 2, "lr": 3e-3, "warmup_ratio": 0.0}},
                         new_language={"lang": "es", "steps": 1, "lr": 3e-3})
    run_recipe(recipe, tmp_path / "run")
    nl = read_json(tmp_path / "run" / "new_language.json")
    ppl = nl["per_expert_ppl"]
    assert len(ppl) == 3 and len(set(ppl)) == 3, ppl
    assert ppl == sorted(forced["real"], reverse=True)
    assert nl["source_expert"] == 2 == min(range(3), key=ppl.__getitem__)
    assert copied == [2]
    assert nl["source_group"] == ["nl"] and nl["new_expert"] == 3
