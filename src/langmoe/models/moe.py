"""The MoE block that replaces a decoder layer's FFN, built from small parts: a router and a set of experts.

Parts (each an `nn.Module`, composed by `MoEBlock(router, experts)` or the `build_moe_block` shortcut):

- `GatedExperts`: E gated FFNs `act(x Wg^T) * (x Wu^T) Wd^T` in transformers' fused layout (Qwen2/3-MoE, Mixtral,
  OLMoE): `gate_up_proj [E, 2F, D]` (gate rows first, then up), `down_proj [E, D, F]`, optional biases
  `gate_up_proj_bias [E, 2F]`, `down_proj_bias [E, D]` (GPT-OSS names). Because the names and layout are the stock
  ones, peft's `LoraConfig(target_parameters=["experts.gate_up_proj", "experts.down_proj"])` works on them.
- `LinearExperts`: E non-gated FFNs (GPT-2, BLOOM) `act(x Wu^T + bu) Wd^T + bd`: `up_proj [E, F, D]`,
  `down_proj [E, D, F]`, `up_proj_bias [E, F]`, `down_proj_bias [E, D]`.
- `FrozenExpert0(experts)`: expert 0 held as **buffers** (`frozen.*`, one expert), experts 1..E-1 trainable
  (`trainable.*`). A buffer gets no gradient, no optimizer state and no weight decay, so AdamW cannot move it
  whatever the trainer does; it is still saved in the state dict. Each part runs in its own forward (so peft's
  LoRA on the trainable part applies).
- `TopKRouter`: bias-free linear router `weight [E, D]` (the stock router's name): linear -> softmax -> top-k,
  renormalised (option off), as transformers' MoE blocks route; optional allowed-expert masks before the softmax.
  With `renormalize=True` and k=1 the weight is exactly 1, so the LM loss gives the router no gradient: train it
  with an auxiliary loss (load balance, router CE) in that case. It returns `(logits, topk_weight, topk_idx, ...)`
  like the stock routers, which is what `RouterRecorder` reads.
- `RouteOverride`: the router's override slot, for what a method changes about the learned top-k. The types live
  in `langmoe.models.overrides`, each in its own module: hard routing by labels (per call, `routing.routing`), the
  LayerMoE old/new classifier, DMoE's language gate. The router asks its override which experts the learned top-k
  may use and for the final decision; saving and generation ask it what it needs (`needs_full_prefix`).

Router outputs are not kept on the block: `RouterRecorder` (forward hooks on the routers) captures them, and
`router_recorder.router_outputs(model)` reads the recorder that `attach_router_recorder` installs (upcycle and
the loader do).

Dispatch: tokens are sorted by expert, then either `torch.nn.functional.grouped_mm` (one kernel per projection)
or a Python loop over experts runs them. `dispatch="auto"` (measured on CPU, benchmarks/results/moe_block.md)
uses grouped_mm when E > 4 and the mean group has < 512 token assignments (many small GEMMs), else the loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.ffn import FFNWeights

__all__ = [
    "GatedExperts",
    "LinearExperts",
    "FrozenExpert0",
    "TopKRouter",
    "RouteOverride",
    "RouterDecision",
    "RoutingState",
    "MoEBlock",
    "build_moe_block",
    "moe_blocks",
    "needs_full_prefix",
    "is_expert_param",
    "in_backward",
    "EXPERT_PARAM_NAMES",
    "GROUPED_MM_AVAILABLE",
    "LOOP_MAX_EXPERTS",
    "GROUPED_MAX_TOKENS_PER_EXPERT",
]

GROUPED_MM_AVAILABLE = hasattr(F, "grouped_mm")
LOOP_MAX_EXPERTS = 4  # auto dispatch: per-expert loop up to this many experts, grouped_mm above ...
GROUPED_MAX_TOKENS_PER_EXPERT = 512  # ... while the mean group is smaller than this (bigger groups: loop is faster)
EXPERT_PARAM_NAMES = ("gate_up_proj", "up_proj", "down_proj", "gate_up_proj_bias", "up_proj_bias", "down_proj_bias")


def is_expert_param(name: str) -> bool:
    """True for a fused expert tensor's state-dict / parameter name (`...experts.gate_up_proj` etc.)."""
    return ".experts." in f".{name}" and name.rsplit(".", 1)[-1] in EXPERT_PARAM_NAMES


def in_backward() -> bool:
    """True while autograd runs a backward pass (where checkpointing recomputes forwards)."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


# ====================================================================== experts
class _FusedExperts(nn.Module):
    """Shared dispatch of E FFNs stored as fused `[E, out, in]` tensors (`y = x @ W[e].T`, as `F.linear`)."""

    _IN: tuple[str, ...] = ()  # names of the input projections (one fused tensor)

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, act=None, *,
                 bias_in: bool = False, bias_out: bool = False, dispatch: str = "auto"):
        super().__init__()
        if num_experts < 1:
            raise LangmoeError(f"num_experts must be >= 1, got {num_experts}")
        if dispatch not in ("auto", "loop", "grouped"):
            raise LangmoeError(f"dispatch must be auto|loop|grouped, got {dispatch!r}")
        self.hidden_size, self.intermediate_size, self.dispatch = hidden_size, intermediate_size, dispatch
        self.act_fn = act if act is not None else nn.SiLU()
        shapes = self._shapes(bias_in, bias_out)
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(num_experts, *shape)))
        # fixed names: peft's parametrization moves a targeted parameter out of `_parameters`
        self._tensor_names = tuple(n for n in EXPERT_PARAM_NAMES if n in shapes)

    def _shapes(self, bias_in: bool, bias_out: bool) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    @property
    def tensor_names(self) -> tuple[str, ...]:
        return self._tensor_names

    @property
    def num_experts(self) -> int:
        return self.down_proj.shape[0]

    @property
    def params_per_expert(self) -> int:
        return sum(getattr(self, n)[0].numel() for n in self.tensor_names)

    def full_tensors(self) -> dict[str, torch.Tensor]:
        """Every fused tensor `[E, ...]` (stock layout), as stored."""
        return {n: getattr(self, n) for n in self.tensor_names}

    # --- one expert
    def _hidden(self, x: torch.Tensor, w: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def expert_forward(self, x: torch.Tensor, e: int, weights: Mapping[str, tuple] | None = None) -> torch.Tensor:
        """Expert `e` as a dense FFN on `x [N, D]` (the label path and the loop dispatch)."""
        if weights is None:
            w = {n: getattr(self, n)[e] for n in self.tensor_names}
        else:
            w = {n: t[e] for n, t in weights.items()}
        y = F.linear(self._hidden(x, w), w["down_proj"])
        if "down_proj_bias" in w:
            y = y + w["down_proj_bias"]
        return y

    # --- many experts
    def _use_grouped(self, x: torch.Tensor, n_assign: int) -> bool:
        if self.dispatch == "loop" or not GROUPED_MM_AVAILABLE:
            return False
        align = 16 // _compute_dtype(x).itemsize  # grouped_mm needs strides that are multiples of 16 bytes
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
            and x.device.type == "cpu"
            and self.num_experts > LOOP_MAX_EXPERTS
            and n_assign / self.num_experts < GROUPED_MAX_TOKENS_PER_EXPERT
        )

    def _grouped(self, xs: torch.Tensor, offs: torch.Tensor, sorted_e: torch.Tensor) -> torch.Tensor:
        dev = xs.device.type
        dtype = _compute_dtype(xs)
        full = {n: t.to(dtype) for n, t in self.full_tensors().items()}
        with torch.autocast(dev, enabled=False):
            h = F.grouped_mm(xs.to(dtype), full[self._IN[0]].transpose(1, 2), offs=offs)
            if (b := full.get(self._IN[0] + "_bias")) is not None:
                h = h + b[sorted_e]
            h = self._activate(h)
            y = F.grouped_mm(h.contiguous(), full["down_proj"].transpose(1, 2), offs=offs)
            if (b := full.get("down_proj_bias")) is not None:
                y = y + b[sorted_e]
        return y

    def _activate(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """`sum_j weights[t,j] * expert_{idx[t,j]}(x[t])` for `x [N, D]`, `idx [N, k]`; `weights=None` means 1
        (hard routing). Entries of `idx` outside `[0, E)` are skipped (another part of the block owns them)."""
        N, k = idx.shape
        E = self.num_experts
        if k == 1 and N:
            first = int(idx[0, 0])
            if bool((idx == first).all()):  # one expert for every token: a single dense FFN call
                if not 0 <= first < E:
                    return x.new_zeros(N, self.hidden_size)
                y = self.expert_forward(x, first)
                return y if weights is None else y * weights.to(y.dtype)
        flat_e = idx.reshape(-1)
        pos = ((flat_e >= 0) & (flat_e < E)).nonzero().squeeze(-1)
        chosen = flat_e[pos]
        order = torch.argsort(chosen, stable=True)
        sorted_pos, sorted_e = pos[order], chosen[order]
        sorted_tok = torch.div(sorted_pos, k, rounding_mode="floor")
        counts = torch.bincount(chosen, minlength=E)
        xs = x[sorted_tok]
        if self._use_grouped(x, chosen.numel()):
            ys = self._grouped(xs, torch.cumsum(counts, 0).to(torch.int32), sorted_e)
        else:
            # one `unbind` per tensor: its backward writes the fused gradient once, where indexing `w[e]` per
            # expert would allocate and fill a full-size gradient per expert
            per = {n: t.unbind(0) for n, t in self.full_tensors().items()}
            parts, start = [], 0
            for e, c in enumerate(counts.tolist()):
                if c:
                    parts.append(self.expert_forward(xs[start : start + c], e, per))
                    start += c
            ys = torch.cat(parts, dim=0) if parts else x.new_zeros(0, self.hidden_size)
        if weights is not None:
            ys = ys * weights.reshape(-1)[sorted_pos].to(ys.dtype).unsqueeze(-1)
        out = torch.zeros(N, self.hidden_size, dtype=ys.dtype, device=ys.device)
        return out.index_add(0, sorted_tok, ys)

    # --- weights in the canonical layout of `ffn.FFNWeights`
    def ffn(self, e: int):
        """Expert `e` as `ffn.FFNWeights` (input-major **views**: in-place edits change the expert)."""
        raise NotImplementedError

    @torch.no_grad()
    def load_ffn(self, ffn, experts: Iterable[int] | None = None) -> None:
        """Copy a dense FFN (`ffn.FFNWeights`) into the given experts (default: all)."""
        for e in range(self.num_experts) if experts is None else experts:
            dst = self.ffn(e)
            for name in ("w_gate", "w_up", "w_in", "w_out", "b_gate", "b_up", "b_in", "b_out"):
                d, s = getattr(dst, name), getattr(ffn, name)
                if (d is None) != (s is None):
                    raise LangmoeError(f"FFN {name} is {'missing' if s is None else 'unexpected'} for these experts")
                if d is not None:
                    d.copy_(s)

    @torch.no_grad()
    def append_expert(self, source: dict[str, torch.Tensor]) -> None:
        """Append one expert (`{name: tensor}` without the expert dim); parameters are replaced by larger ones."""
        for n in self.tensor_names:
            old = getattr(self, n)
            new = torch.cat([old.detach(), source[n].unsqueeze(0).to(old)], dim=0)
            setattr(self, n, nn.Parameter(new, requires_grad=old.requires_grad))

    def expert_tensors(self, e: int) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n)[e] for n in self.tensor_names}

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, hidden={self.hidden_size}, intermediate={self.intermediate_size}"


class GatedExperts(_FusedExperts):
    """E gated FFNs; stock names/layout: `gate_up_proj [E, 2F, D]`, `down_proj [E, D, F]` (+ optional biases)."""

    _IN = ("gate_up_proj",)
    gated = True

    def _shapes(self, bias_in, bias_out):
        D, Fi = self.hidden_size, self.intermediate_size
        s = {"gate_up_proj": (2 * Fi, D), "down_proj": (D, Fi)}
        if bias_in:
            s["gate_up_proj_bias"] = (2 * Fi,)
        if bias_out:
            s["down_proj_bias"] = (D,)
        return s

    def _activate(self, h):
        g, u = h.chunk(2, dim=-1)
        return self.act_fn(g) * u

    def _hidden(self, x, w):
        h = F.linear(x, w["gate_up_proj"])
        if "gate_up_proj_bias" in w:
            h = h + w["gate_up_proj_bias"]
        return self._activate(h)

    def ffn(self, e):
        Fi = self.intermediate_size
        gu, d = self.gate_up_proj[e], self.down_proj[e]
        gub = getattr(self, "gate_up_proj_bias", None)
        db = getattr(self, "down_proj_bias", None)
        return FFNWeights(
            gated=True, act=self.act_fn, w_gate=gu[:Fi].T, w_up=gu[Fi:].T, w_out=d.T,
            b_gate=None if gub is None else gub[e, :Fi], b_up=None if gub is None else gub[e, Fi:],
            b_out=None if db is None else db[e],
        )


class LinearExperts(_FusedExperts):
    """E non-gated FFNs (GPT-2, BLOOM): `up_proj [E, F, D]`, `down_proj [E, D, F]` (+ optional biases)."""

    _IN = ("up_proj",)
    gated = False

    def _shapes(self, bias_in, bias_out):
        D, Fi = self.hidden_size, self.intermediate_size
        s = {"up_proj": (Fi, D), "down_proj": (D, Fi)}
        if bias_in:
            s["up_proj_bias"] = (Fi,)
        if bias_out:
            s["down_proj_bias"] = (D,)
        return s

    def _activate(self, h):
        return self.act_fn(h)

    def _hidden(self, x, w):
        h = F.linear(x, w["up_proj"])
        if "up_proj_bias" in w:
            h = h + w["up_proj_bias"]
        return self._activate(h)

    def ffn(self, e):
        ub = getattr(self, "up_proj_bias", None)
        db = getattr(self, "down_proj_bias", None)
        return FFNWeights(
            gated=False, act=self.act_fn, w_in=self.up_proj[e].T, w_out=self.down_proj[e].T,
            b_in=None if ub is None else ub[e], b_out=None if db is None else db[e],
        )


def _as_buffers(module: _FusedExperts) -> _FusedExperts:
    """Turn every fused tensor of `module` into a buffer (no gradient, no optimizer state, still saved)."""
    for n in module.tensor_names:
        t = module._parameters.pop(n).detach()
        module.register_buffer(n, t)
    return module


class FrozenExpert0(nn.Module):
    """Experts whose expert 0 is frozen: `frozen` (1 expert, buffers) + `trainable` (experts 1..E-1).

    Wraps a trainable experts module of E-1 experts; the frozen copy has the same class and layout.
    """

    def __init__(self, trainable: _FusedExperts, frozen: _FusedExperts | None = None):
        super().__init__()
        if frozen is None:
            frozen = type(trainable)(
                1, trainable.hidden_size, trainable.intermediate_size, trainable.act_fn,
                bias_in=trainable._IN[0] + "_bias" in trainable.tensor_names,
                bias_out="down_proj_bias" in trainable.tensor_names, dispatch=trainable.dispatch,
            ).to(device=trainable.down_proj.device, dtype=trainable.down_proj.dtype)
        if frozen.num_experts != 1:
            raise LangmoeError("FrozenExpert0 holds exactly one frozen expert")
        self.frozen = _as_buffers(frozen)
        self.trainable = trainable

    @property
    def _trainable(self) -> _FusedExperts:
        """The trainable part itself (peft may wrap it for LoRA; its forward is still called through the wrapper)."""
        return _unwrapped(self.trainable)

    @property
    def gated(self) -> bool:
        return self.frozen.gated

    @property
    def hidden_size(self) -> int:
        return self.frozen.hidden_size

    @property
    def intermediate_size(self) -> int:
        return self.frozen.intermediate_size

    @property
    def act_fn(self):
        return self.frozen.act_fn

    @property
    def dispatch(self) -> str:
        return self._trainable.dispatch

    @property
    def tensor_names(self) -> tuple[str, ...]:
        return self.frozen.tensor_names

    @property
    def num_experts(self) -> int:
        return 1 + self._trainable.num_experts

    @property
    def params_per_expert(self) -> int:
        return self.frozen.params_per_expert

    @property
    def frozen_numel(self) -> int:
        return sum(b.numel() for b in self.frozen.buffers())

    def full_tensors(self) -> dict[str, torch.Tensor]:
        f, t = self.frozen.full_tensors(), self._trainable.full_tensors()
        return {n: torch.cat([f[n].to(t[n].dtype), t[n]], dim=0) for n in f}

    def _part(self, e: int) -> tuple[_FusedExperts, int]:
        return (self.frozen, 0) if e == 0 else (self._trainable, e - 1)

    def expert_forward(self, x: torch.Tensor, e: int, weights=None) -> torch.Tensor:
        part, i = self._part(e)
        return part.expert_forward(x, i)

    def forward(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        y0 = self.frozen(x, torch.where(idx == 0, idx, -1), weights)  # -1: skipped by that part
        y1 = self.trainable(x, idx - 1, weights)  # expert 0 becomes -1: skipped
        return y0 + y1

    def ffn(self, e: int):
        part, i = self._part(e)
        return part.ffn(i)

    @torch.no_grad()
    def load_ffn(self, ffn, experts: Iterable[int] | None = None) -> None:
        for e in range(self.num_experts) if experts is None else experts:
            part, i = self._part(e)
            part.load_ffn(ffn, [i])

    def expert_tensors(self, e: int) -> dict[str, torch.Tensor]:
        part, i = self._part(e)
        return part.expert_tensors(i)

    @torch.no_grad()
    def append_expert(self, source: dict[str, torch.Tensor]) -> None:
        self._trainable.append_expert(source)


# ====================================================================== router
class RouterDecision(NamedTuple):
    """What a router returns; the first three fields are the stock routers' `(logits, scores, indices)`."""

    logits: torch.Tensor  # [tokens, E] raw router logits (before any mask)
    topk_weight: torch.Tensor  # [tokens, k] combine weights
    topk_idx: torch.Tensor  # [tokens, k] experts used (labels mode: [tokens, 1])
    mode: str = "learned"  # "labels": hard routing, the experts' outputs are not weighted
    recompute: bool = False  # a gradient-checkpointing recompute (recorders skip it)
    override: str | None = None  # kind of the router's own route override (RouteOverride.kind), if it has one
    override_logits: torch.Tensor | None = None  # that override's logits (its loss reads them), or None


class RouteOverride(nn.Module):
    """The router's override slot: what a method changes about the learned top-k, in its own module
    (`langmoe.models.overrides`: label routing, the LayerMoE classifier, DMoE's language gate).

    A router asks its override two things per forward: `allowed()`, the experts the learned top-k may pick (None:
    all), and `route(hidden_states, decision)`, the final decision from the learned one. Saving and generation
    ask it what it needs: `kind` and `spec()` (its entry in the saved structure; a per-call override has no kind
    and is never saved), `needs_full_prefix` (it reads earlier positions, so generation cannot use a KV cache),
    `export_refusal` (why a stock MoE router cannot express it).
    """

    kind: ClassVar[str | None] = None
    decision_mode: ClassVar[str] = "learned"  # the RouterDecision.mode it produces ("labels": hard routing)
    export_refusal: ClassVar[str] = "has a route override: stock MoE routers cannot express it"

    @property
    def needs_full_prefix(self) -> bool:
        return False

    def allowed(self, num_experts: int, device: torch.device) -> torch.Tensor | None:
        """Bool `[E]` mask of the experts the learned top-k may pick, or None (all)."""
        return None

    def route(self, hidden_states: torch.Tensor, decision: RouterDecision) -> RouterDecision:
        """The final decision, given the learned one (weights still float32 here)."""
        return decision

    def spec(self) -> dict[str, Any]:
        """This override's entry in the saved MoE structure (`{"kind": ..., ...}`)."""
        raise LangmoeError(f"{type(self).__name__} is a per-call override: it is not saved with the model")

    def expert_appended(self, expert: int) -> None:
        """The router got one more expert (`expert`, the last); refuse when this override cannot take it."""

    @staticmethod
    def send_alone(decision: RouterDecision, rows: torch.Tensor, expert: torch.Tensor) -> RouterDecision:
        """The top-k slots of the tokens in `rows` (bool `[N]`) all set to `expert[t]` (`[N]`), weight 1 on the first
        slot and 0 on the others: such a token's output is that one expert's."""
        idx, weights = decision.topk_idx, decision.topk_weight
        rows = rows.unsqueeze(-1)
        one_hot = torch.zeros_like(weights)
        one_hot[:, 0] = 1.0
        return decision._replace(topk_idx=torch.where(rows, expert.unsqueeze(-1).expand_as(idx), idx),
                                 topk_weight=torch.where(rows, one_hot, weights))


@dataclass
class RoutingState:
    """Per-call routing (`langmoe.models.routing.routing`): allowed-expert masks and a per-call override."""

    allowed: Mapping[int, torch.Tensor] | torch.Tensor | None = None
    override: RouteOverride | None = None

    @property
    def mode(self) -> str:
        return self.override.decision_mode if self.override is not None else "learned"


class TopKRouter(nn.Module):
    """Bias-free linear router `weight [E, D]`: linear -> softmax -> top-k (renormalised), as transformers' MoE
    routers; an optional allowed-experts mask before the softmax and an optional `override` (see RouteOverride)."""

    def __init__(self, hidden_size: int, num_experts: int, top_k: int = 2, *, renormalize: bool = True,
                 override: RouteOverride | None = None, layer_idx: int = -1):
        super().__init__()
        if num_experts < 1:
            raise LangmoeError(f"num_experts must be >= 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise LangmoeError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.top_k, self.renormalize, self.layer_idx = top_k, renormalize, layer_idx
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))
        nn.init.normal_(self.weight, std=0.02)
        self.override = override
        self._state: RoutingState | None = None
        self._forward_state: RoutingState | None = None

    @property
    def num_experts(self) -> int:
        return self.weight.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.weight.shape[1]

    @property
    def needs_full_prefix(self) -> bool:
        """Whether this router reads earlier positions (its override says so): no KV cache in generation."""
        return self.override is not None and self.override.needs_full_prefix

    def _routing_state(self) -> tuple[RoutingState, bool]:
        """The state for this call. A forward run *inside backward* is gradient checkpointing recomputing the
        layer, usually after the `routing` context has exited: it reuses the state of the original forward so
        the recomputed routing (and thus the gradient) is the same."""
        recompute = in_backward()
        if recompute and self._forward_state is not None:
            return self._forward_state, True
        state = self._state or RoutingState()
        self._forward_state = state
        return state, recompute

    def _mask(self, state: RoutingState, overrides: list[RouteOverride], device: torch.device) -> torch.Tensor | None:
        """The allowed experts: the call's mask for this layer and every override's, combined."""
        mask = state.allowed.get(self.layer_idx) if isinstance(state.allowed, Mapping) else state.allowed
        mask = None if mask is None else mask.to(device)
        for o in overrides:
            own = o.allowed(self.num_experts, device)
            if own is not None:
                mask = own if mask is None else (mask & own)
                if not bool(mask.any()):
                    raise LangmoeError(f"layer {self.layer_idx}: the allowed experts leave no expert to the "
                                       f"learned routing under its {type(o).__name__}")
        return mask

    def forward(self, hidden_states: torch.Tensor) -> RouterDecision:
        state, recompute = self._routing_state()
        h = hidden_states.reshape(-1, self.hidden_size)
        overrides = [o for o in (self.override, state.override) if o is not None]  # the router's own, then the call's
        logits = F.linear(h, self.weight)
        masked, k = logits, self.top_k
        mask = self._mask(state, overrides, h.device)
        if mask is not None:
            masked = logits.masked_fill(~mask, float("-inf"))
            k = min(k, int(mask.sum()))
        probs = torch.softmax(masked.float(), dim=-1)
        weights, idx = probs.topk(k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        decision = RouterDecision(logits, weights, idx, recompute=recompute)
        for o in overrides:
            decision = o.route(hidden_states, decision)
        return decision._replace(topk_weight=decision.topk_weight.to(h.dtype))

    @torch.no_grad()
    def append_row(self, source_expert: int) -> None:
        """One more expert whose row copies `source_expert`'s (the parameter is replaced, the module kept)."""
        w = self.weight
        self.weight = nn.Parameter(torch.cat([w.detach(), w.detach()[source_expert : source_expert + 1]], dim=0),
                                   requires_grad=w.requires_grad)

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, top_k={self.top_k}, renormalize={self.renormalize}"


# ====================================================================== block
def _unwrapped(module: nn.Module) -> nn.Module:
    """The experts module itself, also when peft wrapped it (`ParamWrapper.get_base_layer()`)."""
    get = getattr(module, "get_base_layer", None)
    return get() if callable(get) else module


class MoEBlock(nn.Module):
    """A router and a set of experts; drop-in for a decoder layer's MLP (`forward(x[, residual])`)."""

    def __init__(self, router: TopKRouter, experts: nn.Module, *, layer_idx: int = -1, dropout: float = 0.0,
                 residual_in_mlp: bool = False):
        super().__init__()
        if router.num_experts != experts.num_experts:
            raise LangmoeError(f"router has {router.num_experts} experts but the expert set {experts.num_experts}")
        if router.hidden_size != experts.hidden_size:
            raise LangmoeError(f"router width {router.hidden_size} != expert width {experts.hidden_size}")
        self.router, self.experts = router, experts
        self.dropout_p, self.residual_in_mlp = dropout, residual_in_mlp
        self.layer_idx = layer_idx
        router.layer_idx = layer_idx

    # --- read-only views used across the code base
    @property
    def num_experts(self) -> int:
        return self.router.num_experts

    @property
    def top_k(self) -> int:
        return self.router.top_k

    @property
    def renormalize(self) -> bool:
        return self.router.renormalize

    @property
    def hidden_size(self) -> int:
        return _unwrapped(self.experts).hidden_size

    @property
    def intermediate_size(self) -> int:
        return _unwrapped(self.experts).intermediate_size

    @property
    def gated(self) -> bool:
        return _unwrapped(self.experts).gated

    @property
    def frozen_expert0(self) -> bool:
        return isinstance(_unwrapped(self.experts), FrozenExpert0)

    @property
    def override(self) -> RouteOverride | None:
        """The router's route override (None: plain learned top-k)."""
        return self.router.override

    @property
    def base_experts(self) -> nn.Module:
        """The experts module itself (unwrapped if peft wrapped it for LoRA)."""
        return _unwrapped(self.experts)

    @property
    def params_per_expert(self) -> int:
        return self.base_experts.params_per_expert

    @property
    def has_biases(self) -> bool:
        return any(n.endswith("_bias") for n in _unwrapped(self.experts).tensor_names)

    def expert_forward(self, x: torch.Tensor, e: int) -> torch.Tensor:
        return _unwrapped(self.experts).expert_forward(x, e)

    def load_ffn(self, ffn, experts: Iterable[int] | None = None) -> None:
        if ffn.gated != self.gated:
            raise LangmoeError("FFN kind (gated / non-gated) does not match the MoE block")
        _unwrapped(self.experts).load_ffn(ffn, experts)

    @torch.no_grad()
    def add_expert(self, source_expert: int) -> int:
        """Append a copy of `source_expert` (weights and router row); returns the new expert's index.

        Parameters are replaced by larger ones (modules and hooks are kept), so build the optimizer afterwards.
        """
        E = self.num_experts
        if not 0 <= source_expert < E:
            raise LangmoeError(f"source_expert must be in [0, {E}), got {source_expert}")
        experts = _unwrapped(self.experts)
        src = {n: t.detach().clone() for n, t in experts.expert_tensors(source_expert).items()}
        experts.append_expert(src)
        self.router.append_row(source_expert)
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

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        shape = hidden_states.shape
        h = hidden_states.reshape(-1, shape[-1])
        decision = self.router(hidden_states)
        w = None if decision.mode == "labels" else decision.topk_weight
        y = self.experts(h, decision.topk_idx, w)
        y = y.reshape(*shape[:-1], y.shape[-1]).to(hidden_states.dtype)
        if self.dropout_p:
            y = F.dropout(y, self.dropout_p, self.training)
        if self.residual_in_mlp:
            if residual is None:
                raise LangmoeError("this MoE block replaces a BLOOM MLP and needs the residual")
            y = y + residual
        return y

    def extra_repr(self) -> str:
        return f"layer={self.layer_idx}"


def build_moe_block(
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
    override: RouteOverride | None = None,
    dropout: float = 0.0,
    residual_in_mlp: bool = False,
    layer_idx: int = -1,
    dispatch: str = "auto",
) -> MoEBlock:
    """Compose the parts from plain settings (what `upcycle` and the recorded MoE structure describe)."""
    if frozen_expert0 and num_experts < 2:
        raise LangmoeError("frozen_expert0 needs at least 2 experts (expert 0 frozen + 1 trainable)")
    if not 1 <= top_k <= num_experts:
        raise LangmoeError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
    cls = GatedExperts if gated else LinearExperts
    n_train = num_experts - 1 if frozen_expert0 else num_experts
    experts = cls(n_train, hidden_size, intermediate_size, act, bias_in=bias_in, bias_out=bias_out,
                  dispatch=dispatch)
    if frozen_expert0:
        experts = FrozenExpert0(experts)
    router = TopKRouter(hidden_size, num_experts, top_k, renormalize=renormalize, override=override)
    return MoEBlock(router, experts, layer_idx=layer_idx, dropout=dropout, residual_in_mlp=residual_in_mlp)


def moe_blocks(model: nn.Module) -> list[MoEBlock]:
    """Every MoE block of a model, in layer order."""
    return sorted((m for m in model.modules() if isinstance(m, MoEBlock)), key=lambda m: m.layer_idx)


def needs_full_prefix(model: nn.Module) -> bool:
    """Whether a router of `model` reads earlier positions (its route override says so): generation must then
    see the whole sequence in each forward (no KV cache)."""
    return any(b.router.needs_full_prefix for b in moe_blocks(model))
