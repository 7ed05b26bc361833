"""Capture router logits with forward hooks, the same way on langmoe MoE blocks and stock transformers MoE models.

    with RouterRecorder(model) as rec:
        model(**batch)
    rec.logits      # {layer: Tensor[tokens, E]}   (every forward inside the `with`, concatenated)
    rec.selected    # {layer: Tensor[tokens, k]}   experts the model actually used
    rec.topk(2)     # {layer: Tensor[tokens, 2]}   top-2 experts by logit

A router is a module named `router` or `gate` whose parent also holds an `experts` module: langmoe's `TopKRouter`
and the stock routers of Qwen2-MoE, Qwen3-MoE, Mixtral and OLMoE (`(logits, scores, indices) = gate(x)`; a router
that returns only logits is recorded without indices). The layer is the first integer in the module's path
(`model.layers.3.mlp.gate` -> 3); langmoe routers carry their own `layer_idx`.

Forwards recomputed by gradient checkpointing inside backward are not recorded twice.

`attach_router_recorder(model)` installs a persistent recorder that keeps only the last forward's outputs with
their graph: `langmoe.models.moe.router_outputs(model)` reads it for the router losses.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from langmoe.errors import LangmoeError

__all__ = ["RouterRecorder", "find_routers", "attach_router_recorder", "attached_recorder"]

_ATTR = "_langmoe_router_recorder"


def _layer_of(name: str, module: nn.Module) -> int:
    idx = getattr(module, "layer_idx", None)
    if isinstance(idx, int) and idx >= 0:
        return idx
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return -1


def find_routers(model: nn.Module) -> dict[int, nn.Module]:
    """`{layer: router module}` of every MoE layer (langmoe or stock), in layer order."""
    found: dict[int, nn.Module] = {}
    for name, module in model.named_modules():
        for child_name in ("router", "gate"):
            child = module._modules.get(child_name)
            if child is None or "experts" not in module._modules:
                continue
            layer = _layer_of(f"{name}.{child_name}", child)
            if layer in found and found[layer] is not child:
                raise LangmoeError(f"two routers claim layer {layer}: cannot tell their outputs apart")
            found[layer] = child
    return dict(sorted(found.items()))


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
        import copy

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
        from langmoe.models.moe import RouterDecision, _in_backward

        if isinstance(output, RouterDecision):
            if output.recompute:
                return
            rec = (output.logits, output.topk_idx, output.topk_weight, output.classifier_logits, output.mode,
                   output.gate_logits)
        else:
            if _in_backward():
                return
            if isinstance(output, tuple | list):
                logits = output[0]
                idx = output[2] if len(output) > 2 else None
                weight = output[1] if len(output) > 2 else None
            else:
                logits, idx, weight = output, None, None
            rec = (logits.reshape(-1, logits.shape[-1]), idx, weight, None, "learned", None)
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

    def last_outputs(self) -> list:
        """The last recorded forward of every layer as `moe.RouterOutput` (layer order)."""
        from langmoe.models.moe import RouterOutput

        out = []
        for layer, recs in sorted(self._records.items()):
            logits, idx, weight, cls, mode, gate = recs[-1]
            out.append(RouterOutput(layer, logits, cls, idx, weight, int(logits.shape[-1]), mode, gate))
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
