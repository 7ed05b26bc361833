"""One language's deviation probe (DMoE step A): from the base weights, feed one language's batches and measure
how far the weights that DMoE reads move.

Three kinds (`DeviationConfig.kind`, docs/dmoe-analysis.md):
- `gradient`: the mean gradient of the CLM loss over all the probe's tokens, taken at the base weights (no update).
  The deviation of a layer is its norm and the language vector is `−gradient` (where one SGD step would move).
  No base copy and no optimizer state: the cheapest probe, and its deviation follows the gradient's size.
- `sgd`: plain SGD steps (constant LR, clipped). The deviation follows the gradient's size too.
- `adamw`: the paper's probe, a fresh AdamW at constant LR. Adam's first steps move every weight by about the LR
  whatever its gradient's size, so the deviation measures how consistently each gradient keeps its sign.

Memory: with `params="measured"` only the weights the probe measures (the FFN matrices; attention when asked) get
gradients, and only they are copied before the update kinds run; the copy (`BaseCopy`) is kept in the narrowest
float type that holds it exactly (a bfloat16 checkpoint loaded in float32 costs 2 bytes a weight, not 4). The sgd
probe with one micro-batch a step takes its step inside backward (`SGDInBackward`), so the trained weights'
gradients are never all alive at once; the probes that keep them (several micro-batches a step, the library
default) recompute activations in backward above a size (`use_checkpointing`).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langmoe.errors import LangmoeError
from langmoe.models.adapters import get_adapter
from langmoe.precision import prepare_model
from langmoe.train.trainer import is_no_decay

_FFN_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe")
_ATTN_NAMES = ("self_attn", "attn", "self_attention", "attention")
LayerParams = list[dict[str, list[tuple[str, torch.nn.Parameter]]]]
PROBE_KINDS = ("gradient", "sgd", "adamw")


# ---- finding the FFN and attention of each decoder layer ------------------------------------------------------


def _adapter(model: torch.nn.Module):
    """The MoE core's structural adapter (`langmoe.models.adapters`), or None (e.g. a Mixtral: no upcycling, but
    its deviation can still be measured through the fallbacks below)."""
    try:
        return get_adapter(model)
    except LangmoeError:
        return None


def _probe_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers: through the MoE core's adapter when it reads the model, else (probes work on any causal
    LM) the ModuleList whose length is the config's layer count."""
    if (adapter := _adapter(model)) is not None:
        return list(adapter.layers(model))
    cfg = getattr(model, "config", None)
    n = None
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        n = getattr(cfg, attr, None) if cfg is not None else None
        if isinstance(n, int):
            break
    for _name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n):
            return list(mod)
    raise LangmoeError(f"cannot find the decoder layers of {type(model).__name__}: expected a ModuleList of "
                       f"{n} layers")


def _sub(layer: torch.nn.Module, names: Sequence[str]) -> torch.nn.Module | None:
    for n in names:
        m = getattr(layer, n, None)
        if isinstance(m, torch.nn.Module):
            return m
    return None


def _ffn_module(model: torch.nn.Module, layer: torch.nn.Module) -> torch.nn.Module | None:
    if (adapter := _adapter(model)) is not None:
        return adapter.get_mlp(layer)
    return _sub(layer, _FFN_NAMES)


def layer_params(model: torch.nn.Module) -> LayerParams:
    """Per decoder layer: `{"ffn": [(name, param)], "attn": [(name, param)]}` of the weight matrices (≥2-D)."""
    full = {id(p): n for n, p in model.named_parameters()}
    out = []
    for i, layer in enumerate(_probe_layers(model)):
        ffn, attn = _ffn_module(model, layer), _sub(layer, _ATTN_NAMES)
        if ffn is None:
            raise LangmoeError(f"cannot find the FFN of decoder layer {i} ({type(layer).__name__}): expected one "
                               f"of the submodules {', '.join(_FFN_NAMES)}")
        entry: dict[str, list[tuple[str, torch.nn.Parameter]]] = {"ffn": [], "attn": []}
        for kind, mod in (("ffn", ffn), ("attn", attn)):
            if mod is None:
                continue
            for p in mod.parameters():
                if p.dim() >= 2 and id(p) in full:
                    entry[kind].append((full[id(p)], p))
        if not entry["ffn"]:
            raise LangmoeError(f"decoder layer {i} has no FFN weight matrix")
        out.append(entry)
    return out


@dataclass
class ProbeTarget:
    """What the probe measures (`layers`, FFN and, with `attention`, attention matrices) and what it trains."""

    layers: LayerParams
    attention: bool
    trained: dict[str, torch.nn.Parameter] = field(default_factory=dict)

    def measured(self) -> dict[str, torch.nn.Parameter]:
        kinds = ("ffn", "attn") if self.attention else ("ffn",)
        return {n: p for e in self.layers for k in kinds for n, p in e[k]}


def probe_target(model: torch.nn.Module, attention: bool, params: str = "measured") -> ProbeTarget:
    """The probe's weights: `params="measured"` trains exactly what is measured (what DMoE reads), `"all"` every
    parameter that requires grad (the paper's full fine-tune: embeddings, norms, attention too)."""
    if params not in ("measured", "all"):
        raise LangmoeError(f"probe params must be measured or all, got {params!r}")
    target = ProbeTarget(layers=layer_params(model), attention=attention)
    measured = target.measured()
    frozen = sorted(n for n, p in measured.items() if not p.requires_grad)
    if frozen:  # frozen FFN weights would never deviate: say so instead of reporting zeros
        raise LangmoeError(f"{len(frozen)} FFN/attention weights are frozen (e.g. {frozen[0]}): unfreeze them "
                           "before the probe")
    target.trained = (measured if params == "measured"
                      else {n: p for n, p in model.named_parameters() if p.requires_grad})
    return target


@contextlib.contextmanager
def only_trained(model: torch.nn.Module, target: ProbeTarget) -> Iterator[None]:
    """`requires_grad` on the probe's trained weights only (the others get no gradient buffer), then restored."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    trained = {id(p) for p in target.trained.values()}
    try:
        for p in model.parameters():
            p.requires_grad_(id(p) in trained)
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])


# ---- the base copy ---------------------------------------------------------------------------------------------


def _compact(t: torch.Tensor) -> torch.Tensor:
    """A CPU copy of `t` in bfloat16 when that holds it exactly (a bf16 checkpoint loaded in float32), else in
    its own dtype."""
    t = t.detach()
    if t.dtype == torch.float32:
        b = t.to("cpu", torch.bfloat16, copy=True)
        if torch.equal(b.to(t.device, torch.float32), t):
            return b
    return t.to("cpu", copy=True)


class BaseCopy:
    """The trained weights before the probe, restored in place after each language (exact: lossless dtype)."""

    def __init__(self, params: Mapping[str, torch.nn.Parameter]):
        self._t = {n: _compact(p) for n, p in params.items()}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._t.values())

    def _get(self, name: str) -> torch.Tensor:
        return self._t[name]

    def delta(self, name: str, p: torch.Tensor) -> torch.Tensor:
        """`p − base` in float32 on the CPU."""
        return p.detach().float().cpu() - self._get(name).float()

    @torch.no_grad()
    def restore(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        for n, p in params.items():
            p.copy_(self._get(n).to(device=p.device, dtype=p.dtype))
            p.grad = None

    def close(self) -> None:
        self._t = {}


class DiskBaseCopy(BaseCopy):
    """The same copy in one file on disk, read back one tensor at a time (plain reads: the page cache, not the
    process, holds it), so the probe's resident memory does not grow with it."""

    def __init__(self, params: Mapping[str, torch.nn.Parameter], folder: str | Path):
        fd, name = tempfile.mkstemp(prefix="langmoe-probe-base-", suffix=".bin", dir=str(folder))
        self.path = Path(name)
        self._where: dict[str, tuple[int, torch.dtype, tuple[int, ...]]] = {}
        self._bytes = 0
        with os.fdopen(fd, "wb") as f:
            for n, p in params.items():
                t = _compact(p).contiguous()
                self._where[n] = (f.tell(), t.dtype, tuple(t.shape))
                f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
                self._bytes += t.numel() * t.element_size()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _get(self, name: str) -> torch.Tensor:
        offset, dtype, shape = self._where[name]
        t = torch.empty(shape, dtype=dtype)
        with open(self.path, "rb") as f:
            f.seek(offset)
            f.readinto(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        return t

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


DISK_BASE_ABOVE = 256 << 20  # bytes of trained weights above which base_copy="auto" keeps the copy on disk


def make_base_copy(params: Mapping[str, torch.nn.Parameter], where: str, folder: str | Path | None) -> BaseCopy:
    """`memory`, `disk` (in `folder`, else the system's temp folder) or `auto` (disk above DISK_BASE_ABOVE)."""
    if where not in ("auto", "memory", "disk"):
        raise LangmoeError(f"base_copy must be auto, memory or disk, got {where!r}")
    size = sum(p.numel() * p.element_size() for p in params.values())
    if where == "disk" or (where == "auto" and size > DISK_BASE_ABOVE):
        return DiskBaseCopy(params, folder if folder is not None else tempfile.gettempdir())
    return BaseCopy(params)


# ---- the steps -------------------------------------------------------------------------------------------------


@dataclass
class ProbeSettings:
    """The loop's settings (from `DeviationConfig`): kind, steps × grad_accum micro-batches, optimiser values."""

    kind: str
    steps: int
    grad_accum: int
    micro_batch_size: int
    lr: float
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    mixed_precision: str = "no"
    seed: int = 0
    optimizer_state: str = "float32"


@dataclass
class ProbeRun:
    losses: list[float]
    tokens: int
    elapsed_s: float
    grads: dict[str, torch.Tensor] | None = None  # the gradient kind: name -> mean gradient (float32)


def _autocast(model: torch.nn.Module, mixed_precision: str):
    if mixed_precision != "bf16":
        return contextlib.nullcontext()
    device = next(model.parameters()).device
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _micro_batches(model, source, step: int, s: ProbeSettings, divisor: int,
                   backward: Callable[[torch.Tensor], None] | None = None) -> tuple[float, int]:
    """Forward and backward the step's `grad_accum` micro-batches, each loss divided by `divisor` (and handed to
    `backward`, else `.backward()`); (mean loss, tokens). The mean is accumulated in float32 as the trainer does,
    so the losses match it exactly."""
    device = next(model.parameters()).device
    kw = {"use_cache": False} if hasattr(getattr(model, "config", None), "use_cache") else {}
    stats, tokens = torch.zeros(1), 0
    for micro in range(s.grad_accum):
        batch = source.get(step, micro, 0, 1)
        ids, labels = batch["input_ids"], batch["labels"]
        if ids.ndim != 2 or ids.shape[0] != s.micro_batch_size:
            raise LangmoeError(f"the probe's batch source yields input_ids of shape {tuple(ids.shape)}; expected "
                               f"[{s.micro_batch_size}, seq] (micro_batch_size rows)")
        tokens += ids.numel()
        with _autocast(model, s.mixed_precision):
            loss = model(input_ids=ids.to(device), labels=labels.to(device), **kw).loss
        (backward or torch.Tensor.backward)(loss / divisor)
        stats += loss.detach().float().cpu()
    mean = float((stats / s.grad_accum)[0])
    if not math.isfinite(mean):
        raise LangmoeError(f"probe loss is not finite at step {step + 1}; lower the probe lr or check the data")
    return mean, tokens


@contextlib.contextmanager
def _float32_grads(params: Mapping[str, torch.nn.Parameter]) -> Iterator[dict[str, torch.Tensor]]:
    """Gradients accumulated in float32 whatever the weights' dtype: a float32 weight's own `.grad`, for others
    a float32 buffer fed by a hook that frees the low-precision gradient as soon as it is added."""
    grads: dict[str, torch.Tensor] = {}
    handles = []
    for n, p in params.items():
        if p.dtype == torch.float32:
            continue
        buf = grads[n] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)

        def hook(q: torch.Tensor, buf: torch.Tensor = buf) -> None:
            buf.add_(q.grad)
            q.grad = None

        handles.append(p.register_post_accumulate_grad_hook(hook))
    try:
        yield grads
    finally:
        for h in handles:
            h.remove()
    for n, p in params.items():
        if n not in grads:
            grads[n] = p.grad if p.grad is not None else torch.zeros(p.shape, device=p.device)


def _gradient_probe(model, source, target: ProbeTarget, s: ProbeSettings, on_step) -> ProbeRun:
    t0, losses, tokens = time.perf_counter(), [], 0
    with _float32_grads(target.trained) as grads:
        for step in range(s.steps):
            loss, n = _micro_batches(model, source, step, s, s.steps * s.grad_accum)
            losses.append(loss)
            tokens += n
            on_step(step)
    return ProbeRun(losses, tokens, time.perf_counter() - t0, grads=grads)


class LightAdamW(torch.optim.Optimizer):
    """AdamW whose two moments are kept in bfloat16 (half the state of `torch.optim.AdamW`); each step's update
    is computed in float32, one weight at a time."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ARG002 - the probe never passes one
        for group in self.param_groups:
            (b1, b2), lr = group["betas"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.bfloat16)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.bfloat16)
                st["step"] += 1
                g = p.grad.float()
                m = st["exp_avg"].float().mul_(b1).add_(g, alpha=1 - b1)
                v = st["exp_avg_sq"].float().mul_(b2).addcmul_(g, g, value=1 - b2)
                st["exp_avg"].copy_(m)
                st["exp_avg_sq"].copy_(v)
                denom = v.div_(1 - b2 ** st["step"]).sqrt_().add_(group["eps"])
                p.mul_(1 - lr * group["weight_decay"])
                p.addcdiv_(m, denom, value=-lr / (1 - b1 ** st["step"]))
        return None


def _optimizer(params: Mapping[str, torch.nn.Parameter], s: ProbeSettings) -> torch.optim.Optimizer:
    """SGD (no state) or the trainer's AdamW (betas 0.9/0.95, eps 1e-8; no decay on norms and biases), its
    moments in float32 or, with `optimizer_state="bfloat16"`, in bfloat16 (`LightAdamW`)."""
    decay = [p for n, p in params.items() if not is_no_decay(n, p)]
    rest = [p for n, p in params.items() if is_no_decay(n, p)]
    groups = [g for g in ({"params": decay, "weight_decay": s.weight_decay},
                          {"params": rest, "weight_decay": 0.0}) if g["params"]]
    if s.kind == "sgd":
        return torch.optim.SGD(groups, lr=s.lr)
    if s.optimizer_state == "bfloat16":
        return LightAdamW(groups, lr=s.lr, betas=(0.9, 0.95), eps=1e-8)
    return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.95), eps=1e-8)


class SGDInBackward:
    """The sgd probe's step (clipped as `clip_grad_norm_`, then `torch.optim.SGD`'s update) taken inside backward,
    one weight at a time as its gradient is ready, the gradient freed at once: one layer's gradients are alive at a
    time instead of every trained weight's (on the 362M model of benchmarks/probe_memory.py, 1.26 GB less).

    Clipping needs the norm of the whole gradient before any weight moves, so with `grad_clip > 0` the backward
    runs twice over the same graph: the first pass only takes each gradient's norm, the second applies the step
    with the clip coefficient of their total. The gradients of the two passes are the same numbers, and the
    arithmetic is `clip_grad_norm_`'s and SGD's, so the weights end where the optimizer path puts them (tested).
    Only for one micro-batch a step: the gradient of several is a sum that would have to be kept."""

    def __init__(self, params: Mapping[str, torch.nn.Parameter], s: ProbeSettings):
        self.params = list(params.values())
        self.decay = {id(p): (0.0 if is_no_decay(n, p) else s.weight_decay) for n, p in params.items()}
        self.lr, self.clip = s.lr, s.grad_clip
        self.norms: dict[int, torch.Tensor] = {}
        self.coef: torch.Tensor | None = None
        self.stepping = False
        self.handles = [p.register_post_accumulate_grad_hook(self._hook) for p in self.params]

    @torch.no_grad()
    def _hook(self, p: torch.Tensor) -> None:
        g, p.grad = p.grad, None
        if not self.stepping:  # the norm pass
            self.norms[id(p)] = torch.linalg.vector_norm(g, 2.0)
            return
        if self.coef is not None:
            g.mul_(self.coef)
        if self.decay[id(p)]:
            g = g.add(p, alpha=self.decay[id(p)])
        p.add_(g, alpha=-self.lr)

    def backward(self, loss: torch.Tensor) -> None:
        self.coef, self.stepping = None, False
        if self.clip > 0:
            self.norms = {}
            loss.backward(retain_graph=True)
            norms = [self.norms[id(p)] for p in self.params if id(p) in self.norms]
            if norms:
                total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
                self.coef = torch.clamp(self.clip / (total + 1e-6), max=1.0)
        self.stepping = True
        loss.backward()

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def sgd_in_backward(s: ProbeSettings) -> bool:
    """Whether the update probe takes its steps inside backward (`SGDInBackward`): sgd, one micro-batch a step."""
    return s.kind == "sgd" and s.grad_accum == 1


def _sgd_in_backward_probe(model, source, target: ProbeTarget, s: ProbeSettings, on_step) -> ProbeRun:
    t0, losses, tokens = time.perf_counter(), [], 0
    stepper = SGDInBackward(target.trained, s)
    try:
        for step in range(s.steps):
            loss, n = _micro_batches(model, source, step, s, s.grad_accum, backward=stepper.backward)
            losses.append(loss)
            tokens += n
            on_step(step)
    finally:
        stepper.close()
    return ProbeRun(losses, tokens, time.perf_counter() - t0)


CHECKPOINT_ABOVE = 256 << 20  # bytes of trained weights above which checkpointing="auto" recomputes activations


def use_checkpointing(where: str, target: ProbeTarget, s: ProbeSettings, supported: bool = True) -> bool:
    """Whether the probe recomputes each decoder layer's activations in backward: `on`, `off`, or `auto`: on when
    the probe keeps every trained weight's gradient while it runs (all but sgd's in-backward step, so the
    library default of 16 micro-batches a step) and those weights exceed CHECKPOINT_ABOVE bytes. There the peak is
    runtime + weights + gradients + activations, and the activations are the part that can go (the 362M model
    of benchmarks/probe_memory.py, 16 micro-batches a step: 3.82 → 3.48 GB, 2.64× → 2.40× its float32 bytes);
    below it memory is small and the recomputation only costs time. The results are the same numbers either way (tested).
    `auto` leaves a model that cannot checkpoint (`supported` False) as it is; `on` asks for it and is refused there."""
    if where not in ("auto", "on", "off"):
        raise LangmoeError(f"checkpointing must be auto, on or off, got {where!r}")
    if where != "auto":
        return where == "on"
    size = sum(p.numel() * p.element_size() for p in target.trained.values())
    return supported and not sgd_in_backward(s) and size > CHECKPOINT_ABOVE


@contextlib.contextmanager
def checkpointing(model: torch.nn.Module, on: bool) -> Iterator[None]:
    """Activation checkpointing (`langmoe.precision`'s: non-reentrant, RNG kept) switched on inside the `with`
    and off again after, unless it was on before."""
    if not on:
        yield
        return
    undo = prepare_model(model, gradient_checkpointing=True, attn_implementation=None)
    try:
        yield
    finally:
        undo()


def _update_probe(model, source, target: ProbeTarget, s: ProbeSettings, on_step) -> ProbeRun:
    """sgd/adamw steps: sgd's inside backward when `sgd_in_backward(s)`, else through the optimizer."""
    params = list(target.trained.values())
    low = [p.dtype for p in params if p.dtype != torch.float32]
    if low:
        raise LangmoeError(f"the {s.kind} probe moves weights by about its LR, below the resolution of {low[0]}: "
                           "load the model in float32 (the gradient probe runs in any dtype)")
    if sgd_in_backward(s):
        return _sgd_in_backward_probe(model, source, target, s, on_step)
    t0, losses, tokens = time.perf_counter(), [], 0
    opt = _optimizer(target.trained, s)
    for step in range(s.steps):
        loss, n = _micro_batches(model, source, step, s, s.grad_accum)
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss)
        tokens += n
        on_step(step)
    return ProbeRun(losses, tokens, time.perf_counter() - t0)


def run_probe(model: torch.nn.Module, source, target: ProbeTarget, s: ProbeSettings,
              on_step: Callable[[int], None] | None = None) -> ProbeRun:
    """Run one language's probe in place: `gradient` returns the mean gradient of the trained weights (weights
    untouched; the caller frees `.grad`), `sgd`/`adamw` update the trained weights (the caller restores them)."""
    if s.kind not in PROBE_KINDS:
        raise LangmoeError(f"probe kind must be one of {', '.join(PROBE_KINDS)}, got {s.kind!r}")
    torch.manual_seed(s.seed)  # dropout, as the trainer seeds it
    for p in target.trained.values():
        p.grad = None
    step_fn = _gradient_probe if s.kind == "gradient" else _update_probe
    return step_fn(model, source, target, s, on_step or (lambda _s: None))


# ---- measuring -------------------------------------------------------------------------------------------------


def delta_fn(run: ProbeRun, base: BaseCopy | None) -> Callable[[str, torch.nn.Parameter], torch.Tensor]:
    """How far weight `name` moved (float32, CPU): `−mean gradient` for the gradient kind, else `θ_x − θ`."""
    if run.grads is not None:
        grads = run.grads
        return lambda name, _p: -grads[name].detach().float().cpu()
    if base is None:
        raise LangmoeError("an update probe needs a base copy to measure against")
    return base.delta


@dataclass
class Measured:
    dev_ffn: list[float]
    dev_attn: list[float] | None
    vector: torch.Tensor


@torch.no_grad()
def measure(layers: LayerParams, delta: Callable[[str, torch.nn.Parameter], torch.Tensor],
            vector_layers: Sequence[int], attention: bool, sketcher: Any = None) -> Measured:
    """Per-layer Frobenius norms of the deltas (FFN; attention with `attention`) and the language vector: the
    FFN deltas of `vector_layers`, concatenated, or fed to `sketcher` (`.update`, `.result`)."""
    dev_ffn, dev_attn, pieces = [], [], []
    vset = set(vector_layers)
    for li, entry in enumerate(layers):
        sq = 0.0
        for name, p in entry["ffn"]:
            d = delta(name, p)
            sq += float(d.double().pow(2).sum())
            if li in vset:
                if sketcher is not None:
                    sketcher.update(d)
                else:
                    pieces.append(d.reshape(-1))
        dev_ffn.append(sq**0.5)
        if attention:
            sq = sum(float(delta(name, p).double().pow(2).sum()) for name, p in entry["attn"])
            dev_attn.append(sq**0.5)
    vec = sketcher.result() if sketcher is not None else torch.cat(pieces)
    return Measured(dev_ffn, dev_attn if attention else None, vec)
