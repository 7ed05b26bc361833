"""LayerMoE's old/new routing classifier (docs/methods.md §3): tokens it classifies as class 0 ("old") go to
expert 0 (the frozen original FFN) with weight 1; the others keep the learned top-k.

`mode="sequence"` classifies whole sequences from the mean FFN input (the official LayerMoE code): it reads every
position of the sequence, so generation runs without the KV cache (`needs_full_prefix`); per-token is default.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.moe import RouteOverride, RouterDecision

__all__ = ["RoutingClassifier"]


class RoutingClassifier(RouteOverride):
    """Old/new classifier `Linear(D, 2)` without bias (`weight [2, D]`, xavier-normal at creation as the official
    LayerMoE code: std = sqrt(2 / (D + 2)))."""

    kind: ClassVar[str] = "classifier"
    export_refusal: ClassVar[str] = "has an old/new classifier: stock MoE routers cannot express it"

    def __init__(self, hidden_size: int, mode: str = "token"):
        super().__init__()
        if mode not in ("token", "sequence"):
            raise LangmoeError(f"classifier_mode must be 'token' or 'sequence', got {mode!r}")
        self.mode = mode
        self.weight = nn.Parameter(torch.empty(2, hidden_size))
        nn.init.xavier_normal_(self.weight)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int, num_experts: int) -> RoutingClassifier:
        return cls(hidden_size, spec.get("mode", "token"))

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "mode": self.mode}

    @property
    def needs_full_prefix(self) -> bool:
        return self.mode == "sequence"

    def classify(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(classifier logits, `old [tokens]` bool) for `hidden_states [..., D]`."""
        D = self.weight.shape[1]
        if self.mode == "sequence":
            x3 = hidden_states if hidden_states.dim() == 3 else hidden_states.reshape(1, -1, D)
            logits = F.linear(x3.mean(dim=1), self.weight)  # [B, 2]
            return logits, (logits.argmax(-1) == 0).repeat_interleave(x3.shape[1])
        logits = F.linear(hidden_states.reshape(-1, D), self.weight)
        return logits, logits.argmax(-1) == 0

    def route(self, hidden_states: torch.Tensor, decision: RouterDecision) -> RouterDecision:
        logits, old = self.classify(hidden_states)
        decision = self.send_alone(decision, old, torch.zeros_like(decision.topk_idx[:, 0]))
        return decision._replace(override=self.kind, override_logits=logits)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"
