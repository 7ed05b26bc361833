"""DMoE analysis stages of a run (docs/methods.md §1 A-C): deviation, groups, MoE layers, each cached.

The computations live in `deviation / grouping / layer_selection`; this module only chains them as stages and
writes `deviation.json`, `groups.json` (with its agreement with reference groupings, so the report never
recomputes it), `layers.json` into the run folder. Settings that fix `groups` and `moe_layers` skip the probes.
The run's language groups are shared with X-ELM and BTX through the registry provider "language_groups".
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from langmoe.errors import LangmoeError
from langmoe.io import write_json
from langmoe.methods.dmoe.config import grouping_settings
from langmoe.methods.dmoe.deviation import measure_deviation
from langmoe.methods.dmoe.grouping import (
    Grouping,
    agreement,
    attribute_grouping,
    group_languages,
    random_grouping,
    with_comparisons,
)


def _ensure_file(run, name: str, obj: Any) -> None:
    if not (run.run_dir / name).is_file():
        write_json(run.run_dir / name, obj)


def ensure_deviation(run) -> tuple[dict[str, Any] | None, list[str]]:
    """Stage `deviation` when the grouping or the layers must be measured; (result or None, deps)."""
    s = grouping_settings(run.recipe)
    if s.groups is not None and s.moe_layers is not None:
        return None, []

    def fn_dev(d: Path) -> dict[str, Any]:
        out = _measure(run, d, s)
        write_json(run.run_dir / "deviation.json", out)
        return out

    dev = run.runner.run("deviation", {"input": run.input_key, "deviation": s.deviation.stage_key()}, fn_dev)
    _ensure_file(run, "deviation.json", dev)
    return dev, ["deviation"]


def ensure_groups(run) -> tuple[list[list[str]], str]:
    """Stage `groups` (B); (groups, stage name) — the "language_groups" provider."""

    r, s = run.recipe, grouping_settings(run.recipe)
    dev, deps = ensure_deviation(run)

    def fn_groups(_d: Path) -> dict[str, Any]:
        if s.groups is not None:
            grouping = Grouping(method="fixed", langs=list(r.languages), groups=[list(g) for g in s.groups])
        else:
            grouping = group_languages(r.languages, dev["similarity"], num_groups=s.num_groups,
                                       tie_break=s.tie_break)
        out = with_comparisons(grouping, seed=r.seed).model_dump(mode="json")
        stab = (dev or {}).get("stability") if s.groups is None else None
        if stab:  # the grouping the second probe seed gives: are the groups larger than the probe's noise?
            other = group_languages(r.languages, stab["similarity"], num_groups=s.num_groups, tie_break=s.tie_break)
            same = sorted(map(sorted, other.groups)) == sorted(map(sorted, grouping.groups))
            out["probe_stability"] = {"similarity_corr": stab["similarity_corr"], "groups_second_seed": other.groups,
                                      "same_groups": same}
            run.log(f"groups: second probe seed gives {'the same' if same else 'other'} groups "
                    f"(similarity corr {stab['similarity_corr']:.3f})")
        write_json(run.run_dir / "groups.json", out)
        return out

    key = {"fixed": s.groups, "k": s.num_groups, "langs": r.languages, "v": 2}
    if s.tie_break != "mean":  # the default keeps the key of runs made before the option existed
        key["tie_break"] = s.tie_break
    g = run.runner.run("groups", key, fn_groups, deps=deps)
    _ensure_file(run, "groups.json", g)
    run.announce("groups", f"language groups ({g.get('method', '?')}): "
                           + " | ".join(" ".join(x) for x in g["groups"]))
    return [list(x) for x in g["groups"]], "groups"


def ensure_layers(run) -> list[int]:
    """Stage `layers` (C): the MoE layers, fixed or chosen by epsilon."""
    s = grouping_settings(run.recipe)
    dev, deps = ensure_deviation(run)

    def fn_layers(_d: Path) -> dict[str, Any]:
        if s.moe_layers is not None:
            out = {"method": "fixed", "selected": sorted(s.moe_layers)}
        else:
            from langmoe.methods.dmoe.layer_selection import select_layers

            out = select_layers(dev["dev_ffn"], epsilon=s.epsilon).model_dump(mode="json")
        write_json(run.run_dir / "layers.json", out)
        return out

    lay = run.runner.run("layers", {"fixed": s.moe_layers, "epsilon": s.epsilon}, fn_layers, deps=deps)
    _ensure_file(run, "layers.json", lay)
    how = f"ε = {lay['epsilon']:g}" if lay.get("epsilon") is not None else lay.get("method", "fixed")
    run.announce("layers", f"MoE layers ({how}): {', '.join(map(str, lay['selected'])) or 'none'}")
    return [int(x) for x in lay["selected"]]


def ensure_analysis(run) -> tuple[list[list[str]], list[int]]:
    """Deviation (A), groups (B) and MoE layers (C)."""
    groups, _ = ensure_groups(run)
    return groups, ensure_layers(run)


def ensure_random_groups(run) -> list[list[str]]:
    """Stage `groups_random`: a random balanced grouping (the ablation), with its agreement with the deviation
    groups and with genus written into `groups_random.json`."""

    r, s = run.recipe, grouping_settings(run.recipe)
    groups, gstage = ensure_groups(run)

    def fn(_d: Path) -> dict[str, Any]:
        rnd = random_grouping(r.languages, s.num_groups, seed=r.seed)
        out = rnd.model_dump(mode="json")
        agr = {"deviation groups": agreement(rnd, groups, r.languages).model_dump()}
        with contextlib.suppress(LangmoeError):  # a language without metadata: no genus row
            agr["genus"] = agreement(Grouping(method="random", langs=list(r.languages), groups=rnd.groups),
                                     attribute_grouping(r.languages, "genus")).model_dump()
        out["agreement"] = agr
        write_json(run.run_dir / "groups_random.json", out)
        return out

    res = run.runner.run("groups_random", {"langs": r.languages, "k": s.num_groups, "seed": r.seed, "v": 2}, fn,
                         deps=[gstage])
    _ensure_file(run, "groups_random.json", res)
    return [list(g) for g in res["groups"]]


def _measure(run, d: Path, s) -> dict[str, Any]:
    """Per-language probes from the dense base on the run's packed training blocks (cached per language in d)."""

    r = run.recipe
    model = run.base()
    n_layers = len(getattr(model.config, "layer_types", None) or range(model.config.num_hidden_layers))
    cfg = s.deviation.probe_config(r.data.micro_batch_size, r.seed, n_layers)
    res = measure_deviation(model, run.blocks(), cfg, out_dir=d, langs=r.languages, log=run.log)
    return res.model_dump(mode="json")
