"""Stage helpers every method uses: a cached evaluation stage, and K dense branches trained on language subsets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langmoe.io import write_json
from langmoe.pipeline.context import RecipeRun
from langmoe.pipeline.models import save_dense
from langmoe.train.mixed import split_steps, subset_blocks, train_mixed


def eval_stage(run: RecipeRun, name: str, config: Any, deps: list[str], fn: Callable[[], dict[str, Any]]
               ) -> dict[str, Any]:
    """A cached evaluation; re-writes `eval/<system>.json` from the cache if the file went missing."""
    res = run.runner.run(name, {"eval": run.recipe.eval.model_dump(), "cfg": config}, lambda _d: fn(), deps=deps)
    out = run.run_dir / "eval" / f"{res['system']}.json"
    if not out.is_file():
        write_json(out, res)
    return res


def branch_stages(run: RecipeRun, prefix: str, groups: list[list[str]], total_steps: int, optim,
                  deps: list[str], seed_offset: int = 200) -> list[tuple[str, dict[str, Any]]]:
    """Train one copy of the base per group on that group's languages only, `total_steps` split over the groups
    (`langmoe.train.mixed.split_steps`); stages `<prefix>/branch-<k>`. Returns [(stage name, stage result)]."""

    r = run.recipe
    out = []
    for k, steps in enumerate(split_steps(total_steps, len(groups))):
        name = f"{prefix}/branch-{k}"
        cfg = run.train_cfg(optim, offset=seed_offset + k, steps=steps)

        def train_fn(model, out_dir, fail, langs=groups[k], cfg=cfg):
            return train_mixed(model, subset_blocks(run.blocks(), langs), cfg, out_dir, tau=r.data.tau,
                               fail_at=fail)

        info = run.train_stage(name, {"input": run.input_key, "langs": groups[k], "train": cfg}, deps,
                               run.base, train_fn, save_dense(run.tokenizer))
        out.append((name, info))
    return out
