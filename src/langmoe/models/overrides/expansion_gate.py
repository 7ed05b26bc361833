"""The expansion gate (`--protect gate` of MoE-LPR / LayerMoE): the calibrated language gate of `add-language`
(`LanguageGate`: its features, fit and calibration) in front of an expansion's router, with the expansion's
routing per class.

Class 0 = an expert-0 language: expert 0 (the frozen original FFN) alone, weight 1, so the token's output in this
layer is the input model's. Class g >= 1 = the g-th group of new languages (one class per expansion generation):
the learned top-k over expert 0 and the group's own experts `[group_first[g-1], group_first[g])` — the official
LayerMoE's lifelong restriction — and the newest group over every expert. The top-k is renormalised.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from langmoe.errors import LangmoeError
from langmoe.models.moe import RouterDecision
from langmoe.models.overrides.gate import LanguageGate

__all__ = ["ExpansionGate"]


class ExpansionGate(LanguageGate):
    """`weight [1 + G, D]`, `bias [1 + G]` (all-zero at creation: every token "old" until fitted)."""

    kind: ClassVar[str] = "expansion_gate"
    export_refusal: ClassVar[str] = ("has an expansion gate (`--protect gate`): stock MoE routers cannot express "
                                     "it; keep the native folder, or expand without --protect gate")

    def __init__(self, hidden_size: int, group_first: list[int], num_experts: int, mode: str = "prefix"):
        firsts = [int(x) for x in group_first]
        if not firsts or firsts[0] < 1 or firsts != sorted(firsts) or firsts[-1] > num_experts:
            raise LangmoeError(f"expansion gate groups {firsts} do not fit {num_experts} experts (first groups "
                               "start at expert 1, in order)")
        super().__init__(hidden_size, 1, len(firsts), mode)
        self.group_first, self.num_experts = firsts, int(num_experts)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int, num_experts: int) -> ExpansionGate:
        return cls(hidden_size, list(spec["groups"]), num_experts, spec.get("mode", "prefix"))

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "groups": list(self.group_first), "mode": self.mode}

    def allowed(self, num_experts: int, device: torch.device) -> torch.Tensor | None:
        return None  # per token, in `route`

    def class_masks(self, device: torch.device) -> torch.Tensor:
        """`[1 + G, E]` bool: the experts each class may use."""
        E, G = self.num_experts, len(self.group_first)
        ids = torch.arange(E, device=device)
        rows = [ids == 0]
        for g, first in enumerate(self.group_first):
            if g + 1 == G:  # the newest group: every expert, as the official code
                rows.append(torch.ones(E, dtype=torch.bool, device=device))
            else:
                rows.append((ids == 0) | ((ids >= first) & (ids < self.group_first[g + 1])))
        return torch.stack(rows)

    def classes(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate logits `[tokens, 1 + G]`, class per token)."""
        logits = torch.nn.functional.linear(self.features(hidden_states), self.weight, self.bias)
        return logits, logits.argmax(-1)

    def classify(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As `LanguageGate.classify` (-1 = class 0), for the shared fit / calibration tools."""
        logits, cls = self.classes(hidden_states)
        return logits, torch.where(cls > 0, cls, torch.full_like(cls, -1))

    def route(self, hidden_states: torch.Tensor, decision: RouterDecision) -> RouterDecision:
        if decision.logits.shape[1] != self.num_experts:
            raise LangmoeError(f"expansion gate for {self.num_experts} experts sits on a router of "
                               f"{decision.logits.shape[1]}")
        logits, cls = self.classes(hidden_states)
        allowed = self.class_masks(decision.logits.device)[cls]  # [N, E]
        k = decision.topk_idx.shape[1]
        probs = torch.softmax(decision.logits.float().masked_fill(~allowed, float("-inf")), dim=-1)
        weights, idx = probs.topk(k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        decision = decision._replace(topk_idx=idx, topk_weight=weights)
        decision = self.send_alone(decision, cls == 0, torch.zeros_like(cls))
        return decision._replace(override=self.kind, override_logits=logits)

    def expert_appended(self, expert: int) -> None:
        raise LangmoeError("this layer's router holds an expansion gate: remove the gates before adding experts "
                           "(langmoe.methods.expansion.protect.strip_gates)")

    def extra_repr(self) -> str:
        return f"mode={self.mode}, groups={self.group_first}, experts={self.num_experts}"
