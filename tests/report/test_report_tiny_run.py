"""The report of a real (tiny) run: valid HTML5 under a strict parse, every section readable; and the run prints
its groups and MoE layers as soon as the analysis finds them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
from tiny_world import tiny_recipe  # noqa: E402

from langmoe.pipeline.run import run_recipe  # noqa: E402
from langmoe.report.html import build_report  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("tiny")
    recipe = tiny_recipe(tmp, systems=["base", "dmoe"], new_language={"lang": "es", "steps": 2, "lr": 3e-3},
                         dmoe={"groups": None, "moe_layers": None, "hard_routing_eval": False,
                               "deviation": {"steps": 2, "lr": 3e-3}})
    logs: list[str] = []
    run_recipe(recipe, tmp / "run", log=logs.append)
    return tmp / "run", logs


def test_groups_and_layers_are_printed_once(tiny_run):
    run_dir, logs = tiny_run
    groups = [m for m in logs if m.startswith("language groups (exhaustive): ")]
    layers = [m for m in logs if m.startswith("MoE layers (ε = ")]
    assert len(groups) == 1 and len(layers) == 1, logs
    found = groups[0].split(": ", 1)[1].split(" | ")
    assert sorted(x for g in found for x in g.split()) == ["de", "en", "fr", "nl"]
    # printed right after the analysis stages, before any training stage starts
    assert logs.index(groups[0]) < next(i for i, m in enumerate(logs) if "dmoe/stage1: running" in m)


def test_tiny_run_report_is_valid_and_readable(tiny_run):
    html5lib = pytest.importorskip("html5lib", reason="html5lib (dev extra) validates the report")
    run_dir, _ = tiny_run
    doc = build_report(run_dir).read_text()
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    tree = parser.parse(doc)
    assert not parser.errors
    for title in ("Systems", "Per-language scores", "Parameter deviation and MoE layers", "Language groups",
                  "Routing", "New language", "Configuration"):
        assert f">{title}</h2>" in doc, title
    assert 'class="note"' not in doc  # every part of a finished run is present
    body = doc.split(">New language</h2>")[1].split("<h2")[0]
    assert "{" not in body and "&quot;" not in body  # tables, not JSON
    assert all((th.text or "").strip() for th in tree.findall(".//th"))
