"""One dense FFN in the canonical input-major layout (`FFNWeights`) and its formula (`ffn_forward`).

What `adapters` reads out of a decoder layer's MLP and what every expert of an MoE block holds (`moe` writes and
reads experts in this layout), so both build on this module and neither on the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["FFNWeights", "ffn_forward"]


@dataclass
class FFNWeights:
    """One dense FFN in canonical input-major layout. Gated: w_gate, w_up, w_out; non-gated: w_in, w_out.

    gated:      `act(x @ w_gate + b_gate) * (x @ w_up + b_up) @ w_out + b_out`
    non-gated:  `act(x @ w_in + b_in) @ w_out + b_out`
    Gated FFNs have both input biases or neither (a missing one is filled with zeros). `extra` records how the
    weights were read (`layout`: separate / fused-halves / ..., the projection names).
    """

    gated: bool
    act: nn.Module | Callable
    w_out: torch.Tensor  # [F, D]
    w_gate: torch.Tensor | None = None  # [D, F]
    w_up: torch.Tensor | None = None  # [D, F]
    w_in: torch.Tensor | None = None  # [D, F]
    b_gate: torch.Tensor | None = None
    b_up: torch.Tensor | None = None
    b_in: torch.Tensor | None = None
    b_out: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return self.w_out.shape[1]

    @property
    def intermediate_size(self) -> int:
        return self.w_out.shape[0]


def ffn_forward(ffn: FFNWeights, x: torch.Tensor) -> torch.Tensor:
    """The canonical FFN formula on `x [..., D]` (what every expert of an upcycled block computes)."""
    if ffn.gated:
        g, u = x @ ffn.w_gate, x @ ffn.w_up
        if ffn.b_gate is not None:
            g = g + ffn.b_gate
        if ffn.b_up is not None:
            u = u + ffn.b_up
        h = ffn.act(g) * u
    else:
        h = x @ ffn.w_in
        if ffn.b_in is not None:
            h = h + ffn.b_in
        h = ffn.act(h)
    y = h @ ffn.w_out
    return y if ffn.b_out is None else y + ffn.b_out
