"""Two models' routing side by side: the paper's central comparison (a base MoE vs its continued-pretrained
version: routing entropy and mean pairwise JSD per layer, with and without one language such as English)."""

from __future__ import annotations

import math

import numpy as np

from langmoe.errors import LangmoeError
from langmoe.methods.routing import metrics as M
from langmoe.methods.routing.collect import RoutingCounts
from langmoe.methods.routing.plots import _plt, _save
from langmoe.methods.routing.stats import draw_units, percentile_intervals, summed

__all__ = ["compare_routing", "routing_curves", "curves_of", "difference_intervals", "plot_comparison"]


def _mean_jsd_without(c: np.ndarray, drop: int | None, base: float) -> list[float]:
    keep = [i for i in range(c.shape[0]) if i != drop]
    return M.mean_pairwise_jsd(c[keep], base).tolist() if len(keep) > 1 else [0.0] * c.shape[1]


def curves_of(c: np.ndarray, langs: list[str], focus: str | None, base: float = M.DEFAULT_BASE) -> dict:
    """`routing_curves` on a counts array [languages, layers, experts] (no "layers" key)."""
    ent = M.entropy(c, base)
    out = {"entropy_mean": ent.mean(0).tolist(), "mean_jsd": M.mean_pairwise_jsd(c, base).tolist()}
    if focus is not None:
        if focus not in langs:
            raise LangmoeError(f"the language to leave out, {focus!r}, is not among the routed languages "
                               f"({', '.join(langs)})")
        i = langs.index(focus)
        others = [k for k in range(len(langs)) if k != i]
        out["entropy_focus"] = ent[i].tolist()
        out["entropy_others"] = ent[others].mean(0).tolist() if others else [0.0] * c.shape[1]
        out["mean_jsd_without_focus"] = _mean_jsd_without(c, i, base)
    return out


def routing_curves(rc: RoutingCounts, focus: str | None, base: float = M.DEFAULT_BASE) -> dict:
    """Per MoE layer: mean entropy over all languages, the focus language's and the others' mean entropy, mean
    pairwise JSD over all languages and over the languages without the focus one."""
    return {"layers": rc.layers, **curves_of(rc.array(), rc.langs, focus, base)}


def difference_intervals(a: RoutingCounts, b: RoutingCounts, focus: str | None, base: float = M.DEFAULT_BASE,
                         n_boot: int = 200, seed: int = 0, level: float = 0.95) -> dict | None:
    """Paired bootstrap of the per-layer difference (b − a) of every curve: both models routed the same text in
    the same bootstrap units (consecutive blocks), so each draw resamples one set of unit indices per language and
    applies it to both. {"n_boot", "level", "seed", curve: [[lo, hi] per layer]}; None when the files have no
    units, or the two models' units do not line up (not the same text), or a language has fewer than 2."""
    ua, ub = a.unit_arrays(), b.unit_arrays()
    if ua is None or ub is None or any(x.shape != y.shape or len(x) < 2 for x, y in zip(ua, ub, strict=True)):
        return None
    rng = np.random.default_rng(seed)
    draws: dict[str, list] = {}
    for _ in range(n_boot):
        idx = draw_units(ua, rng)  # the same units for both models: a paired draw
        fa, fb = curves_of(summed(ua, idx), a.langs, focus, base), curves_of(summed(ub, idx), b.langs, focus, base)
        for k in fa:
            draws.setdefault(k, []).append(np.asarray(fb[k]) - np.asarray(fa[k]))
    return {"n_boot": n_boot, "level": level, "seed": seed, **percentile_intervals(draws, level)}


def compare_routing(a: RoutingCounts, b: RoutingCounts, focus: str | None = None, base: float = M.DEFAULT_BASE,
                    names: tuple[str, str] = ("model", "other")) -> dict:
    """Both models' curves and, where they have the same MoE layers, the per-layer difference (other − model)
    with its paired bootstrap interval (`difference_intervals`) when the counts carry bootstrap units."""
    if a.langs != b.langs:
        raise LangmoeError(f"the two models were routed on different languages ({a.langs} vs {b.langs})")
    ca, cb = routing_curves(a, focus, base), routing_curves(b, focus, base)
    out = {"names": list(names), "langs": a.langs, "focus": focus, "log_base": "e" if base == math.e else base,
           "tokens": {names[0]: a.tokens, names[1]: b.tokens}, names[0]: ca, names[1]: cb}
    if a.layers == b.layers:
        out["difference"] = {k: (np.asarray(cb[k]) - np.asarray(ca[k])).tolist() for k in ca if k != "layers"}
        iv = difference_intervals(a, b, focus, base)
        if iv is not None:
            out["difference_intervals"] = iv
    else:
        out["note"] = f"different MoE layers ({a.layers} vs {b.layers}): no per-layer difference"
    return out


def plot_comparison(cmp: dict, path) -> str:
    """compare.png: entropy and mean JSD per layer, the two models in two colours, dashed = without the focus."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, colour in zip(cmp["names"], ("tab:blue", "tab:orange"), strict=True):
        cur = cmp[name]
        axes[0].plot(cur["layers"], cur["entropy_mean"], "-o", color=colour, label=f"{name}: all languages")
        axes[1].plot(cur["layers"], cur["mean_jsd"], "-o", color=colour, label=f"{name}: all languages")
        if cmp["focus"]:
            axes[0].plot(cur["layers"], cur["entropy_focus"], ":s", color=colour, label=f"{name}: {cmp['focus']}")
            axes[1].plot(cur["layers"], cur["mean_jsd_without_focus"], "--o", color=colour,
                         label=f"{name}: without {cmp['focus']}")
    axes[0].set(title="routing entropy per layer", xlabel="MoE layer", ylabel=f"entropy (log base {cmp['log_base']})")
    axes[1].set(title="mean pairwise JSD per layer", xlabel="MoE layer", ylabel="JSD")
    for ax in axes:
        ax.legend(fontsize=7)
    return _save(fig, path)
