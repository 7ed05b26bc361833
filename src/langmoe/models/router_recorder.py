"""Capture router logits with forward hooks, the same way on langmoe MoE blocks and stock transformers MoE models.

    with RouterRecorder(model) as rec:
        model(**batch)
    rec.logits      # {layer: Tensor[tokens, E]}   (every forward inside the `with`, concatenated)
    rec.selected    # {layer: Tensor[tokens, k]}   experts the model actually used
    rec.topk(2)     # {layer: Tensor[tokens, 2]}   top-2 experts by logit

The routers are those `langmoe.models.routers.iter_router_layers` finds: langmoe's `TopKRouter` and the stock
routers of transformers MoE models (Qwen2-MoE, Qwen3-MoE, Mixtral, OLMoE, ...: `(logits, scores, indices) =
gate(x)`; a router that returns only logits is recorded without indices).

Forwards recomputed by gradient checkpointing inside backward are not recorded twice.

`attach_router_recorder(model)` installs a persistent recorder that keeps only the last forward's outputs with
their graph: `router_outputs(model)` reads it for the router losses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.moe import RouterDecision, in_backward
from langmoe.models.routers import find_routers

__all__ = ["RouterRecorder", "RouterOutput", "router_outputs", "find_routers", "attach_router_recorder",
           "attached_recorder"]

_ATTR = "_langmoe_router_recorder"


@dataclass
class RouterOutput:
    """What one MoE layer's router did in a forward (tensors keep their graph for the losses)."""

    layer: int
    logits: torch.Tensor  # [tokens, E] raw router logits (before any mask)
    topk_idx: torch.Tensor | None  # [tokens, k] experts used (labels mode: [tokens, 1])
    topk_weight: torch.Tensor | None  # [tokens, k] combine weights
    num_experts: int
    mode: str = "learned"
    override: str | None = None  # kind of the router's route override (e.g. "classifier", "language_gate")
    override_logits: torch.Tensor | None = None  # its logits ([tokens, C]; a sequence classifier: [batch, 2])

    def override_logits_of(self, kind: str) -> torch.Tensor | None:
        """The override's logits when the router's override is of `kind`, else None."""
        return self.override_logits if self.override == kind else None


class RouterRecorder:
    """Record router logits (and the experts used) of every MoE layer while the `with` block runs."""

    def __init__(self, model: nn.Module, *, detach: bool = True, accumulate: bool = True):
        self.model = model
        self.detach, self.accumulate = detach, accumulate
        self._records: dict[int, list] = {}
        self._handles: list = []
        self._hooked: set[int] = set()

    # --- hooks
    def start(self) -> RouterRecorder:
        for layer, module in find_routers(self.model).items():
            if id(module) in self._hooked:
                continue
            self._handles.append(module.register_forward_hook(partial(self._hook, layer)))
            self._hooked.add(id(module))
        if not self._hooked:
            raise LangmoeError("RouterRecorder: the model has no MoE router (no 'router'/'gate' next to 'experts')")
        return self

    def stop(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._hooked.clear()

    def __deepcopy__(self, memo):
        # a copied model gets its own recorder (hooks are copied with the modules), without recorded tensors
        new = RouterRecorder.__new__(RouterRecorder)
        memo[id(self)] = new
        new.model = copy.deepcopy(self.model, memo)
        new.detach, new.accumulate = self.detach, self.accumulate
        new._records, new._handles, new._hooked = {}, [], set()
        return new

    def __enter__(self) -> RouterRecorder:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def clear(self) -> None:
        self._records.clear()

    def _hook(self, layer: int, module: nn.Module, args, output) -> None:
        if isinstance(output, RouterDecision):
            if output.recompute:
                return
            rec = (output.logits, output.topk_idx, output.topk_weight, output.mode, output.override,
                   output.override_logits)
        else:
            if in_backward():
                return
            if isinstance(output, tuple | list):
                logits = output[0]
                idx = output[2] if len(output) > 2 else None
                weight = output[1] if len(output) > 2 else None
            else:
                logits, idx, weight = output, None, None
            rec = (logits.reshape(-1, logits.shape[-1]), idx, weight, "learned", None, None)
        if self.detach:
            rec = tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in rec)
        if self.accumulate:
            self._records.setdefault(layer, []).append(rec)
        else:
            self._records[layer] = [rec]

    # --- results
    def _cat(self, i: int) -> dict[int, torch.Tensor]:
        out = {}
        for layer, recs in sorted(self._records.items()):
            parts = [r[i] for r in recs if r[i] is not None]
            if parts:
                out[layer] = torch.cat(parts, dim=0)
        return out

    @property
    def logits(self) -> dict[int, torch.Tensor]:
        """`{layer: [tokens, E]}` raw router logits of every recorded forward."""
        return self._cat(0)

    @property
    def selected(self) -> dict[int, torch.Tensor]:
        """`{layer: [tokens, k]}` experts the model actually used (stock routers without indices: absent)."""
        return self._cat(1)

    @property
    def weights(self) -> dict[int, torch.Tensor]:
        """`{layer: [tokens, k]}` combine weights of the experts used."""
        return self._cat(2)

    def topk(self, k: int) -> dict[int, torch.Tensor]:
        """`{layer: [tokens, k]}` the k experts with the largest logits (independent of masks and labels)."""
        return {layer: t.topk(k, dim=-1).indices for layer, t in self.logits.items()}

    def last_outputs(self) -> list[RouterOutput]:
        """The last recorded forward of every layer (layer order)."""
        out = []
        for layer, recs in sorted(self._records.items()):
            logits, idx, weight, mode, kind, override_logits = recs[-1]
            out.append(RouterOutput(layer, logits, idx, weight, int(logits.shape[-1]), mode, kind, override_logits))
        return out


def attach_router_recorder(model: nn.Module) -> RouterRecorder:
    """Install (or refresh, after new MoE layers) the model's persistent last-forward recorder; returns it."""
    rec = model.__dict__.get(_ATTR)
    if rec is None:
        rec = RouterRecorder(model, detach=False, accumulate=False)
        model.__dict__[_ATTR] = rec
    rec.model = model
    rec.start()
    return rec


def attached_recorder(model: nn.Module) -> RouterRecorder | None:
    """The persistent recorder of `model` or of a module inside it (e.g. under a peft or DDP wrapper)."""
    for m in model.modules():
        rec = m.__dict__.get(_ATTR)
        if rec is not None:
            return rec
    return None


def router_outputs(model: nn.Module) -> list[RouterOutput]:
    """The router outputs of the last forward, one per MoE layer (layer order), from the model's recorder."""
    rec = attached_recorder(model)
    return rec.last_outputs() if rec is not None else []
