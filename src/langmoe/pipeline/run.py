"""`run_recipe`: every system of a recipe, stage by stage, cached and resumable, into one run folder.

Run folder (what `langmoe.report` reads)::

    config.yaml                resolved recipe
    tokens/                    the run's token store (see langmoe.data.token_store; not when --token-store is given)
    corpus_sources.json        per language, the corpus source(s) of its documents and their characters per split
    eval/<row>.json            per-language scores, mean, params, tokens seen, budget (one file per summary row)
    summary.json               one row per system (mean ppl / bpb, params total/active, tokens seen), the budget,
                               and `display`: each row's label and order from the method registry
    stages/<name>/             work folders (checkpoints, models) and `stage.json` records
    ...                        method files (DMoE: deviation/groups/layers/routing/new_language .json)

Each system is a registered method (`langmoe.registry`); its `run(run, settings)` returns its summary
rows. Every trained system gets the recipe's `budget_steps` optimizer steps with the same micro-batch size and block
length, so the token budgets are equal by construction; the summary records the tokens each system actually saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from langmoe import registry
from langmoe.config import Recipe
from langmoe.data.token_store import using_token_store
from langmoe.io import write_json
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.summary import SUMMARY_NOTE, mean_metrics, summary_row

__all__ = ["RecipeRun", "SUMMARY_NOTE", "mean_metrics", "run_recipe", "summary_row"]


def run_recipe(recipe: Recipe | Mapping[str, Any], run_dir: str | Path, fail_at: Mapping[str, int] | None = None,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every system of `recipe` into `run_dir` and return the summary (also in `summary.json`).

    `fail_at={"<stage name>": k}` raises `InjectedFault` inside that training stage before step k+1 (tests).
    """
    run = RecipeRun(recipe, run_dir, fail_at=fail_at, log=log)
    r = run.recipe
    extra = [x for s in r.systems if hasattr(s.settings, "extra_languages") for x in s.settings.extra_languages()]
    run.setup(extra_languages=extra)
    rows: dict[str, dict[str, Any]] = {}
    display: dict[str, dict[str, Any]] = {}
    with using_token_store(run.store):  # every method packs and evaluates from the run's store
        for entry in r.systems:
            method = registry.get_method(entry.name)
            out = method.run(run, entry.settings)
            rows.update(out)
            display.update({row: method.row_display(row) for row in out})
    summary = {
        "note": SUMMARY_NOTE,
        "budget_steps": r.budget_steps,
        "budget_tokens": r.budget_tokens,
        "languages": r.languages,
        "systems": rows,
        "display": display,
    }
    summary.update(run.summary_extra)
    write_json(run.run_dir / "summary.json", summary)
    return summary
