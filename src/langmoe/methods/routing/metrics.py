"""Routing metrics: pure functions over a counts array `C[languages, layers, experts]` (numpy / scipy).

Conventions follow the paper's code (aditi184/moe-routing-adaptation, analysis/analysis.py):
- entropy: `scipy.stats.entropy` of the routing distribution, natural log by default (`base` parameter);
- JSD: `scipy.spatial.distance.jensenshannon(p, q, base) ** 2`, natural log by default (the paper calls it
  without `base`, i.e. base e; then JSD <= ln 2 ≈ 0.693; with base=2 it is in [0, 1]);
- specialisation: normalised information gain `(H(L) − H(L|E)) / H(L)` of the language × expert count table
  (a ratio, so independent of the log base);
- expert share `a_ℓ(e) = C_ℓ(e) / Σ_e' C_ℓ(e')`; e is specific to ℓ1 when `a_ℓ1(e) − a_ℓ2(e) ≥ α` (ℓ2 the
  runner-up language for e); shared experts = top-k by mean share over the languages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as _entropy
from scipy.stats import pearsonr, spearmanr

from langmoe.errors import LangmoeError

__all__ = [
    "DEFAULT_BASE",
    "check_counts",
    "shares",
    "entropy",
    "jsd_matrix",
    "mean_pairwise_jsd",
    "specialisation",
    "specific_experts",
    "max_gap",
    "shared_experts",
    "jaccard_matrix",
    "overlap_correlation",
]

DEFAULT_BASE = math.e  # the paper's scipy calls use the default natural log


def check_counts(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 3:
        raise LangmoeError(f"counts must be [languages, layers, experts], got shape {list(c.shape)}")
    if (c < 0).any() or not np.isfinite(c).all():
        raise LangmoeError("counts must be finite and non-negative")
    return c


def shares(counts) -> np.ndarray:
    """a[l, layer, e] = C / Σ_e C (rows without any count stay 0)."""
    c = check_counts(counts)
    tot = c.sum(-1, keepdims=True)
    return np.divide(c, tot, out=np.zeros_like(c), where=tot > 0)


def entropy(counts, base: float = DEFAULT_BASE) -> np.ndarray:
    """H[l, layer] of each language's routing distribution (0 for an empty row)."""
    a = shares(counts)
    out = np.zeros(a.shape[:2])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if a[i, j].sum() > 0:
                out[i, j] = float(_entropy(a[i, j], base=base))
    return out


def jsd_matrix(counts, layer: int, base: float = DEFAULT_BASE) -> np.ndarray:
    """[L, L] squared Jensen–Shannon distance between the languages' distributions at one MoE layer."""
    a = shares(counts)[:, layer]
    n = a.shape[0]
    out = np.zeros((n, n))
    for i, j in combinations(range(n), 2):
        if a[i].sum() > 0 and a[j].sum() > 0:
            out[i, j] = out[j, i] = float(jensenshannon(a[i], a[j], base=base)) ** 2
    return out


def mean_pairwise_jsd(counts, base: float = DEFAULT_BASE) -> np.ndarray:
    """[layers] mean JSD over language pairs (0 with one language)."""
    c = check_counts(counts)
    n = c.shape[0]
    if n < 2:
        return np.zeros(c.shape[1])
    iu = np.triu_indices(n, 1)
    return np.array([jsd_matrix(c, j, base)[iu].mean() for j in range(c.shape[1])])


def _h_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) if p.size else 0.0


def specialisation(counts) -> np.ndarray:
    """[layers] (H(L) − H(L|E)) / H(L) of the language × expert table (0 where H(L) = 0)."""
    c = check_counts(counts)
    out = np.zeros(c.shape[1])
    for j in range(c.shape[1]):
        t = c[:, j, :]  # [L, E]
        total = t.sum()
        if total <= 0:
            continue
        h_l = _h_bits(t.sum(1) / total)
        if h_l <= 0:
            continue
        p_e = t.sum(0) / total
        h_l_e = sum(p_e[e] * _h_bits(t[:, e] / t[:, e].sum()) for e in range(t.shape[1]) if p_e[e] > 0)
        out[j] = (h_l - h_l_e) / h_l
    return out


def _gaps(a_layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per expert: (top language index, top share − runner-up share) over a [L, E] share table."""
    if a_layer.shape[0] < 2:
        raise LangmoeError("language-specific experts need at least 2 languages (the runner-up is compared)")
    order = np.argsort(-a_layer, axis=0, kind="stable")
    top, second = order[0], order[1]
    cols = np.arange(a_layer.shape[1])
    return top, a_layer[top, cols] - a_layer[second, cols]


def specific_experts(counts, langs: Sequence[str], layer: int, alpha: float) -> dict[str, list[int]]:
    """{language: experts whose share gap to the runner-up language is >= alpha} at one MoE layer."""
    a = shares(counts)[:, layer]
    if len(langs) != a.shape[0]:
        raise LangmoeError(f"{len(langs)} language names for {a.shape[0]} rows of counts")
    top, gap = _gaps(a)
    out: dict[str, list[int]] = {lang: [] for lang in langs}
    for e in range(a.shape[1]):
        if gap[e] >= alpha and a[top[e], e] > 0:
            out[langs[top[e]]].append(e)
    return out


def max_gap(counts, lang_index: int, layer: int) -> float:
    """The largest share gap an expert led by this language has at this layer (0 if it leads none)."""
    top, gap = _gaps(shares(counts)[:, layer])
    g = gap[top == lang_index]
    return float(g.max()) if g.size else 0.0


def shared_experts(counts, layer: int, k: int) -> list[int]:
    """The k experts with the highest mean share over the languages (ties: lower id first)."""
    a = shares(counts)[:, layer].mean(0)
    return [int(e) for e in np.argsort(-a, kind="stable")[:k]]


def jaccard_matrix(token_ids: Mapping[str, Sequence[int]], langs: Sequence[str]) -> np.ndarray:
    """[L, L] |A ∩ B| / |A ∪ B| of the token-id sets (1 on the diagonal)."""
    sets = [set(token_ids.get(lang, ())) for lang in langs]
    n = len(sets)
    out = np.eye(n)
    for i, j in combinations(range(n), 2):
        u = len(sets[i] | sets[j])
        out[i, j] = out[j, i] = len(sets[i] & sets[j]) / u if u else 0.0
    return out


def overlap_correlation(overlap: np.ndarray, jsd: np.ndarray) -> dict:
    """Pearson and Spearman (with p-values) of lexical overlap vs JSD over the language pairs (i < j)."""
    n = overlap.shape[0]
    iu = np.triu_indices(n, 1)
    x, y = np.asarray(overlap)[iu], np.asarray(jsd)[iu]
    out: dict = {"pairs": int(x.size), "pearson_r": None, "pearson_p": None, "spearman_rho": None, "spearman_p": None}
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        out["note"] = "needs >= 3 language pairs with varying overlap and JSD"
        return out
    pr = pearsonr(x, y)
    sr = spearmanr(x, y)
    out.update(pearson_r=float(pr.statistic), pearson_p=float(pr.pvalue),
               spearman_rho=float(sr.statistic), spearman_p=float(sr.pvalue))
    return out
