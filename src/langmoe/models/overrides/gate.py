"""DMoE's language gate (docs/methods.md §1 G): which added expert, if any, a token of an added language goes to.

`weight [1 + n, D]`, `bias [1 + n]`; class 0 = an old language: learned top-k over experts `< first_new` (the added
experts masked out: an old token routed as before gives a bit-identical output); class j = the added expert
`first_new + j - 1`, weight 1. Why a gate and not a router row (measured at the demo's MoE layer) is in
docs/dmoe.md ("A new language").

mode "prefix" (default) classifies the causal running mean of the block input over the sequence so far (a language
is a property of the context more than of one token). mode "sum" classifies the causal running *sum*: a linear
classifier on it adds up per-token evidence (naive Bayes over the tokens so far), so its margin grows with the
context instead of staying at the mean's scale, and a bound calibrated on the ambiguous first positions no longer
holds back the long-context ones (the expansion gate's default: docs/expansion.md, "A guarantee"). Both read every
earlier position, so they need the whole sequence in each forward: generation runs without the KV cache
(`needs_full_prefix`; `generation_config.use_cache = False` is saved with such a model). mode "token" classifies
each token alone (cache-safe, weaker).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.moe import MoEBlock, RouteOverride, RouterDecision

__all__ = ["LanguageGate", "add_gated_expert", "GATE_MODES"]

GATE_MODES = ("prefix", "sum", "token")


class LanguageGate(RouteOverride):
    """Old language, or which added expert? (all-zero at creation: every class ties and argmax takes the first, so
    an untrained gate keeps every token "old")."""

    kind: ClassVar[str] = "language_gate"
    export_refusal: ClassVar[str] = ("has a language gate (languages added with routing 'gate'): stock MoE routers "
                                     "cannot express it; keep the native folder, or add languages with --routing "
                                     "router")

    def __init__(self, hidden_size: int, first_new: int, num_new: int = 1, mode: str = "prefix"):
        super().__init__()
        if mode not in GATE_MODES:
            raise LangmoeError(f"gate mode must be one of {', '.join(GATE_MODES)}, got {mode!r}")
        if first_new < 1 or num_new < 1:
            raise LangmoeError(f"a language gate needs >= 1 old and >= 1 added expert, got {first_new}, {num_new}")
        self.mode, self.first_new = mode, int(first_new)
        self.weight = nn.Parameter(torch.zeros(1 + num_new, hidden_size))
        self.bias = nn.Parameter(torch.zeros(1 + num_new))

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int, num_experts: int) -> LanguageGate:
        first_new, num_new = int(spec["first_new"]), int(spec["num_new"])
        if not (first_new >= 1 and first_new + num_new == num_experts):
            raise LangmoeError(f"language gate {dict(spec)} does not match {num_experts} experts")
        return cls(hidden_size, first_new, num_new, spec.get("mode", "prefix"))

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "first_new": self.first_new, "num_new": self.num_new, "mode": self.mode}

    @property
    def num_new(self) -> int:
        return self.weight.shape[0] - 1

    @property
    def needs_full_prefix(self) -> bool:
        return self.mode in ("prefix", "sum")

    def features(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[tokens, D]` inputs of the classifier: the token's state, or the running mean ("prefix") / sum ("sum")
        up to and including it."""
        D = self.weight.shape[1]
        if self.mode == "token":
            return hidden_states.reshape(-1, D)
        x3 = hidden_states if hidden_states.dim() == 3 else hidden_states.reshape(1, -1, D)
        total = x3.float().cumsum(dim=1)
        if self.mode == "prefix":
            total = total / torch.arange(1, x3.shape[1] + 1, device=x3.device, dtype=torch.float32).view(1, -1, 1)
        return total.to(x3.dtype).reshape(-1, D)

    def classify(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate logits `[tokens, 1 + n]`, target expert per token `[tokens]`, -1 = old)."""
        logits = F.linear(self.features(hidden_states), self.weight, self.bias)
        cls = logits.argmax(-1)
        return logits, torch.where(cls > 0, cls + self.first_new - 1, torch.full_like(cls, -1))

    def allowed(self, num_experts: int, device: torch.device) -> torch.Tensor:
        """The learned top-k keeps to the old experts: the added ones are reached through the gate only."""
        return torch.arange(num_experts, device=device) < self.first_new

    def route(self, hidden_states: torch.Tensor, decision: RouterDecision) -> RouterDecision:
        logits, target = self.classify(hidden_states)
        decision = self.send_alone(decision, target >= 0, target)
        return decision._replace(override=self.kind, override_logits=logits)

    def expert_appended(self, expert: int) -> None:
        raise LangmoeError("this layer routes its added experts through a language gate: add the expert through "
                           "the gate too (langmoe.models.overrides.gate.add_gated_expert)")

    @torch.no_grad()
    def add_class(self) -> int:
        """One more added expert (lifelong): a new class, a copy of the old class (it ties with it, and argmax
        takes the first, so until trained no token goes to it). Returns its expert index."""
        self.weight = nn.Parameter(torch.cat([self.weight.detach(), self.weight.detach()[:1]]),
                                   requires_grad=self.weight.requires_grad)
        self.bias = nn.Parameter(torch.cat([self.bias.detach(), self.bias.detach()[:1]]),
                                 requires_grad=self.bias.requires_grad)
        return self.first_new + self.num_new - 1

    def extra_repr(self) -> str:
        return f"mode={self.mode}, first_new={self.first_new}, added={self.num_new}"


@torch.no_grad()
def add_gated_expert(block: MoEBlock, source_expert: int, mode: str) -> int:
    """Copy expert `source_expert` of `block` into a new last expert reached through the block's language gate
    (created with the first added expert, one class more for each later one). Returns the new expert's index.

    Block level: the caller records the model's MoE structure afterwards (`upcycle.record_structure`)."""
    gate = block.router.override
    if gate is not None and not isinstance(gate, LanguageGate):
        raise LangmoeError(f"layer {block.layer_idx} has a {gate.kind or type(gate).__name__} route override: it "
                           "cannot also get a language gate")
    if gate is not None and gate.mode != mode:
        raise LangmoeError(f"layer {block.layer_idx}'s language gate is {gate.mode!r}, not {mode!r}")
    new = block.add_expert(source_expert)
    w = block.router.weight
    if gate is None:
        block.router.override = LanguageGate(block.hidden_size, new, 1, mode).to(w.device, w.dtype)
    elif gate.add_class() != new:
        raise LangmoeError(f"layer {block.layer_idx}: the gate's added experts are not the last ones")
    return new
