"""The cached new-language stage of `langmoe run`: pick, copy, train, and report before/after (METHODS §1 G)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langmoe.io import read_json, write_json


def run_new_language(run, settings, stage2: str, groups: list[list[str]], layers: list[int]) -> dict[str, Any]:
    from langmoe.eval.perplexity import evaluate_languages
    from langmoe.methods.dmoe import build
    from langmoe.methods.dmoe.new_language import expert_perplexities, train_new_language
    from langmoe.pipeline.models import load_moe, moe_params, save_moe
    from langmoe.pipeline.runner import atomic_dir
    from langmoe.pipeline.summary import mean_metrics
    from langmoe.train.routing_context import group_of_map

    r = run.recipe
    nl = settings.new_language
    e = r.eval
    ekw = {"split": e.split, "window": e.window, "stride": e.stride, "max_chars_per_lang": e.max_chars_per_lang,
           "batch_size": e.batch_size}
    k = len(groups)
    cfg = {**run.train_cfg(settings.stage2, offset=400, steps=nl.steps), "lr": nl.lr}
    name = "dmoe/new_language"

    def fn(d: Path) -> dict[str, Any]:
        model = load_moe(run.model_dir(stage2))
        before_new = evaluate_languages(model, run.tokenizer, run.corpus, [nl.lang], **ekw)[nl.lang]
        old_before = read_json(run.run_dir / "eval" / "dmoe.json")["langs"]
        per_expert = expert_perplexities(model, run.tokenizer, run.corpus, nl.lang, k, ekw)
        source = min(range(k), key=lambda i: per_expert[i])
        new_expert = build.add_language_expert(model, source)
        blocks = run.blocks([nl.lang])
        replay_rows = int(round(nl.replay * cfg["micro_batch_size"]))
        res = train_new_language(model, blocks, nl.lang, new_expert, cfg, d / "train", alpha=nl.alpha,
                                 fail_at=run.fail_at.get(name), replay_blocks=run.blocks() if replay_rows else None,
                                 group_of=group_of_map(groups), replay_rows=replay_rows)
        with atomic_dir(d / "model") as tmp:
            save_moe(run.tokenizer)(model, tmp)
        after = evaluate_languages(model, run.tokenizer, run.corpus, [nl.lang, *r.languages], **ekw)
        after = {x: s.model_dump() for x, s in after.items()}
        old_after = {x: after[x] for x in r.languages}
        change = {x: old_after[x]["ppl"] / old_before[x]["ppl"] - 1 for x in r.languages}
        out = {
            "lang": nl.lang,
            "per_expert_ppl": per_expert,
            "source_expert": source,
            "source_group": groups[source],
            "new_expert": new_expert,
            "before": before_new.model_dump(),
            "after": after[nl.lang],
            "old_before": {x: old_before[x] for x in r.languages},
            "old_after": old_after,
            "old_ppl_change": change,
            "old_mean_ppl_change": mean_metrics(old_after)["ppl"] / mean_metrics(old_before)["ppl"] - 1,
            "tokens_seen": int(res.tokens_seen),
            "replay_rows_per_micro_batch": replay_rows,
            "train": cfg,
            "params": moe_params(model),
        }
        write_json(run.run_dir / "new_language.json", out)
        return out

    out = run.runner.run(name, {"nl": nl.model_dump(), "train": cfg, "eval": e.model_dump()}, fn,
                         deps=[stage2, "eval/dmoe"])
    if not (run.run_dir / "new_language.json").is_file():
        write_json(run.run_dir / "new_language.json", out)
    run.summary_extra["new_language"] = out
    return out
