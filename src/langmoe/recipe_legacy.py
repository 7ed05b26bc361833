"""Recipes of the old shape (DMoE's knobs at the top level) translated into the registry shape, numbers unchanged.

Old: `num_groups`, `groups`, `epsilon`, `moe_layers`, `top_k`, `alpha_rc`, `lambda_lb`, `deviation`, `stage1`,
`stage2`, `new_language`, `xelm_ensemble` and `eval.hard_routing` at the top level; `systems` a list of names; the
budget = stage1.steps + stage2.steps; CPT, X-ELM and BTX trained with stage 2's optimiser settings.
New: `budget_steps` and the shared `optim` (= old stage 2's settings) at the top level; DMoE's knobs inside the
`dmoe` / `dmoe_random` entries; `ensemble` inside `xelm`; `moe_steps`, `top_k`, `lambda_lb` inside `btx`.
"""

from __future__ import annotations

from typing import Any

from langmoe.errors import LangmoeError
from langmoe.train.optim import OptimSettings

ANALYSIS = ("num_groups", "groups", "epsilon", "moe_layers", "deviation")
DMOE = (*ANALYSIS, "top_k", "alpha_rc", "lambda_lb", "stage1", "stage2", "new_language")
LEGACY = (*DMOE, "xelm_ensemble")


def translate(data: dict[str, Any]) -> dict[str, Any]:
    """The new-shape dict of an old-shape recipe (a new-shape dict comes back unchanged)."""
    legacy = {k: data[k] for k in LEGACY if k in data}
    ev = data.get("eval")
    hard = ev.get("hard_routing") if isinstance(ev, dict) else None
    if not legacy and hard is None:
        return data
    out = {k: v for k, v in data.items() if k not in LEGACY}
    if isinstance(ev, dict) and "hard_routing" in ev:
        out["eval"] = {k: v for k, v in ev.items() if k != "hard_routing"}
    systems = data.get("systems", ["base", "dmoe", "cpt"])
    key = next(iter(legacy), "eval.hard_routing")
    if not isinstance(systems, list) or not all(isinstance(s, str) for s in systems):
        if key == "xelm_ensemble":
            raise LangmoeError("recipe: xelm_ensemble is an X-ELM setting now: write it in the xelm entry, e.g. "
                               "systems: [..., {name: xelm, ensemble: posterior}]")
        new = "hard_routing_eval" if key == "eval.hard_routing" else key
        raise LangmoeError(f"recipe: {key} is a DMoE setting now: move it into the dmoe entry, e.g. "
                           f"systems: [base, {{name: dmoe, {new}: ...}}, cpt]")
    if "budget_steps" in data or "optim" in data:
        raise LangmoeError(f"recipe: {key} (old shape) cannot be mixed with budget_steps/optim (new shape): move "
                           f"{key} into the dmoe entry of systems")
    s1, s2 = _stage(legacy.get("stage1"), 20), _stage(legacy.get("stage2"), 80)
    for name, st in (("stage1", s1), ("stage2", s2)):
        if not isinstance(st, dict):
            raise LangmoeError(f"recipe: {name}: give a mapping of optimiser settings, e.g. {name}: {{steps: 20}}")
    if isinstance(s1.get("steps"), int) and isinstance(s2.get("steps"), int):
        out["budget_steps"] = s1["steps"] + s2["steps"]
    out["optim"] = {k: v for k, v in s2.items() if k != "steps"}
    dmoe = {k: legacy[k] for k in DMOE if k in legacy and k not in ("stage1", "stage2", "new_language")}
    dmoe.update(stage1=s1, stage2=s2)
    if hard is not None:
        dmoe["hard_routing_eval"] = hard
    if any(k in legacy for k in ANALYSIS) and not {"dmoe", "dmoe_random"} & set(systems) \
            and {"xelm", "btx"} & set(systems):
        k = next(k for k in ANALYSIS if k in legacy)
        raise LangmoeError(f"recipe: {k} is a DMoE setting now and X-ELM/BTX use DMoE's groups: list "
                           f"{{name: dmoe, {k}: ...}} in systems")
    entries: list[Any] = []
    for name in systems:
        if name == "dmoe":
            nl = {"new_language": legacy["new_language"]} if legacy.get("new_language") is not None else {}
            entries.append({"name": "dmoe", **dmoe, **nl})
        elif name == "dmoe_random":
            entries.append({"name": "dmoe_random", **dmoe})
        elif name == "xelm" and "xelm_ensemble" in legacy:
            entries.append({"name": "xelm", "ensemble": legacy["xelm_ensemble"]})
        elif name == "btx":
            btx = {k: legacy[k] for k in ("top_k", "lambda_lb") if k in legacy}
            if isinstance(s2.get("steps"), int):
                btx["moe_steps"] = s2["steps"]
            entries.append({"name": "btx", **btx})
        else:
            entries.append(name)
    out["systems"] = entries
    return out


def _stage(raw: Any, steps: int) -> Any:
    """An old stage dict with every optimiser field spelled out (old stages did not share settings)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return raw
    return {**OptimSettings().optim_dict(), "steps": steps, **raw}
