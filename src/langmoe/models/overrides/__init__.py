"""Route overrides: what a method changes about a router's learned top-k, one type per module (see
`langmoe.models.moe.RouteOverride`). `kinds` builds the saved ones from their entry in the MoE structure."""

from langmoe.models.overrides.classifier import RoutingClassifier
from langmoe.models.overrides.expansion_gate import ExpansionGate
from langmoe.models.overrides.gate import LanguageGate
from langmoe.models.overrides.labels import LabelRouting

__all__ = ["ExpansionGate", "LabelRouting", "LanguageGate", "RoutingClassifier"]
