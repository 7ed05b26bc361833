"""The contract every registered method keeps, checked on the tiny world for each of them (a new method is covered
by registering it): equal token budget recorded, exact resume after a kill mid-stage, eval JSON shape, and a
config round trip (recipe -> YAML -> recipe)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
from tiny_world import DMOE, tiny_recipe  # noqa: E402

from langmoe import registry  # noqa: E402
from langmoe.config import load_recipe, parse_recipe  # noqa: E402
from langmoe.io import read_json  # noqa: E402
from langmoe.pipeline.run import run_recipe  # noqa: E402
from langmoe.train.faults import InjectedFault  # noqa: E402

METHODS = registry.method_names()
# Settings that keep each method tiny; a method not listed here runs with its defaults.
EXPAND = {"new": ["de", "nl"], "old": ["en", "fr"]}
TINY = {"dmoe": DMOE, "dmoe_random": DMOE, "btx": {"moe_steps": 6}, "moe_lpr": {**EXPAND, "num_experts": 2},
        "layermoe": {**EXPAND, "budget": 3, "similarity_tokens_per_lang": 64}}
EVAL_KEYS = {"system", "langs", "mean", "params", "tokens_seen", "budget_tokens", "eval"}


def entry(name: str):
    return {"name": name, **TINY[name]} if name in TINY else name


def recipe_for(tmp: Path, name: str) -> dict:
    return tiny_recipe(tmp, systems=[entry(name)])


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run per method, shared by the checks below."""
    cache: dict[str, tuple[dict, Path, dict]] = {}

    def get(name: str):
        if name not in cache:
            tmp = tmp_path_factory.mktemp(name)
            recipe = recipe_for(tmp, name)
            cache[name] = (recipe, tmp / "run", run_recipe(recipe, tmp / "run"))
        return cache[name]

    return get


def test_every_system_registers_from_its_own_folder():
    assert {"base", "cpt", "xelm", "btx", "dmoe", "dmoe_random"} <= set(METHODS)
    for m in registry.list_methods():
        folder = m.run.__module__.split(".")[2]
        assert m.run.__module__.startswith("langmoe.methods.") and folder in registry.METHOD_PACKAGES, m.name
        assert m.label and isinstance(m.order, float)


@pytest.mark.parametrize("name", METHODS)
def test_equal_token_budget_is_recorded(reference, name):
    recipe, run_dir, summary = reference(name)
    budget = summary["budget_tokens"]
    assert budget == recipe["budget_steps"] * 4 * 16  # steps x micro-batch x block length, computed here
    assert summary["systems"], name
    for row, values in summary["systems"].items():
        e = read_json(run_dir / "eval" / f"{row}.json")
        if name == "base":
            assert values["tokens_seen"] == 0 and e["budget_tokens"] == 0
        else:
            assert values["tokens_seen"] == budget == e["budget_tokens"], row


@pytest.mark.parametrize("name", METHODS)
def test_eval_json_shape(reference, name):
    recipe, run_dir, summary = reference(name)
    for row, values in summary["systems"].items():
        e = read_json(run_dir / "eval" / f"{row}.json")
        assert set(e) >= EVAL_KEYS and e["system"] == row
        assert list(e["langs"]) == recipe["languages"]
        for lang, s in e["langs"].items():
            assert math.isfinite(s["ppl"]) and s["ppl"] > 1 and s["bits_per_byte"] > 0, (row, lang)
        ppl = [s["ppl"] for s in e["langs"].values()]
        assert e["mean"]["ppl"] == pytest.approx(sum(ppl) / len(ppl), rel=1e-12)
        assert e["mean"]["geo_ppl"] == pytest.approx(math.exp(sum(map(math.log, ppl)) / len(ppl)), rel=1e-12)
        assert e["params"]["total"] >= e["params"]["active"] > 0
        assert values["mean_ppl"] == e["mean"]["ppl"] and values["ppl"] == {k: v["ppl"] for k, v in e["langs"].items()}
        shown = summary["display"][row]
        assert shown["method"] == name and shown["label"] and shown == registry.get_method(name).row_display(row)


@pytest.mark.parametrize("name", [m for m in METHODS if m != "base"])
def test_exact_resume_after_a_kill_mid_stage(reference, tmp_path, name):
    recipe, ref_dir, ref = reference(name)
    stages = [read_json(p) for p in sorted((ref_dir / "stages").rglob("stage.json"))]
    trained = [s for s in stages if isinstance(s["result"], dict) and s["result"].get("final_step", 0) >= 3]
    assert trained, f"{name} ran no training stage of 3+ steps"
    stage = max(trained, key=lambda s: s["result"]["final_step"])["name"]
    with pytest.raises(InjectedFault):
        run_recipe(recipe, tmp_path / "killed", fail_at={stage: 3})
    d = tmp_path / "killed" / "stages" / stage
    assert (d / "train" / "checkpoints" / "step-2").is_dir() and not (d / "stage.json").exists()
    resumed = run_recipe(recipe, tmp_path / "killed")
    assert resumed["systems"] == ref["systems"]  # bit for bit: every ppl, bpb, param count, token count


@pytest.mark.parametrize("name", METHODS)
def test_config_round_trip(reference, tmp_path, name):
    recipe, run_dir, _ = reference(name)
    parsed = parse_recipe(recipe)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(parsed.model_dump(mode="json"), sort_keys=False))
    again = load_recipe(path)
    assert again.model_dump() == parsed.model_dump()
    assert again.settings(name) == parsed.settings(name)
    assert load_recipe(run_dir / "config.yaml").model_dump() == parsed.model_dump()  # what the run folder says


@pytest.mark.parametrize("name", [m for m in METHODS if m != "base"])
def test_every_trained_expert_moved(reference, name):
    """Every MoE model a method's stages saved: in each MoE layer the experts that train (all but a frozen expert
    0) are pairwise different and different from expert 0: an expert left untrained would still be an exact copy
    (of the FFN it was upcycled from, or of its sibling). A dense result differs from the base in every decoder
    layer it fine-tunes (at least one)."""
    from langmoe.models.moe_io import load_model_any
    from langmoe.models.routers import iter_router_layers

    _recipe, run_dir, _ = reference(name)
    folders = sorted(p.parent for p in (run_dir / "stages").rglob("model/config.json"))
    assert folders, f"{name} saved no model"
    base = dict(load_model_any(Path(_recipe["model"]) if _recipe["model"] != "builtin" else "builtin")[0]
                .named_parameters())
    checked = 0
    for folder in folders:
        model = load_model_any(folder)[0]
        layers = iter_router_layers(model)
        checked += len(layers)
        if not layers:
            moved = [n for n, p in model.named_parameters() if n in base and not torch.equal(p, base[n])]
            assert moved, f"{name}: {folder} is the base model unchanged"
            continue
        x = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
        for r in layers:
            with torch.no_grad():  # each expert's function, the frozen expert 0 included
                ys = [r.block.expert_forward(x, e) for e in range(r.num_experts)]
            same = [(i, j) for i in range(len(ys)) for j in range(i + 1, len(ys)) if torch.equal(ys[i], ys[j])]
            assert not same, f"{name}: {folder} layer {r.layer}: experts {same} are identical (one did not train)"
    assert checked or name in ("cpt", "lora", "xelm"), f"{name}: no MoE layer checked"
