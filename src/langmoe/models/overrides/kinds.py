"""The saved route-override types by their `kind` in the MoE structure (`moe_format.MoELayerSpec.route_override`).
A new saved type is its module plus one line here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langmoe.errors import LangmoeError
from langmoe.models.moe import RouteOverride
from langmoe.models.overrides.classifier import RoutingClassifier
from langmoe.models.overrides.expansion_gate import ExpansionGate
from langmoe.models.overrides.gate import LanguageGate

__all__ = ["KINDS", "build_override"]

KINDS: dict[str, type] = {cls.kind: cls for cls in (RoutingClassifier, LanguageGate, ExpansionGate)}


def build_override(spec: Mapping[str, Any], hidden_size: int, num_experts: int) -> RouteOverride:
    """The override a saved structure entry describes (fresh weights: a state dict loads them)."""
    kind = spec.get("kind")
    if kind not in KINDS:
        raise LangmoeError(f"unknown route override kind {kind!r} in config.langmoe (known: {', '.join(KINDS)}): "
                           "a newer langmoe wrote this folder")
    return KINDS[kind].from_spec(dict(spec), hidden_size, num_experts)
