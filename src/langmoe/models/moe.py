"""The MoE block that replaces a decoder layer's FFN: fused expert weights, a linear router, several routing modes.

Weights are fused 3D tensors `[E, in, out]` (input-major, `y = x @ W[e]`): gated experts hold `w_gate, w_up
[E, D, F]` and `w_out [E, F, D]`; non-gated ones `w_in [E, D, F]`, `w_out [E, F, D]` and biases `b_in [E, F]`,
`b_out [E, D]`. The router is a bias-free `nn.Linear(D, E)`.

Routing is chosen per call without touching the Hugging Face forward signature: `with routing(model, ...)` sets a
state on every MoE block (see `routing`). Modes:

- learned (default, needs no labels): softmax over the router logits (masked to the allowed experts if given),
  top-k, renormalise the k weights (option off). With `renormalize=True` and k=1 the weight is exactly 1, so the
  LM loss gives the router no gradient: train it with an auxiliary loss (load balance, router CE) in that case.
- labels: hard routing of token t to expert `route_labels[t]` with weight 1. A micro-batch whose tokens share one
  label is exactly one dense FFN call; mixed labels are gathered per expert. The router is still computed (its
  logits are stored for the router classification loss) but not used.
- classifier (if the block has one, in learned mode): a bias-free `Linear(D, 2)` in front of the router; tokens it
  classifies as class 0 ("old") go to expert 0 with weight 1, the rest use learned top-k. `classifier_mode=
  "sequence"` classifies whole sequences from the mean FFN input (the official LayerMoE code; breaks under KV-cached
  generation, so per-token is the default).

Frozen expert 0 (`frozen_expert0=True`): expert 0's weights are **buffers** (`<name>_frozen`, shape `[1, ...]`), the
trainable parameters hold experts 1..E-1. A buffer gets no gradient, no optimizer state and no weight decay, so
AdamW cannot move it whatever the trainer does; it is still saved in the state dict. The router row of expert 0
stays trainable (MoE-LPR trains routers).

After each forward the block stores a `RouterOutput` (router logits `[tokens, E]`, classifier logits, top-k
indices and weights); `router_outputs(model)` collects them from every MoE layer for the losses.

Dispatch: tokens are sorted by expert, then either `torch.nn.functional.grouped_mm` (one kernel per projection)
or a Python loop over experts runs them. `dispatch="auto"` (measured on CPU, benchmarks/results/moe_block.md)
uses grouped_mm when E > 4 and the mean group has < 512 token assignments (many small GEMMs), else the loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from langmoe.errors import LangmoeError

__all__ = [
    "MoEBlock",
    "RouterOutput",
    "RoutingState",
    "routing",
    "router_outputs",
    "moe_blocks",
    "GROUPED_MM_AVAILABLE",
    "LOOP_MAX_EXPERTS",
    "GROUPED_MAX_TOKENS_PER_EXPERT",
]

GROUPED_MM_AVAILABLE = hasattr(F, "grouped_mm")
LOOP_MAX_EXPERTS = 4  # auto dispatch: per-expert loop up to this many experts, grouped_mm above ...
GROUPED_MAX_TOKENS_PER_EXPERT = 512  # ... while the mean group is smaller than this (bigger groups: loop is faster)
_MODES = ("learned", "labels")


def _in_backward() -> bool:
    """True while autograd runs a backward pass (where checkpointing recomputes forwards)."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


@dataclass
class RouterOutput:
    """What one MoE layer's router did in the last forward (tensors keep their graph for the losses)."""

    layer: int
    logits: torch.Tensor  # [tokens, E] raw router logits (before any mask)
    classifier_logits: torch.Tensor | None  # [tokens, 2] (sequence mode: [batch, 2]) or None
    topk_idx: torch.Tensor  # [tokens, k] experts used (labels mode: [tokens, 1])
    topk_weight: torch.Tensor  # [tokens, k] combine weights
    num_experts: int
    mode: str = "learned"


@dataclass
class RoutingState:
    route_labels: torch.Tensor | None = None
    allowed: Mapping[int, torch.Tensor] | torch.Tensor | None = None
    mode: str = "learned"


class MoEBlock(nn.Module):
    """E copies of one FFN behind a router. Drop-in for a decoder layer's MLP (`forward(x[, residual])`)."""

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_experts: int,
        top_k: int = 2,
        *,
        gated: bool = True,
        act: nn.Module | None = None,
        bias_in: bool = False,
        bias_out: bool = False,
        renormalize: bool = True,
        frozen_expert0: bool = False,
        classifier: bool = False,
        classifier_mode: str = "token",
        dropout: float = 0.0,
        residual_in_mlp: bool = False,
        layer_idx: int = -1,
        dispatch: str = "auto",
    ):
        super().__init__()
        if num_experts < 1:
            raise LangmoeError(f"num_experts must be >= 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise LangmoeError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        if frozen_expert0 and num_experts < 2:
            raise LangmoeError("frozen_expert0 needs at least 2 experts (expert 0 frozen + 1 trainable)")
        if classifier_mode not in ("token", "sequence"):
            raise LangmoeError(f"classifier_mode must be 'token' or 'sequence', got {classifier_mode!r}")
        if dispatch not in ("auto", "loop", "grouped"):
            raise LangmoeError(f"dispatch must be auto|loop|grouped, got {dispatch!r}")
        self.hidden_size, self.intermediate_size = hidden_size, intermediate_size
        self.top_k, self.gated, self.renormalize = top_k, gated, renormalize
        self.frozen_expert0, self.classifier_mode = frozen_expert0, classifier_mode
        self.dropout_p, self.residual_in_mlp, self.layer_idx, self.dispatch = (
            dropout, residual_in_mlp, layer_idx, dispatch,
        )
        self.act = act if act is not None else nn.SiLU()
        D, Fi = hidden_size, intermediate_size
        shapes = {"w_out": (Fi, D)}
        if gated:
            shapes |= {"w_gate": (D, Fi), "w_up": (D, Fi)}
            if bias_in:
                shapes |= {"b_gate": (Fi,), "b_up": (Fi,)}
        else:
            shapes |= {"w_in": (D, Fi)}
            if bias_in:
                shapes["b_in"] = (Fi,)
        if bias_out:
            shapes["b_out"] = (D,)
        self._weight_names = tuple(sorted(shapes))
        n_train = num_experts - 1 if frozen_expert0 else num_experts
        for name, shp in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(n_train, *shp)))
            if frozen_expert0:
                self.register_buffer(f"{name}_frozen", torch.zeros(1, *shp))
        self.router = nn.Linear(D, num_experts, bias=False)
        nn.init.normal_(self.router.weight, std=0.02)
        self.classifier = nn.Linear(D, 2, bias=False) if classifier else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.02)
        self._state: RoutingState | None = None
        self._forward_state: RoutingState | None = None
        self.last_router_output: RouterOutput | None = None

    # ------------------------------------------------------------------ weights
    @property
    def num_experts(self) -> int:
        return self.router.out_features

    def weight(self, name: str) -> torch.Tensor:
        """The full `[E, ...]` tensor of one weight (frozen expert 0 concatenated in front)."""
        w = getattr(self, name)
        if self.frozen_expert0:
            return torch.cat([getattr(self, f"{name}_frozen").to(w.dtype), w], dim=0)
        return w

    def _expert_w(self, name: str, e: int) -> torch.Tensor | None:
        if name not in self._weight_names:
            return None
        if self.frozen_expert0:
            return getattr(self, f"{name}_frozen")[0] if e == 0 else getattr(self, name)[e - 1]
        return getattr(self, name)[e]

    @torch.no_grad()
    def load_ffn(self, ffn, experts: Iterable[int] | None = None) -> None:
        """Copy a dense FFN (`adapters.FFNWeights`) into the given experts (default: all)."""
        if ffn.gated != self.gated:
            raise LangmoeError("FFN kind (gated / non-gated) does not match the MoE block")
        for e in range(self.num_experts) if experts is None else experts:
            for name in self._weight_names:
                src = getattr(ffn, name)
                if src is None:
                    raise LangmoeError(f"FFN has no {name} but the MoE block expects it")
                self._expert_w(name, e).copy_(src)

    @torch.no_grad()
    def add_expert(self, source_expert: int) -> int:
        """Append a copy of `source_expert` (weights and router row); returns the new expert's index.

        Parameters are replaced by larger ones, so build the optimizer after calling this.
        """
        E = self.num_experts
        if not 0 <= source_expert < E:
            raise LangmoeError(f"source_expert must be in [0, {E}), got {source_expert}")
        for name in self._weight_names:
            old = getattr(self, name)
            src = self._expert_w(name, source_expert).unsqueeze(0)
            new = nn.Parameter(torch.cat([old.detach(), src.to(old.dtype)], dim=0), requires_grad=old.requires_grad)
            setattr(self, name, new)
        old_r = self.router
        router = nn.Linear(self.hidden_size, E + 1, bias=False, device=old_r.weight.device, dtype=old_r.weight.dtype)
        router.weight.copy_(torch.cat([old_r.weight, old_r.weight[source_expert : source_expert + 1]], dim=0))
        router.weight.requires_grad_(old_r.weight.requires_grad)
        self.router = router
        return E

    @torch.no_grad()
    def init_router_centroids(self, centroids: torch.Tensor) -> None:
        """Router rows = L2-normalised centroids `[E, D]` (mean FFN-input state of each group's calibration text)."""
        if tuple(centroids.shape) != (self.num_experts, self.hidden_size):
            raise LangmoeError(
                f"layer {self.layer_idx}: centroids must have shape [{self.num_experts}, {self.hidden_size}], "
                f"got {list(centroids.shape)}"
            )
        c = centroids.to(self.router.weight)
        self.router.weight.copy_(c / c.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    # ------------------------------------------------------------------ experts
    def _unbound(self) -> dict[str, tuple[torch.Tensor, ...]]:
        """Per-expert views of every weight from one `unbind` per tensor: its backward writes the fused gradient
        once, where indexing `w[e]` per expert would allocate and fill a full-size gradient per expert."""
        out = {}
        for name in self._weight_names:
            w = getattr(self, name).unbind(0)
            out[name] = (getattr(self, f"{name}_frozen")[0], *w) if self.frozen_expert0 else w
        return out

    def expert_forward(self, x: torch.Tensor, e: int, weights: dict | None = None) -> torch.Tensor:
        """One expert as a dense FFN on `x [N, D]` (the label path and the loop dispatch)."""
        if weights is None:
            def w(name, i):
                return self._expert_w(name, i)
        else:
            def w(name, i):
                return weights[name][i]
        if self.gated:
            g, u = x @ w("w_gate", e), x @ w("w_up", e)
            if "b_gate" in self._weight_names:
                g, u = g + w("b_gate", e), u + w("b_up", e)
            h = self.act(g) * u
        else:
            h = x @ w("w_in", e)
            if "b_in" in self._weight_names:
                h = h + w("b_in", e)
            h = self.act(h)
        y = h @ w("w_out", e)
        if "b_out" in self._weight_names:
            y = y + w("b_out", e)
        return y

    def _use_grouped(self, x: torch.Tensor, n_assign: int) -> bool:
        if self.dispatch == "loop" or not GROUPED_MM_AVAILABLE:
            return False
        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        align = 16 // dtype.itemsize  # grouped_mm needs strides that are multiples of 16 bytes
        shapes_ok = self.hidden_size % align == 0 and self.intermediate_size % align == 0
        if self.dispatch == "grouped":
            if not shapes_ok:
                raise LangmoeError(
                    f"grouped dispatch needs hidden/intermediate sizes divisible by {align}; use dispatch='loop'"
                )
            return True
        # auto, measured on CPU (benchmarks/results/moe_block.md): grouped_mm wins only with many small groups.
        # Not measured on GPUs, where grouped_mm wants bf16: the loop is the safe default there (force "grouped").
        return (
            shapes_ok
            and dev == "cpu"
            and self.num_experts > LOOP_MAX_EXPERTS
            and n_assign / self.num_experts < GROUPED_MAX_TOKENS_PER_EXPERT
        )

    def _grouped_ffn(self, xs: torch.Tensor, offs: torch.Tensor, sorted_e: torch.Tensor) -> torch.Tensor:
        dev = xs.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else xs.dtype
        xs = xs.to(dtype)

        def W(name):
            return self.weight(name).to(dtype)

        def B(name):
            return self.weight(name).to(dtype)[sorted_e] if name in self._weight_names else None

        with torch.autocast(dev, enabled=False):
            if self.gated:
                g = F.grouped_mm(xs, W("w_gate"), offs=offs)
                u = F.grouped_mm(xs, W("w_up"), offs=offs)
                if (b := B("b_gate")) is not None:
                    g, u = g + b, u + B("b_up")
                h = self.act(g) * u
            else:
                h = F.grouped_mm(xs, W("w_in"), offs=offs)
                if (b := B("b_in")) is not None:
                    h = h + b
                h = self.act(h)
            y = F.grouped_mm(h.contiguous(), W("w_out"), offs=offs)
            if (b := B("b_out")) is not None:
                y = y + b
        return y

    def _dispatch(self, h: torch.Tensor, idx: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        """Combine `sum_j w[t,j] * expert_{idx[t,j]}(h[t])`; `w=None` means weight 1 (hard routing)."""
        N, k = idx.shape
        E = self.num_experts
        if k == 1:
            first = idx[0, 0]
            if bool((idx == first).all()):  # one expert for every token: a single dense FFN call
                y = self.expert_forward(h, int(first))
                return y if w is None else y * w.to(y.dtype)
        flat_e = idx.reshape(-1)
        order = torch.argsort(flat_e, stable=True)
        sorted_e = flat_e[order]
        sorted_tok = torch.div(order, k, rounding_mode="floor")
        counts = torch.bincount(flat_e, minlength=E)
        xs = h[sorted_tok]
        if self._use_grouped(h, flat_e.numel()):
            offs = torch.cumsum(counts, 0).to(torch.int32)
            ys = self._grouped_ffn(xs, offs, sorted_e)
        else:
            parts, start = [], 0
            weights = self._unbound()
            for e, c in enumerate(counts.tolist()):
                if c:
                    parts.append(self.expert_forward(xs[start : start + c], e, weights))
                    start += c
            ys = torch.cat(parts, dim=0)
        if w is not None:
            ys = ys * w.reshape(-1)[order].to(ys.dtype).unsqueeze(-1)
        out = torch.zeros(N, ys.shape[-1], dtype=ys.dtype, device=ys.device)
        return out.index_add(0, sorted_tok, ys)

    # ------------------------------------------------------------------ routing
    def _allowed_mask(self, state: RoutingState) -> torch.Tensor | None:
        allowed = state.allowed
        if allowed is None:
            return None
        if isinstance(allowed, Mapping):
            allowed = allowed.get(self.layer_idx)
            if allowed is None:
                return None
        return allowed

    def _routing_state(self) -> tuple[RoutingState, bool]:
        """The state for this call. A forward run *inside backward* is gradient checkpointing recomputing the
        layer, usually after the `routing` context has exited: it reuses the state of the original forward so
        the recomputed routing (and thus the gradient) is the same."""
        in_backward = _in_backward()
        if in_backward and self._forward_state is not None:
            return self._forward_state, True
        state = self._state or RoutingState()
        self._forward_state = state
        return state, in_backward

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        state, recompute = self._routing_state()
        shape = hidden_states.shape
        h = hidden_states.reshape(-1, self.hidden_size)
        N = h.shape[0]
        logits = self.router(h)
        cls_logits = None
        if state.mode == "labels":
            labels = state.route_labels
            if labels is None:
                raise LangmoeError("routing mode 'labels' needs route_labels")
            labels = labels.reshape(-1).to(h.device)
            if labels.numel() != N:
                raise LangmoeError(
                    f"route_labels has {labels.numel()} entries but the batch has {N} tokens (shape {list(shape)})"
                )
            if bool(((labels < 0) | (labels >= self.num_experts)).any()):
                raise LangmoeError(
                    f"layer {self.layer_idx}: route_labels must be in [0, {self.num_experts}) in hard routing"
                )
            idx = labels.unsqueeze(-1)
            weights = torch.ones(N, 1, dtype=h.dtype, device=h.device)
            y = self._dispatch(h, idx, None)
        else:
            masked = logits
            k = self.top_k
            mask = self._allowed_mask(state)
            if mask is not None:
                mask = mask.to(h.device)
                masked = logits.masked_fill(~mask, float("-inf"))
                k = min(k, int(mask.sum()))
            probs = torch.softmax(masked.float(), dim=-1)
            weights, idx = probs.topk(k, dim=-1)
            if self.renormalize:
                weights = weights / weights.sum(dim=-1, keepdim=True)
            if self.classifier is not None:
                if self.classifier_mode == "sequence":
                    x3 = hidden_states if hidden_states.dim() == 3 else hidden_states.reshape(1, -1, self.hidden_size)
                    cls_logits = self.classifier(x3.mean(dim=1))  # [B, 2]
                    old = (cls_logits.argmax(-1) == 0).repeat_interleave(x3.shape[1])
                else:
                    cls_logits = self.classifier(h)
                    old = cls_logits.argmax(-1) == 0
                old = old.unsqueeze(-1)
                idx = torch.where(old, torch.zeros_like(idx), idx)
                one_hot0 = torch.zeros_like(weights)
                one_hot0[:, 0] = 1.0
                weights = torch.where(old, one_hot0, weights)
            weights = weights.to(h.dtype)
            y = self._dispatch(h, idx, weights)
        if not recompute:
            self.last_router_output = RouterOutput(
                self.layer_idx, logits, cls_logits, idx, weights, self.num_experts, state.mode
            )
        y = y.reshape(*shape[:-1], y.shape[-1]).to(hidden_states.dtype)
        if self.dropout_p:
            y = F.dropout(y, self.dropout_p, self.training)
        if self.residual_in_mlp:
            if residual is None:
                raise LangmoeError("this MoE block replaces a BLOOM MLP and needs the residual")
            y = y + residual
        return y

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer_idx}, experts={self.num_experts}, top_k={self.top_k}, gated={self.gated}, "
            f"hidden={self.hidden_size}, intermediate={self.intermediate_size}, frozen_expert0={self.frozen_expert0}, "
            f"classifier={self.classifier is not None}"
        )


def moe_blocks(model: nn.Module) -> list[MoEBlock]:
    """Every MoE block of a model, in layer order."""
    return sorted((m for m in model.modules() if isinstance(m, MoEBlock)), key=lambda m: m.layer_idx)


def router_outputs(model: nn.Module) -> list[RouterOutput]:
    """The router outputs of the last forward, one per MoE layer (layer order)."""
    return [m.last_router_output for m in moe_blocks(model) if m.last_router_output is not None]


def _to_mask(spec, num_experts: int, layer: int) -> torch.Tensor:
    if isinstance(spec, torch.Tensor) and spec.dtype == torch.bool:
        if spec.numel() != num_experts:
            raise LangmoeError(f"layer {layer}: allowed-experts mask has {spec.numel()} entries, need {num_experts}")
        mask = spec.reshape(-1).clone()
    else:
        ids = [int(i) for i in (spec.tolist() if isinstance(spec, torch.Tensor) else spec)]
        bad = [i for i in ids if not 0 <= i < num_experts]
        if bad:
            raise LangmoeError(f"layer {layer}: allowed experts {bad} out of range [0, {num_experts})")
        mask = torch.zeros(num_experts, dtype=torch.bool)
        mask[ids] = True
    if not bool(mask.any()):
        raise LangmoeError(f"layer {layer}: allowed_experts allows no expert")
    return mask


@contextmanager
def routing(
    model: nn.Module,
    route_labels: torch.Tensor | None = None,
    allowed_experts=None,
    mode: str | None = None,
) -> Iterator[None]:
    """Set the routing of every MoE block for the forwards inside the `with` (restored on exit, nestable).

    route_labels: LongTensor shaped like input_ids, expert per token (hard routing; implies mode='labels').
    allowed_experts: experts the learned router may pick; either one spec for all MoE layers or
        `{layer_idx: spec}` (layers not named are unrestricted). A spec is a list of expert ids or a bool mask [E].
    mode: 'learned' | 'labels' (default: 'labels' when route_labels is given, else 'learned').
    """
    blocks = moe_blocks(model)
    if mode is None:
        mode = "labels" if route_labels is not None else "learned"
    if mode not in _MODES:
        raise LangmoeError(f"routing mode must be one of {', '.join(_MODES)}, got {mode!r}")
    if mode == "labels" and route_labels is None:
        raise LangmoeError("routing mode 'labels' needs route_labels")
    masks: dict[int, torch.Tensor] = {}
    if allowed_experts is not None:
        per_layer = isinstance(allowed_experts, Mapping)
        layer_ids = {b.layer_idx for b in blocks}
        if per_layer:
            unknown = sorted(set(allowed_experts) - layer_ids)
            if unknown:
                raise LangmoeError(f"allowed_experts names layers {unknown} that are not MoE layers {sorted(layer_ids)}")
        for b in blocks:
            spec = allowed_experts.get(b.layer_idx) if per_layer else allowed_experts
            if spec is not None:
                masks[b.layer_idx] = _to_mask(spec, b.num_experts, b.layer_idx)
    previous = [b._state for b in blocks]
    state = RoutingState(route_labels=route_labels, allowed=masks or None, mode=mode)
    for b in blocks:
        b._state = state
    try:
        yield
    finally:
        for b, s in zip(blocks, previous, strict=True):
            b._state = s
