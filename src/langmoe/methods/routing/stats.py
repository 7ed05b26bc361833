"""Statistics that hold for routing metrics: the unit of evidence is the language, not the language pair.

- `mantel`: correlation of two symmetric [L, L] matrices (e.g. lexical overlap and JSD) with a p-value from
  permuting the *languages* of one matrix (rows and columns together), so the L(L−1)/2 pairs are not treated as
  independent. Every permutation is enumerated when L! is at most `permutations` (an exact test); otherwise a
  seeded Monte-Carlo sample with p = (1 + #{|r*| >= |r|}) / (1 + n). Two-sided.
- `within_groups`: the same correlation restricted to pairs inside a group (e.g. the same script), pooled over
  groups, to tell a within-group effect from one that only separates groups.
- `bootstrap_layers`: percentile intervals for specialisation and mean pairwise JSD per layer, resampling each
  language's bootstrap units (consecutive blocks of text, `RoutingCounts.unit_counts`) with replacement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import permutations as _all_permutations

import numpy as np

from langmoe.errors import LangmoeError
from langmoe.methods.routing import metrics as M

__all__ = ["mantel", "within_groups", "bootstrap_layers"]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xd, yd = x - x.mean(), y - y.mean()
    den = math.sqrt(float((xd * xd).sum() * (yd * yd).sum()))
    return float((xd * yd).sum() / den) if den > 0 else float("nan")


def mantel(a, b, permutations: int = 9999, seed: int = 0) -> dict:
    """Pearson r of the upper triangles of `a` and `b` and its two-sided permutation p-value over languages."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = a.shape[0]
    if a.shape != (n, n) or b.shape != (n, n):
        raise LangmoeError(f"the Mantel test needs two square matrices of the same size, got {a.shape} and {b.shape}")
    if n < 3:
        return {"r": None, "p": None, "languages": n, "note": "needs at least 3 languages"}
    iu = np.triu_indices(n, 1)
    x = a[iu]
    r = _pearson(x, b[iu])
    if not math.isfinite(r):
        return {"r": None, "p": None, "languages": n, "note": "a matrix is constant over the pairs"}
    exact = math.factorial(n) <= permutations
    if exact:
        perms = (np.asarray(p) for p in _all_permutations(range(n)))
        count = total = 0
        for p in perms:
            total += 1
            count += abs(_pearson(x, b[np.ix_(p, p)][iu])) >= abs(r) - 1e-12
        pval = count / total
    else:
        rng = np.random.default_rng(seed)
        count = sum(abs(_pearson(x, b[np.ix_(p, p)][iu])) >= abs(r) - 1e-12
                    for p in (rng.permutation(n) for _ in range(permutations)))
        total = permutations
        pval = (1 + count) / (1 + permutations)
    return {"r": r, "p": float(pval), "languages": n, "pairs": int(x.size), "permutations": total, "exact": exact}


def within_groups(a, b, groups: Sequence[str], permutations: int = 9999, seed: int = 0) -> dict:
    """Pearson r over the pairs whose two languages share a group (pooled), and a Mantel test inside every group
    of at least 4 languages."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(groups)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if groups[i] == groups[j]]
    out: dict = {"pairs": len(pairs), "r": None, "groups": {}}
    if len(pairs) >= 3:
        r = _pearson(np.array([a[p] for p in pairs]), np.array([b[p] for p in pairs]))
        out["r"] = r if math.isfinite(r) else None
    for g in dict.fromkeys(groups):
        idx = [i for i in range(n) if groups[i] == g]
        if len(idx) >= 4:
            sub = np.ix_(idx, idx)
            out["groups"][g] = mantel(a[sub], b[sub], permutations, seed)
    return out


def draw_units(units: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One bootstrap draw: per language, as many unit indices as it has units, with replacement."""
    return [rng.integers(0, len(u), len(u)) for u in units]


def summed(units: list[np.ndarray], idx: list[np.ndarray]) -> np.ndarray:
    """Counts [languages, layers, experts] of the drawn units (`draw_units`)."""
    return np.stack([u[i].sum(0) for u, i in zip(units, idx, strict=True)])


def percentile_intervals(draws: dict[str, list], level: float) -> dict[str, list[list[float]]]:
    """Per statistic, the [lo, hi] percentile interval at `level` of its per-layer bootstrap draws."""
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    out = {}
    for k, d in draws.items():
        lo, hi = np.percentile(np.stack(d), q, axis=0)
        out[k] = [[float(a), float(b)] for a, b in zip(lo, hi, strict=True)]
    return out


def bootstrap_layers(units: list[np.ndarray], n_boot: int = 200, seed: int = 0, level: float = 0.95,
                     base: float = M.DEFAULT_BASE) -> dict:
    """{"specialisation": [[lo, hi] per layer], "mean_pairwise_jsd": [...], "n_boot", "level"} from resampling
    each language's units ([units, layers, experts]) with replacement."""
    if not units or any(len(u) == 0 for u in units):
        raise LangmoeError("bootstrap intervals need at least one unit of counts per language")
    rng = np.random.default_rng(seed)
    stats: dict[str, Callable] = {"specialisation": M.specialisation,
                                  "mean_pairwise_jsd": lambda c: M.mean_pairwise_jsd(c, base)}
    draws = {k: [] for k in stats}
    for _ in range(n_boot):
        c = summed(units, draw_units(units, rng))
        for k, f in stats.items():
            draws[k].append(f(c))
    return {"n_boot": n_boot, "level": level, "seed": seed, "units": [int(len(u)) for u in units],
            **percentile_intervals(draws, level)}
