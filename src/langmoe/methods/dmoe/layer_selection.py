"""DMoE step C: which decoder layers become MoE layers (docs/methods.md §1 C).

`d_l = mean_x dev[x][l]` (mean over languages of the FFN deviation), min-max normalised over layers; layer l is
selected iff `d̂_l ≥ ε` (paper: ε = 0.6), or the `top_n` layers with the largest `d̂_l`. When every layer
deviates equally there is nothing to rank: all `d̂_l` are 1 and every layer is selected (a note says so).
Min-max normalisation puts the top layer at exactly 1, so only ε > 1 can select nothing (an error).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

from langmoe.errors import LangmoeError


class LayerSelection(BaseModel):
    """Serialises to `layers.json`. `selected` are 0-based decoder layer indices, ascending."""

    mean_deviation: list[float] = Field(description="d_l: mean over languages of the FFN deviation of layer l")
    normalised: list[float] = Field(description="d̂_l: min-max normalised d_l")
    selected: list[int]
    epsilon: float | None = None
    top_n: int | None = None
    langs: list[str] = Field(default_factory=list)
    note: str | None = None


def select_layers(dev_ffn: Mapping[str, Sequence[float]], epsilon: float | None = 0.6,
                  top_n: int | None = None) -> LayerSelection:
    """Select MoE layers from per-language, per-layer FFN deviations (`dev_ffn[lang][layer]`).

    Give `epsilon` (threshold on the normalised deviation) or `top_n` (the n most deviating layers; it wins
    when both are given).
    """
    if not dev_ffn:
        raise LangmoeError("layer selection needs the deviation of at least one language")
    langs = list(dev_ffn)
    lens = {len(v) for v in dev_ffn.values()}
    if len(lens) != 1:
        raise LangmoeError(f"languages have deviations for different numbers of layers: {sorted(lens)}")
    n_layers = lens.pop()
    if n_layers == 0:
        raise LangmoeError("deviation has no layers")
    dev = np.asarray([list(map(float, dev_ffn[x])) for x in langs], dtype=np.float64)
    if not np.isfinite(dev).all():
        raise LangmoeError("deviation has NaN or infinite values: re-run the deviation probe (lower the lr?)")
    mean = dev.mean(axis=0)
    lo, hi = float(mean.min()), float(mean.max())
    note = None
    if hi - lo <= 1e-12 * max(abs(hi), 1.0):
        norm = np.ones_like(mean)
        note = "all layers deviate equally: every normalised deviation is 1, so every layer qualifies"
    else:
        norm = (mean - lo) / (hi - lo)
    if top_n is not None:
        if not 1 <= top_n <= n_layers:
            raise LangmoeError(f"top_n must be between 1 and the {n_layers} layers, got {top_n}")
        order = sorted(range(n_layers), key=lambda i: (-norm[i], i))  # ties: earlier layer first
        selected = sorted(order[:top_n])
        epsilon = None
    else:
        if epsilon is None:
            raise LangmoeError("give epsilon or top_n")
        if not float(epsilon) >= 0.0:
            raise LangmoeError(f"epsilon must be >= 0, got {epsilon}")
        selected = [i for i in range(n_layers) if norm[i] >= float(epsilon) - 1e-12]
        if not selected:
            raise LangmoeError(f"ε={epsilon} selects no layer; the highest normalised deviation is "
                               f"{float(norm.max()):.2f} — lower ε")
    return LayerSelection(mean_deviation=mean.tolist(), normalised=norm.tolist(), selected=selected,
                          epsilon=None if epsilon is None else float(epsilon), top_n=top_n, langs=langs, note=note)
