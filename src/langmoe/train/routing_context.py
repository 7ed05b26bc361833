"""Language groups and the routing contexts that training and evaluation use with them.

`group_of_map` turns a partition of languages into language -> group id (the expert index a group owns);
`hard_routing` is a forward context that sends every token to its group's expert in all MoE layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langmoe.errors import LangmoeError
from langmoe.models.routing import routing


def group_of_map(groups: Sequence[Sequence[str]]) -> dict[str, int]:
    """Language -> group id (position of its group)."""
    out: dict[str, int] = {}
    for g, members in enumerate(groups):
        for lang in members:
            if lang in out:
                raise LangmoeError(f"language {lang!r} is in two groups: each language belongs to one group")
            out[lang] = g
    return out


def hard_routing(model, batch: Mapping[str, Any]):
    """Route every token to the expert named by its `group_ids` (all MoE layers)."""
    labels = batch.get("group_ids")
    if labels is None or bool((labels < 0).any()):
        raise LangmoeError("hard routing needs group ids for every token: give every language a group")
    return routing(model, route_labels=labels)
