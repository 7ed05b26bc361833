"""X-ELM (arXiv 2401.10440): K full copies of the base, each trained on one group's data only.

Inference, two ways:
- by language: each language is scored by its own group's branch (hard; active parameters = one branch);
- ensemble: `p(x_t) = Σ_k w_k,t · p_k(x_t)`. With `weights="uniform"`, `w_k = 1/K`. With `weights="posterior"`
  (default), `w_k,t ∝ Π_{s<t} p_k(x_s)` over the tokens of the window seen so far — the Bayesian posterior of
  "which branch wrote this text" under a uniform prior (the c-BTM / X-ELM dynamic weighting, computed per window
  with no extra data). Both need every branch's forward (active parameters = K branches).

Equal token budget: the budget of `B` optimizer steps is split over the K branches (`B // K` each, the remainder to
the first branches; `langmoe.train.mixed.split_steps`), so all branches together see as many tokens as one DMoE run.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Literal

import torch

from langmoe.errors import LangmoeError


class EnsembleLM(torch.nn.Module):
    """Log-probabilities of the mixture `Σ_k w_k p_k`, returned as `logits` (log_softmax leaves them unchanged)."""

    def __init__(self, branches: Sequence[torch.nn.Module], weights: Literal["uniform", "posterior"] = "posterior"):
        super().__init__()
        if not branches:
            raise LangmoeError("an ensemble needs at least one branch")
        if weights not in ("uniform", "posterior"):
            raise LangmoeError(f"ensemble weights must be 'uniform' or 'posterior', got {weights!r}")
        self.branches = torch.nn.ModuleList(branches)
        self.weights = weights
        self.config = branches[0].config

    def forward(self, input_ids: torch.Tensor, **kwargs) -> SimpleNamespace:
        logps = torch.stack(
            [torch.log_softmax(b(input_ids=input_ids).logits.float(), dim=-1) for b in self.branches]
        )  # [K, B, T, V]
        k = logps.shape[0]
        log_w = torch.full(logps.shape[:3], -float(torch.log(torch.tensor(float(k)))), dtype=logps.dtype,
                           device=logps.device)
        if self.weights == "posterior" and input_ids.shape[1] > 1:
            # ll[k, b, p] = log p_k(x_{p+1} | x_<=p); weights at position t use the tokens x_1..x_t.
            ll = logps[:, :, :-1, :].gather(-1, input_ids[None, :, 1:, None].expand(k, -1, -1, 1)).squeeze(-1)
            cum = torch.cat([torch.zeros_like(ll[:, :, :1]), ll.cumsum(dim=-1)], dim=-1)  # [K, B, T]
            log_w = torch.log_softmax(cum, dim=0)
        mixed = torch.logsumexp(log_w.unsqueeze(-1) + logps, dim=0)
        return SimpleNamespace(logits=mixed, loss=None)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
