"""All routing metrics of one `RoutingCounts` as one JSON-ready dict (what `langmoe routing` writes)."""

from __future__ import annotations

import math

import numpy as np

from langmoe.errors import LangmoeError
from langmoe.methods.routing import metrics as M
from langmoe.methods.routing.collect import RoutingCounts

__all__ = ["default_alpha", "routing_metrics", "default_heatmap_layers"]


def default_alpha(num_experts: int) -> float:
    """The paper's α = 0.01 at 64 experts, scaled to the same fraction of the uniform share 1/E (0.64/E)."""
    return 0.64 / max(int(num_experts), 1)


def default_heatmap_layers(n_layers: int) -> list[int]:
    """First, middle and last MoE layer (positions in the MoE-layer list)."""
    return sorted({0, n_layers // 2, n_layers - 1})


def routing_metrics(rc: RoutingCounts, alpha: float | None = None, n_shared: int = 2, base: float = M.DEFAULT_BASE,
                    jsd_layers: list[int] | None = None) -> dict:
    """Entropy, JSD, specialisation, shares, specific/shared experts, overlap vs last-layer JSD."""
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
            ov = M.jaccard_matrix(rc.token_ids, rc.langs)
            last = M.jsd_matrix(c, n_layers - 1, base)
            out["lexical_overlap"] = ov.tolist()
            out["overlap_vs_last_layer_jsd"] = M.overlap_correlation(ov, last)
        out["summary"] = summary
    return out
