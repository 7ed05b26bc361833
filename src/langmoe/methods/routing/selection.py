"""Which languages and experts expert PEFT uses, on the routing paper's set-up.

The paper's code (aditi184/moe-routing-adaptation, analysis/analysis.py `build_selected_experts_json`) selects the
language-specific experts (activation gap >= α between the top and the runner-up language of an expert) and the
shared experts (top-k by mean share) over a fixed **pool of one high-resource language per family** (en ar cs es
fi hi ru: Germanic, Semitic, West Slavic, Romance, Finnic, Indo-Aryan, East Slavic), and a low-resource child
takes its parent's experts. Siblings of the parent are not in the pool, so "specific" means specific against
other families, not against the parent's own relatives.

langmoe's "family" is the genus of the language table (Romance, Germanic, Slavic, Indo-Aryan, Semitic, Finnic,
Sinitic, ...), the grain of the paper's pool. `DEFAULT_POOL` is the analogue over the languages `builtin-moe` was
trained on: per genus the language with the most built-in text among them (en, es, ru, fi, ar, hi, zh). The
parent stands for its own genus (it replaces that genus' default member), and the child's genus contributes no
other language: `reference_pool`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from langmoe.data.languages import LANGUAGES
from langmoe.errors import LangmoeError
from langmoe.methods.routing import metrics as M

__all__ = ["DEFAULT_POOL", "family_of", "default_candidates", "default_last_n", "reference_pool", "pool_counts", "check_router_still_chooses",
           "selected_experts_json"]

# one high-resource language per family (genus) among builtin-moe's training languages (see the module doc)
DEFAULT_POOL: tuple[str, ...] = ("en", "es", "ru", "fi", "ar", "hi", "zh")


def default_last_n(n_moe: int) -> int:
    """The paper adapts the last 2 MoE layers; a model with one MoE layer has only that."""
    return min(2, n_moe)


def family_of(code: str) -> str:
    """The genus of a known language (the paper's grain); an unknown code is its own family."""
    lang = LANGUAGES.get(code)
    return lang.genus if lang is not None else code


def default_candidates(langs: Sequence[str]) -> list[str]:
    """`langs` with DEFAULT_POOL's members first, so they win their family in `reference_pool`; other languages
    stand for families the default pool lacks. What `adapt` and `langmoe routing` use when no pool is given."""
    return [x for x in DEFAULT_POOL if x in langs] + [x for x in langs if x not in DEFAULT_POOL]


def reference_pool(parent: str, child: str, candidates: Sequence[str]) -> list[str]:
    """The parent first, then the first candidate of every other family; the child's and the parent's families
    contribute nobody else (siblings would make "specific" mean "specific against relatives")."""
    if parent == child:
        raise LangmoeError("child and parent must be different languages")
    taken = {family_of(parent), family_of(child)}
    pool = [parent]
    for lang in dict.fromkeys(candidates):
        fam = family_of(lang)
        if lang in (parent, child) or fam in taken:
            continue
        taken.add(fam)
        pool.append(lang)
    if len(pool) < 2:
        raise LangmoeError(f"the reference pool for child {child!r} is only the parent {parent!r}: add languages of "
                           f"other families (e.g. {', '.join(x for x in DEFAULT_POOL if x not in (parent, child))})")
    return pool


def pool_counts(counts, langs: Sequence[str], pool: Sequence[str]):
    """The rows of `counts [languages, layers, experts]` of the pool languages, in pool order."""
    missing = [x for x in pool if x not in langs]
    if missing:
        raise LangmoeError(f"the routing counts have no {', '.join(missing)} (they have {', '.join(langs)}): "
                           "collect them with those languages")
    return M.check_counts(counts)[[list(langs).index(x) for x in pool]]


def check_router_still_chooses(allowed: Mapping[int, Sequence[int]], top_k: Mapping[int, int], mode: str) -> None:
    """Refuse a routing mask that leaves no choice: with <= top-k allowed experts every token goes to all of them,
    the router rows get no gradient, and training routes differently from evaluation."""
    tight = [(layer, len(v), top_k[layer]) for layer, v in allowed.items() if len(v) <= top_k[layer]]
    if tight:
        layer, n, k = tight[0]
        raise LangmoeError(f"{mode} allows {n} expert(s) in layer {layer} but the model routes every token to {k}: "
                           f"the router would have no choice; use a smaller --alpha or --mode ssft with more "
                           f"--n-shared (at least {k + 1 - n} more experts)")


def _specific(c, pool: list[str], j: int, alpha: float, parent: str) -> list[int]:
    return list(M.specific_experts(c, pool, j, alpha)[parent])


def selected_experts_json(counts, langs: Sequence[str], layers: Sequence[int], pairs: Mapping[str, str],
                          positions: Sequence[int], alpha: float, ks: Sequence[int] = (1, 3, 5),
                          pool: Sequence[str] | None = None) -> dict:
    """The official `selected_experts.json`: `_meta`, `shared_experts[k<k>][layer]` over the pool, and per child
    `seft[layer]` (its parent's specific experts) and `ssft_k<k>[layer]` (seft + shared, duplicates dropped).
    Each child's pool is `reference_pool(parent, child, pool)` (recorded under `_meta.pools`)."""
    c_all = M.check_counts(counts)
    cands = default_candidates(langs) if pool is None else [x for x in pool if x in langs]
    base = [x for x in DEFAULT_POOL if x in cands] if pool is None else cands
    out: dict = {"_meta": {"alpha": alpha, "target_layers": [layers[j] for j in positions], "hr_languages": base,
                           "parents": dict(pairs), "pools": {}},
                 "shared_experts": {}}
    if base:
        cb = pool_counts(c_all, langs, base)
        out["shared_experts"] = {f"k{k}": {str(layers[j]): M.shared_experts(cb, j, k) for j in positions}
                                 for k in ks}
    for child, parent in pairs.items():
        cpool = reference_pool(parent, child, cands)
        c = pool_counts(c_all, langs, cpool)
        out["_meta"]["pools"][child] = cpool
        seft = {str(layers[j]): _specific(c, cpool, j, alpha, parent) for j in positions}
        entry = {"seft": seft}
        for k in ks:
            entry[f"ssft_k{k}"] = {str(layers[j]): seft[str(layers[j])] + [e for e in M.shared_experts(c, j, k)
                                                                          if e not in seft[str(layers[j])]]
                                   for j in positions}
        out[child] = entry
    return out
