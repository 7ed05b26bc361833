"""DMoE analysis stages of a run (METHODS §1 A-C): deviation, groups, MoE layers, each cached.

The computations live in `langmoe.methods.dmoe.deviation / grouping / layer_selection`; this module only chains
them as stages and writes `deviation.json`, `groups.json`, `layers.json` into the run folder for the report. A
recipe that fixes `groups` and `moe_layers` skips the deviation probes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langmoe.io import write_json


def ensure_analysis(run) -> tuple[list[list[str]], list[int]]:
    r = run.recipe
    need_dev = r.groups is None or r.moe_layers is None
    deps: list[str] = []
    if need_dev:
        dev_cfg = {"input": run.input_key, "deviation": r.deviation.model_dump()}

        def fn_dev(d: Path) -> dict[str, Any]:
            out = _measure(run, d)
            write_json(run.run_dir / "deviation.json", out)
            return out

        dev = run.runner.run("deviation", dev_cfg, fn_dev)
        if not (run.run_dir / "deviation.json").is_file():
            write_json(run.run_dir / "deviation.json", dev)
        deps = ["deviation"]
    else:
        dev = None

    def fn_groups(_d: Path) -> dict[str, Any]:
        if r.groups is not None:
            out = {"method": "fixed", "groups": [list(g) for g in r.groups]}
        else:
            from langmoe.methods.dmoe.grouping import group_languages, with_comparisons

            grouping = group_languages(r.languages, dev["similarity"], num_groups=r.num_groups)
            out = with_comparisons(grouping, seed=r.seed).model_dump(mode="json")
        write_json(run.run_dir / "groups.json", out)
        return out

    g = run.runner.run("groups", {"fixed": r.groups, "k": r.num_groups, "langs": r.languages}, fn_groups, deps=deps)

    def fn_layers(_d: Path) -> dict[str, Any]:
        if r.moe_layers is not None:
            out = {"method": "fixed", "selected": sorted(r.moe_layers)}
        else:
            from langmoe.methods.dmoe.layer_selection import select_layers

            out = select_layers(dev["dev_ffn"], epsilon=r.epsilon).model_dump(mode="json")
        write_json(run.run_dir / "layers.json", out)
        return out

    lay = run.runner.run("layers", {"fixed": r.moe_layers, "epsilon": r.epsilon}, fn_layers, deps=deps)
    for name, obj in (("groups.json", g), ("layers.json", lay)):
        if not (run.run_dir / name).is_file():
            write_json(run.run_dir / name, obj)
    return [list(x) for x in g["groups"]], [int(x) for x in lay["selected"]]


def _measure(run, d: Path) -> dict[str, Any]:
    """Per-language probes from the dense base on the run's packed training blocks (cached per language in d)."""
    from langmoe.methods.dmoe.deviation import measure_deviation

    r = run.recipe
    cfg = {"steps": r.deviation.steps, "lr": r.deviation.lr, "micro_batch_size": r.data.micro_batch_size,
           "last_n_layers": 3 if r.deviation.vector_layers == "last3" else None, "seed": r.seed}
    model = run.base()
    n_layers = len(getattr(model.config, "layer_types", None) or range(model.config.num_hidden_layers))
    if cfg["last_n_layers"] is not None:
        cfg["last_n_layers"] = min(3, n_layers)
    res = measure_deviation(model, run.blocks(), cfg, out_dir=d, langs=r.languages, log=run.log)
    return res.model_dump(mode="json")
