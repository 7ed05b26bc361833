"""Hard routing by labels: token t goes to expert `labels[t]` with weight 1 (DMoE's training by language group,
"route everything to expert e" evaluations). A per-call override (`langmoe.models.routing.routing`), never saved.

A micro-batch whose tokens share one label is one dense FFN call; mixed labels are gathered per expert. The router
logits are still computed (recorded for the router classification loss) but not used.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from langmoe.errors import LangmoeError
from langmoe.models.moe import RouteOverride, RouterDecision

__all__ = ["LabelRouting"]


class LabelRouting(RouteOverride):
    """Every token to the expert its label names (`labels` shaped like input_ids), weight 1, mode "labels"."""

    decision_mode: ClassVar[str] = "labels"

    def __init__(self, labels: torch.Tensor):
        super().__init__()
        self.labels = labels

    def route(self, hidden_states: torch.Tensor, decision: RouterDecision) -> RouterDecision:
        N, E = decision.logits.shape
        labels = self.labels.reshape(-1).to(decision.logits.device)
        if labels.numel() != N:
            raise LangmoeError(f"route_labels has {labels.numel()} entries but the batch has {N} tokens "
                               f"(shape {list(hidden_states.shape)})")
        if bool(((labels < 0) | (labels >= E)).any()):
            raise LangmoeError(f"route_labels must be in [0, {E}) in hard routing (the layer has {E} experts)")
        ones = torch.ones(N, 1, dtype=hidden_states.dtype, device=decision.logits.device)
        return decision._replace(topk_weight=ones, topk_idx=labels.unsqueeze(-1), mode=self.decision_mode)

    def extra_repr(self) -> str:
        return f"labels={list(self.labels.shape)}"
