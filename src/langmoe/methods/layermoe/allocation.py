"""Experts per layer from similarity (LayerMoE, docs/methods.md §3): `N^i = ceil((1/S^i) / Σ_j (1/S^j) · δ)`, N^i
counting the frozen FFN, so a layer gets N^i - 1 new experts. With a budget of new experts, δ is solved exactly:
the allocation is a step function of δ that changes only at the break points `k / w_i` (w_i = the layer's share),
so the smallest δ whose total reaches the budget is found by scanning the intervals between break points."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from langmoe.errors import LangmoeError


def layer_shares(S: Sequence[float]) -> np.ndarray:
    s = np.asarray(S, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise LangmoeError("similarity must be a non-empty list, one value per layer")
    if not np.all(s > 0):
        bad = [i for i, v in enumerate(s) if not v > 0]
        raise LangmoeError(f"layer similarity must be positive to invert it; layers {bad} are not "
                           "(measure on more tokens or exclude those layers)")
    inv = 1.0 / s
    return inv / inv.sum()


def allocate(S: Sequence[float], delta: float) -> list[int]:
    """`N^i = ceil(w_i · δ)` (experts incl. the frozen FFN; layers with N^i <= 1 get no new expert)."""
    w = layer_shares(S)
    return [int(math.ceil(x)) for x in w * float(delta)]


def new_experts_at(S: Sequence[float], delta: float) -> list[int]:
    """New experts per layer in budget mode: `max(1, N^i - 1)` (every layer gets at least one)."""
    return [max(1, n - 1) for n in allocate(S, delta)]


def solve_delta(S: Sequence[float], budget: int) -> tuple[float, list[int]]:
    """The smallest δ whose allocation has at least `budget` new experts (exactly `budget` when some δ gives it),
    and that allocation (new experts per layer, each >= 1)."""
    w = layer_shares(S)
    L = len(w)
    if budget < L:
        raise LangmoeError(f"budget of {budget} new experts is smaller than one per MoE layer ({L} layers): "
                           f"give at least {L}")
    kmax = budget + 2 * L + 2
    cuts = np.unique(np.concatenate([np.arange(1, kmax + 1) / wi for wi in w]))
    lo = 0.0
    for hi in cuts:
        mid = (lo + hi) / 2 if lo > 0 else hi / 2  # counts are constant on (lo, hi]
        alloc = new_experts_at(S, mid)
        if sum(alloc) >= budget:
            return float(mid), alloc
        lo = hi
    raise AssertionError("unreachable: the largest break point allocates more than the budget")


def random_allocation(n_layers: int, budget: int, seed: int = 0) -> list[int]:
    """The ablation: `budget` new experts spread at random over the layers, at least one each."""
    if budget < n_layers:
        raise LangmoeError(f"budget of {budget} new experts is smaller than one per MoE layer ({n_layers} layers)")
    rng = np.random.default_rng(seed)
    alloc = np.ones(n_layers, dtype=np.int64)
    extra = rng.integers(0, n_layers, size=budget - n_layers)
    np.add.at(alloc, extra, 1)
    return [int(x) for x in alloc]


def top_k_layers(S: Sequence[float], k: int, layers: Sequence[int] | None = None) -> list[int]:
    """The k layers with the highest similarity (ties: lower layer first)."""
    layers = list(range(len(S))) if layers is None else list(layers)
    if k > len(layers):
        raise LangmoeError(f"K={k} classifier layers is more than the {len(layers)} MoE layers: lower --top-k-cls")
    order = sorted(layers, key=lambda i: (-S[i], i))
    return sorted(order[:k])
