"""All routing metrics of one `RoutingCounts` as one JSON-ready dict (what `langmoe routing` writes)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from langmoe.data.languages import LANGUAGES
from langmoe.errors import LangmoeError
from langmoe.methods.routing import metrics as M
from langmoe.methods.routing.collect import RoutingCounts
from langmoe.methods.routing.selection import (
    default_candidates,
    default_last_n,
    family_of,
    pool_counts,
    selected_experts_json,
)
from langmoe.methods.routing.stats import bootstrap_layers, mantel, within_groups

__all__ = ["default_alpha", "routing_metrics", "default_heatmap_layers"]


def default_alpha(num_experts: int) -> float:
    """The paper's α = 0.01 at 64 experts, scaled to the same fraction of the uniform share 1/E (0.64/E)."""
    return 0.64 / max(int(num_experts), 1)


def default_heatmap_layers(n_layers: int) -> list[int]:
    """First, middle and last MoE layer (positions in the MoE-layer list)."""
    return sorted({0, n_layers // 2, n_layers - 1})


def routing_metrics(rc: RoutingCounts, alpha: float | None = None, n_shared: int = 2, base: float = M.DEFAULT_BASE,
                    jsd_layers: list[int] | None = None, pairs: Mapping[str, str] | None = None) -> dict:
    """Entropy, JSD, specialisation, shares, specific/shared experts, overlap vs last-layer JSD; with `pairs`
    (child -> parent) the official `selected_experts` for the last 2 MoE layers, as `langmoe adapt` selects."""
    c = rc.array()
    L, n_layers, E = c.shape
    alpha = default_alpha(max(rc.num_experts)) if alpha is None else float(alpha)
    if not 0 < alpha < 1:
        raise LangmoeError(f"alpha must be in (0, 1), got {alpha}")
    if n_shared < 0:
        raise LangmoeError(f"n_shared must be >= 0, got {n_shared}")
    jsd_layers = default_heatmap_layers(n_layers) if jsd_layers is None else list(jsd_layers)
    bad = [j for j in jsd_layers if not 0 <= j < n_layers]
    if bad:
        raise LangmoeError(f"JSD layers {bad} out of range: there are {n_layers} MoE layers (positions 0..{n_layers-1})")
    a = M.shares(c)
    ent = M.entropy(c, base)
    spec = M.specialisation(c)
    out: dict = {
        "langs": rc.langs,
        "layers": rc.layers,
        "num_experts": rc.num_experts,
        "kind": rc.kind,
        "log_base": "e" if base == math.e else base,
        "alpha": alpha,
        "tokens": rc.tokens,
        "entropy": {lang: ent[i].tolist() for i, lang in enumerate(rc.langs)},
        "entropy_max": [math.log(e) / math.log(base) for e in rc.num_experts],
        "specialisation": spec.tolist(),
        "mean_pairwise_jsd": M.mean_pairwise_jsd(c, base).tolist() if L > 1 else [0.0] * n_layers,
        "jsd": {str(rc.layers[j]): M.jsd_matrix(c, j, base).tolist() for j in jsd_layers} if L > 1 else {},
        "shares": {lang: a[i].tolist() for i, lang in enumerate(rc.langs)},
        "shared_experts": {str(rc.layers[j]): M.shared_experts(c, j, n_shared) for j in range(n_layers)},
        "warnings": list(rc.warnings),
    }
    if L > 1:
        out["specific_experts"] = {str(rc.layers[j]): M.specific_experts(c, rc.langs, j, alpha)
                                   for j in range(n_layers)}
        summary = {
            "most_specialised_layer": rc.layers[int(np.argmax(spec))],
            "least_specialised_layer": rc.layers[int(np.argmin(spec))],
            "lowest_mean_jsd_layer": rc.layers[int(np.argmin(out["mean_pairwise_jsd"]))],
        }
        if rc.token_ids:
            out.update(_overlap_statistics(rc, c, base))
        units = rc.unit_arrays()
        if units is not None and all(len(u) >= 2 for u in units):
            out["intervals"] = bootstrap_layers(units, base=base)
        out["summary"] = summary
        out.update(_pool_selection(rc, c, alpha, pairs))
    return out


def script_of(code: str) -> str:
    lang = LANGUAGES.get(code)
    return lang.script if lang is not None else f"?{code}"


def _overlap_statistics(rc: RoutingCounts, c: np.ndarray, base: float) -> dict:
    """Lexical overlap vs last-layer JSD: pair correlations (kept for comparison, pairs are not independent), the
    Mantel permutation test over languages, the within-script correlation, and the reading as a sentence."""
    ov = M.jaccard_matrix(rc.token_ids, rc.langs)
    last = M.jsd_matrix(c, c.shape[1] - 1, base)
    corr = M.overlap_correlation(ov, last)
    corr["mantel"] = mantel(ov, last)
    corr["within_script"] = within_groups(ov, last, [script_of(x) for x in rc.langs])
    corr["sentence"] = overlap_sentence(corr, rc.layers[-1])
    return {"lexical_overlap": ov.tolist(), "overlap_vs_last_layer_jsd": corr}


def overlap_sentence(corr: dict, layer: int) -> str:
    """The correlation as a researcher would state it."""
    m, w = corr.get("mantel") or {}, corr.get("within_script") or {}
    if m.get("r") is None:
        return f"Lexical overlap vs JSD at layer {layer}: not enough varying language pairs for a test."
    kind = "exact" if m.get("exact") else f"{m['permutations']} permutations"
    s = (f"Across {m['languages']} languages ({m['pairs']} pairs), lexical overlap and routing JSD at layer {layer} "
         f"correlate with Pearson r = {m['r']:.2f} (Mantel test over languages, {kind}: p = {m['p']:.3g}).")
    if w.get("r") is not None:
        s += f" Within scripts ({w['pairs']} same-script pairs) r = {w['r']:.2f}."
    else:
        s += " Too few same-script pairs for a within-script correlation."
    return s


def _pool_selection(rc: RoutingCounts, c: np.ndarray, alpha: float, pairs: Mapping[str, str] | None) -> dict:
    """Specific experts over the one-per-family pool (what `adapt` selects from) and, for child -> parent pairs,
    the official selected_experts.json (last 2 MoE layers, SEFT and SSFT k = 1/3/5)."""
    cands = default_candidates(rc.langs)
    fam: dict[str, str] = {}
    for lang in cands:
        fam.setdefault(family_of(lang), lang)
    pool = list(fam.values())
    out: dict = {"reference_pool": pool}
    if len(pool) > 1:
        cp = pool_counts(c, rc.langs, pool)
        out["pool_specific_experts"] = {str(rc.layers[j]): M.specific_experts(cp, pool, j, alpha)
                                        for j in range(len(rc.layers))}
    if pairs:
        n = len(rc.layers)
        positions = list(range(n - default_last_n(n), n))
        out["selected_experts"] = selected_experts_json(c, rc.langs, rc.layers, pairs, positions, alpha)
    return out
