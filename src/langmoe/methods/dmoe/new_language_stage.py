"""The cached new-language stage of `langmoe run`: pick, copy, train, and report before/after (docs/methods.md §1 G)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langmoe.io import read_json, write_json
from langmoe.methods.dmoe.new_language import NewLanguageJob, add_language
from langmoe.pipeline.models import load_moe, moe_params, save_moe
from langmoe.pipeline.runner import atomic_dir
from langmoe.train.routing_context import group_of_map

LANGUAGES_FILE = "langmoe_languages.json"  # in a DMoE model folder: each language's expert (for add-language)


def write_languages_file(dest: Path, expert_of: dict[str, int]) -> None:
    """Record which expert serves each language next to the model (read by `langmoe add-language`)."""
    groups: dict[int, list[str]] = {}
    for x, e in expert_of.items():
        groups.setdefault(int(e), []).append(x)
    write_json(Path(dest) / LANGUAGES_FILE, {"expert_of": dict(expert_of),
                                             "groups": [groups[e] for e in sorted(groups)]})


def run_new_language(run, settings, stage2: str, groups: list[list[str]], layers: list[int]) -> dict[str, Any]:

    r = run.recipe
    nl = settings.new_language
    e = r.eval
    ekw = {"split": e.split, "window": e.window, "stride": e.stride, "max_chars_per_lang": e.max_chars_per_lang,
           "batch_size": e.batch_size}
    cfg = {**run.train_cfg(settings.stage2, offset=400, steps=nl.steps), "lr": nl.lr}
    name = "dmoe/new_language"

    def fn(d: Path) -> dict[str, Any]:
        model = load_moe(run.model_dir(stage2))
        old_before = read_json(run.run_dir / "eval" / "dmoe.json")["langs"]
        expert_of = group_of_map(groups)
        job = NewLanguageJob(run.tokenizer, run.corpus, nl.lang, expert_of, nl, cfg, ekw, r.data.block_len,
                             r.data.max_train_tokens_per_lang, base_model=run.base(),
                             old_before={x: old_before[x] for x in r.languages}, fail_at=run.fail_at.get(name),
                             log=run.log)
        out = add_language(model, job, d / "train")
        with atomic_dir(d / "model") as tmp:
            save_moe(run.tokenizer)(model, tmp)
            write_languages_file(tmp, {**expert_of, nl.lang: out["new_expert"]})
        out.update({"train": {**cfg, "lr": nl.lr, "steps": nl.steps, "weight_decay": 0.0},  # as trained
                    "params": moe_params(model)})
        write_json(run.run_dir / "new_language.json", out)
        return out

    out = run.runner.run(name, {"nl": nl.model_dump(), "train": cfg, "eval": e.model_dump(), "v": 3}, fn,
                         deps=[stage2, "eval/dmoe"])
    if not (run.run_dir / "new_language.json").is_file():
        write_json(run.run_dir / "new_language.json", out)
    run.summary_extra["new_language"] = out
    return out
