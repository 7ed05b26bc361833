"""DMoE step B: balanced language groups from the similarity of their deviation vectors (docs/methods.md §1 B).

Distance `D = 1 − S` (S = cosine similarity). Groups are equal-sized: with `num_groups=K` the sizes are
`ceil(n/K)` or `floor(n/K)` (larger first, always exactly K groups); with `group_size=m` every group has m
languages and the leftovers form a last, smaller group (the paper's rule). Two builders:

- exhaustive (small n): among all subsets of the next size of the remaining languages take the one with the
  smallest diameter (max pairwise D), remove it, repeat;
- seeded growth (large n): seed with the closest remaining pair, add the language whose max distance to the
  members is smallest until the group is full, remove, repeat.

`method="auto"` takes exhaustive while the number of subsets to scan stays under `max_subsets`.
Ties on the diameter are common (it is one pair's distance). `tie_break="mean"` (default) takes the subset with
the smaller mean pairwise distance (the tighter group); `tie_break="official"` takes the first subset in
`itertools.combinations` order of the remaining languages, comparing diameters exactly, as the official script
(ZNLP/DMoE `src/balanced_cluster_18langs.py`) does, to reproduce its groups.
Random and genus/family/script groupings, and `agreement` (adjusted Rand index, NMI), are for comparison.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from langmoe.data.languages import get_language
from langmoe.errors import LangmoeError
from langmoe.methods.dmoe.sketch import cosine_matrix

GroupMethod = Literal["auto", "exhaustive", "greedy"]
TieBreak = Literal["mean", "official"]
DEFAULT_MAX_SUBSETS = 200_000


class Grouping(BaseModel):
    """A partition of `langs` into `groups` (group id = position). Serialises to `groups.json`."""

    method: str
    langs: list[str]
    groups: list[list[str]]
    diameters: list[float] | None = Field(None, description="max pairwise distance inside each group")
    seed: int | None = None
    agreement: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="name -> {'ari', 'nmi'} against a reference grouping"
    )
    note: str | None = None

    def group_of(self) -> dict[str, int]:
        """language -> group id."""
        return {x: g for g, members in enumerate(self.groups) for x in members}


class Agreement(BaseModel):
    ari: float
    nmi: float


# ---- sizes -----------------------------------------------------------------------------------------------------


def group_sizes(n: int, num_groups: int | None = None, group_size: int | None = None) -> list[int]:
    """Sizes of the groups, in the order they are built (larger first)."""
    if (num_groups is None) == (group_size is None):
        raise LangmoeError("give exactly one of num_groups (K) or group_size")
    if n < 1:
        raise LangmoeError("grouping needs at least one language")
    if num_groups is not None:
        if num_groups < 1:
            raise LangmoeError(f"num_groups must be at least 1, got {num_groups}")
        if num_groups > n:
            raise LangmoeError(f"{num_groups} groups need at least {num_groups} languages, got {n}: "
                               "add languages or ask for fewer groups")
        base, rest = divmod(n, num_groups)
        return [base + 1] * rest + [base] * (num_groups - rest)
    assert group_size is not None
    if group_size < 1:
        raise LangmoeError(f"group_size must be at least 1, got {group_size}")
    if group_size > n:
        raise LangmoeError(f"group_size {group_size} exceeds the {n} languages: lower it")
    full, rest = divmod(n, group_size)
    return [group_size] * full + ([rest] if rest else [])


def count_subsets(n: int, sizes: Sequence[int]) -> int:
    """Subsets the exhaustive builder scans: Σ_i C(remaining_i, size_i)."""
    total, rem = 0, n
    for s in sizes:
        total += math.comb(rem, s)
        rem -= s
    return total


# ---- similarity ------------------------------------------------------------------------------------------------


def similarity_matrix(vectors: Mapping[str, object] | Sequence) -> np.ndarray:
    """Cosine similarity between language vectors (rows; a mapping keeps its order)."""
    import torch

    rows = list(vectors.values()) if isinstance(vectors, Mapping) else list(vectors)
    return cosine_matrix(torch.stack([torch.as_tensor(r).reshape(-1).double() for r in rows]))


def _check_matrix(langs: Sequence[str], similarity) -> np.ndarray:
    s = np.asarray(similarity, dtype=np.float64)
    n = len(langs)
    if len(set(langs)) != n:
        raise LangmoeError(f"languages must be unique, got {list(langs)}")
    if s.shape != (n, n):
        raise LangmoeError(f"similarity matrix is {s.shape}, expected ({n}, {n}) for languages {list(langs)}")
    if not np.isfinite(s).all():
        raise LangmoeError("similarity matrix has NaN or infinite entries: re-run the deviation probe")
    return s


def distance_matrix(similarity) -> np.ndarray:
    """D = 1 − S, symmetrised, zero diagonal."""
    s = np.asarray(similarity, dtype=np.float64)
    d = 1.0 - (s + s.T) / 2.0
    np.fill_diagonal(d, 0.0)
    return d


def _diameter(d: np.ndarray, members: Sequence[int]) -> float:
    m = list(members)
    return float(d[np.ix_(m, m)].max()) if len(m) > 1 else 0.0


# ---- builders --------------------------------------------------------------------------------------------------


def _best_subset(d: np.ndarray, remaining: list[int], size: int, batch: int = 50_000,
                 tie_break: TieBreak = "mean") -> list[int]:
    """Smallest-diameter subset of `remaining` of `size`; ties → smaller mean distance, then first in order
    (`tie_break="official"`: exact diameters, the first minimal subset in combination order)."""
    if size == len(remaining):
        return list(remaining)
    if size == 1:
        return [remaining[0]]
    rem = np.asarray(remaining)
    pairs = list(itertools.combinations(range(size), 2))
    pi = np.array([p[0] for p in pairs])
    pj = np.array([p[1] for p in pairs])
    best: tuple[float, float] | None = None
    best_idx: np.ndarray | None = None
    it = itertools.combinations(range(len(remaining)), size)
    while True:
        combos = np.array(list(itertools.islice(it, batch)), dtype=np.int64)
        if combos.size == 0:
            break
        members = rem[combos]  # [c, size]
        dist = d[members[:, pi], members[:, pj]]  # [c, pairs]
        diam = dist.max(axis=1)
        if tie_break == "official":
            i = int(np.argmin(diam))  # first occurrence; across batches `<` keeps the earlier subset
            if best is None or float(diam[i]) < best[0]:
                best, best_idx = (float(diam[i]), 0.0), members[i]
            continue
        mean = dist.mean(axis=1)
        # lexicographic (diameter, mean) minimum with a tolerance so float noise does not decide ties
        order = np.lexsort((mean.round(12), diam.round(12)))
        i = int(order[0])
        cand = (float(diam[i].round(12)), float(mean[i].round(12)))
        if best is None or cand < best:
            best, best_idx = cand, members[i]
    assert best_idx is not None
    return [int(x) for x in best_idx]


def _grow(d: np.ndarray, remaining: list[int], size: int) -> list[int]:
    """Seeded growth: closest remaining pair, then the language with the smallest max distance to the members."""
    if size == len(remaining):
        return list(remaining)
    if size == 1:
        return [remaining[0]]
    rem = np.asarray(remaining)
    sub = d[np.ix_(rem, rem)].copy()
    np.fill_diagonal(sub, np.inf)
    a, b = np.unravel_index(int(np.argmin(sub)), sub.shape)
    members = [int(a), int(b)]
    while len(members) < size:
        others = [i for i in range(len(rem)) if i not in members]
        cost = d[np.ix_(rem[others], rem[members])].max(axis=1)
        members.append(others[int(np.argmin(cost))])
    return [int(rem[i]) for i in members]


def group_languages(langs: Sequence[str], similarity, num_groups: int | None = None,
                    group_size: int | None = None, method: GroupMethod = "auto",
                    max_subsets: int = DEFAULT_MAX_SUBSETS, tie_break: TieBreak = "mean") -> Grouping:
    """Balanced groups of `langs` from their similarity matrix (rows/columns in the order of `langs`).
    `tie_break` decides between subsets of equal diameter (exhaustive search; see the module docstring)."""
    langs = list(langs)
    s = _check_matrix(langs, similarity)
    sizes = group_sizes(len(langs), num_groups, group_size)
    if method not in ("auto", "exhaustive", "greedy"):
        raise LangmoeError(f"grouping method must be auto, exhaustive or greedy, got {method!r}")
    if tie_break not in ("mean", "official"):
        raise LangmoeError(f"tie_break must be mean or official, got {tie_break!r}")
    n_subsets = count_subsets(len(langs), sizes)
    if method == "auto":
        method = "exhaustive" if n_subsets <= max_subsets else "greedy"
    d = distance_matrix(s)
    remaining = list(range(len(langs)))
    groups_idx: list[list[int]] = []
    for size in sizes:
        members = (_best_subset(d, remaining, size, tie_break=tie_break) if method == "exhaustive"
                   else _grow(d, remaining, size))
        groups_idx.append(members)
        remaining = [i for i in remaining if i not in members]
    # each group lists its languages in input order; groups keep the order they were built in
    groups = [[langs[i] for i in sorted(g)] for g in groups_idx]
    return Grouping(method=method, langs=langs, groups=groups,
                    diameters=[_diameter(d, g) for g in groups_idx],
                    note=f"{n_subsets} subsets for exhaustive search" if method == "exhaustive" else None)


def random_grouping(langs: Sequence[str], num_groups: int | None = None, group_size: int | None = None,
                    seed: int = 0, similarity=None) -> Grouping:
    """Random groups with the same sizes as `group_languages` would give, deterministic in `seed`."""
    langs = list(langs)
    sizes = group_sizes(len(langs), num_groups, group_size)
    order = list(langs)
    random.Random(seed).shuffle(order)
    groups, i = [], 0
    for size in sizes:
        groups.append(sorted(order[i:i + size], key=langs.index))
        i += size
    diam = None
    if similarity is not None:
        d = distance_matrix(_check_matrix(langs, similarity))
        diam = [_diameter(d, [langs.index(x) for x in g]) for g in groups]
    return Grouping(method="random", langs=langs, groups=groups, diameters=diam, seed=seed)


def attribute_grouping(langs: Sequence[str], by: Literal["genus", "family", "script"] = "genus",
                       declared: Mapping | None = None) -> Grouping:
    """One group per genus (or family / script) of `langs.data.languages`; groups are not balanced."""

    if by not in ("genus", "family", "script"):
        raise LangmoeError(f"attribute grouping is by genus, family or script, got {by!r}")
    langs = list(langs)
    keys: dict[str, list[str]] = {}
    for x in langs:
        keys.setdefault(getattr(get_language(x, declared), by), []).append(x)
    return Grouping(method=by, langs=langs, groups=list(keys.values()),
                    note=", ".join(f"{k}: {' '.join(v)}" for k, v in keys.items()))


# ---- agreement -------------------------------------------------------------------------------------------------


def _labels(grouping: Grouping | Sequence[Sequence[str]] | Mapping[str, int], langs: Sequence[str]) -> list[int]:
    if isinstance(grouping, Grouping):
        g = grouping.group_of()
    elif isinstance(grouping, Mapping):
        g = {k: int(v) for k, v in grouping.items()}
    else:
        g = {x: i for i, members in enumerate(grouping) for x in members}
    missing = [x for x in langs if x not in g]
    if missing:
        raise LangmoeError(f"grouping misses languages {', '.join(missing)}: both groupings must cover the same set")
    return [g[x] for x in langs]


def _contingency(a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    ua, ia = np.unique(np.asarray(a), return_inverse=True)
    ub, ib = np.unique(np.asarray(b), return_inverse=True)
    table = np.zeros((len(ua), len(ub)), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    return table


def adjusted_rand_index(a: Sequence[int], b: Sequence[int]) -> float:
    """Hubert–Arabie ARI (1 = same partition, ~0 = chance). Identical trivial partitions give 1."""
    t = _contingency(a, b)
    n = int(t.sum())
    comb2 = lambda x: x * (x - 1) / 2.0  # noqa: E731
    sum_ij = comb2(t).sum()
    sum_a, sum_b = comb2(t.sum(1)).sum(), comb2(t.sum(0)).sum()
    total = comb2(n)
    expected = sum_a * sum_b / total if total else 0.0
    max_index = (sum_a + sum_b) / 2.0
    if max_index == expected:
        return 1.0
    return float((sum_ij - expected) / (max_index - expected))


def normalized_mutual_info(a: Sequence[int], b: Sequence[int]) -> float:
    """NMI with the arithmetic-mean normaliser (as sklearn's default). Two single-group partitions give 1."""
    t = _contingency(a, b).astype(np.float64)
    n = t.sum()
    pa, pb = t.sum(1) / n, t.sum(0) / n
    ha = -float(np.sum(pa * np.log(pa)))
    hb = -float(np.sum(pb * np.log(pb)))
    if ha == 0.0 and hb == 0.0:
        return 1.0
    nz = t > 0
    pij = t[nz] / n
    mi = float(np.sum(pij * np.log(pij / np.outer(pa, pb)[nz])))
    denom = (ha + hb) / 2.0
    return float(max(0.0, min(1.0, mi / denom))) if denom > 0 else 0.0


def agreement(grouping: Grouping | Sequence[Sequence[str]] | Mapping[str, int],
              reference: Grouping | Sequence[Sequence[str]] | Mapping[str, int],
              langs: Sequence[str] | None = None) -> Agreement:
    """Adjusted Rand index and NMI between two groupings of the same languages."""
    if langs is None:
        if isinstance(grouping, Grouping):
            langs = grouping.langs
        elif isinstance(grouping, Mapping):
            langs = list(grouping)
        else:
            langs = [x for g in grouping for x in g]
    a, b = _labels(grouping, langs), _labels(reference, langs)
    return Agreement(ari=adjusted_rand_index(a, b), nmi=normalized_mutual_info(a, b))


def with_comparisons(grouping: Grouping, seed: int = 0, declared: Mapping | None = None) -> Grouping:
    """Fill `grouping.agreement` with ARI/NMI against genus, family and a random balanced grouping, and the random
    grouping's own agreement with genus/family (`random grouping vs genus`, ...) as the chance level to read them against."""
    out = grouping.model_copy(deep=True)
    k = len(grouping.groups)
    rnd = random_grouping(grouping.langs, num_groups=k, seed=seed)
    for by in ("genus", "family"):
        try:
            ref = attribute_grouping(grouping.langs, by, declared)
        except LangmoeError:
            continue  # a language without metadata: skip this comparison
        out.agreement[by] = agreement(grouping, ref).model_dump()
        out.agreement[f"random grouping vs {by}"] = agreement(rnd, ref).model_dump()
    out.agreement["random"] = agreement(grouping, rnd).model_dump()
    return out
