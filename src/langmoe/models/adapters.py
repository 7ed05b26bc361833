"""Find a causal LM's decoder layers and FFN by structure, and read the FFN in one canonical layout.

No list of architectures: for any Hugging Face decoder the adapter is discovered from the model itself.

- Decoder layers: the ModuleList of identically-typed blocks with the most parameters (its length equal to the
  config's layer count when the config says): `model.layers`, `transformer.h`, `gpt_neox.layers`, ...
- The FFN: the direct child of a decoder layer that holds two or three projections (`nn.Linear` or GPT-2's
  `Conv1D`, whose weight is stored `[in, out]`) forming an FFN. A child named mlp / feed_forward / ffn wins; an
  already-upcycled `MoEBlock` child is recognised. Norms *around* the FFN (Gemma-2/3, OLMo-2 post-feedforward
  norms) live in the decoder layer, so replacing the child keeps them.
- Its weights, by shape (D = hidden size): one `D -> F` and one `F -> D` projection is a two-matrix FFN
  `act(x W_in + b_in) W_out + b_out` (fc1/fc2, c_fc/c_proj, dense_h_to_4h/dense_4h_to_h, ...); two `D -> F` and one
  `F -> D` is a gated FFN `act(x W_gate + b_gate) * (x W_up + b_up) W_out + b_out` (gate_proj/up_proj/down_proj);
  one `D -> 2F` is a fused gated FFN (Phi-3's `gate_up_proj`), split into w_gate / w_up.
- The activation is the MLP's own module or function (`act_fn`, `activation_fn`, `act`, `gelu_impl`, ...).

What shape alone cannot settle (which of two `D -> F` projections is the gate, the fused halves' order, which of
several activations) is settled by running the MLP once on random input and keeping the reading that reproduces its
output (relative max error <= 1e-4 in fp32); a reading that reproduces nothing is refused with one line, so an FFN
the MoE block cannot express (an internal norm, an unusual formula) never upcycles silently wrong.

An MLP whose `forward(x, residual)` adds the residual itself (BLOOM) is flagged `residual_in_mlp`; dropout that the
MLP's forward applies (`nn.Dropout` children, or float attributes like `residual_dropout`) is read from the MLP.
A model that is already a Mixture-of-Experts (Mixtral, Qwen2-MoE, OLMoE, ...) is refused: it is input for routing
analysis, not for upcycling. Where structure is ambiguous, `register_adapter(model_type, layers_path=...,
mlp_attr=...)` pins the layer path / MLP attribute.

Weights are returned "input-major" (`[in, out]`, so `y = x @ W`), the layout `torch.nn.functional.grouped_mm`
consumes; `nn.Linear` stores `[out, in]` and is transposed.
"""

from __future__ import annotations

import inspect
import re
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.ffn import FFNWeights, ffn_forward
from langmoe.models.moe import MoEBlock

__all__ = [
    "FFNWeights",
    "ArchAdapter",
    "ADAPTERS",
    "TESTED_MODEL_TYPES",
    "register_adapter",
    "get_adapter",
    "supported_model_types",
    "decoder_layers",
    "ffn_forward",
]

# Architectures the test matrix (tests/models/test_arch_matrix.py) upcycles, generates, saves and loads. Others are
# discovered the same way; these are the ones proven.
TESTED_MODEL_TYPES = (
    "bloom", "cohere", "falcon", "gemma", "gemma2", "gemma3_text", "gpt2", "gpt_neox", "granite", "llama", "mistral",
    "olmo2", "phi", "phi3", "qwen2", "qwen3", "stablelm", "starcoder2",
)
_FFN_NAMES = ("mlp", "feed_forward", "ffn", "ff", "mlp_block")
_ACT_NAMES = ("act_fn", "activation_fn", "act", "activation", "gelu_impl", "gelu", "act_layer", "hidden_act_fn")
_CONFIG_ACT = ("hidden_act", "hidden_activation", "activation_function", "activation", "ffn_act")
_CONFIG_HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
_CONFIG_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_CONFIG_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")
_MOE_CLASS = re.compile(r"(Moe|MoE|Sparse.*Block|Experts?$)")
_OUT_HINTS = ("down", "out", "c_proj", "fc2", "4h_to_h", "w2", "wo")
_TOL = {torch.float32: 1e-4, torch.float64: 1e-8}  # relative; half precisions: 3e-2


# ---- projections -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Proj:
    name: str
    module: nn.Module
    d_in: int
    d_out: int

    def weight(self) -> torch.Tensor:
        """`[in, out]` copy."""
        w = self.module.weight.detach()
        return (w if _is_conv1d(self.module) else w.t()).clone().contiguous()

    def bias(self) -> torch.Tensor | None:
        b = getattr(self.module, "bias", None)
        return None if b is None else b.detach().clone()


def _is_conv1d(m: nn.Module) -> bool:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(m, Conv1D)


def _as_proj(name: str, m: nn.Module) -> _Proj | None:
    if isinstance(m, nn.Linear):
        return _Proj(name, m, m.in_features, m.out_features)
    if _is_conv1d(m):
        return _Proj(name, m, m.weight.shape[0], m.weight.shape[1])
    return None


def _projections(mlp: nn.Module) -> list[_Proj]:
    return [p for n, c in mlp.named_children() if (p := _as_proj(n, c)) is not None]


def _split_roles(mlp: nn.Module, hidden: int | None) -> tuple[list[_Proj], _Proj] | str:
    """(input projections, output projection) of an FFN-shaped module, or why it is not one."""
    projs = _projections(mlp)
    if len(projs) not in (2, 3):
        return f"{len(projs)} projections (an FFN has 2 or 3)"
    if hidden is None:  # the output projection's width is the hidden size: the one output every input matches
        outs = {p.d_out for p in projs}
        hidden = next((d for d in outs if any(p.d_in == d for p in projs)), None)
        if hidden is None:
            return "no projection pair maps D -> F -> D"
    outs = [p for p in projs if p.d_out == hidden and p.d_in != hidden]
    if not outs:  # F == D: the output projection by name, else the last one registered
        same = [p for p in projs if p.d_out == hidden]
        hinted = [p for p in same if any(h in p.name.lower() for h in _OUT_HINTS)]
        outs = hinted[-1:] or same[-1:]
    if len(outs) != 1:
        return f"{len(outs)} projections map back to the hidden size {hidden}"
    out = outs[0]
    ins = [p for p in projs if p is not out]
    if any(p.d_in != hidden for p in ins):
        return f"input projections {[p.name for p in ins]} do not all read the hidden size {hidden}"
    F_ = out.d_in
    if len(ins) == 1 and ins[0].d_out not in (F_, 2 * F_):
        return f"'{ins[0].name}' has {ins[0].d_out} outputs, '{out.name}' reads {F_}"
    if len(ins) == 2 and any(p.d_out != F_ for p in ins):
        return f"'{ins[0].name}'/'{ins[1].name}' do not both have {F_} outputs"
    return ins, out


# ---- activation, dropout, residual -------------------------------------------------------------------------------


def _forward_source(mlp: nn.Module) -> str | None:
    try:
        return inspect.getsource(type(mlp).forward)
    except (OSError, TypeError):
        return None


def _activation_candidates(mlp: nn.Module, act_hint: str | None, probe: bool) -> list[tuple[str, Callable]]:
    """The MLP's own activation first (by conventional name, then any parameter-free child), then the config's."""
    out: list[tuple[str, Callable]] = []
    seen: set[int] = set()

    def add(name, fn):
        if fn is not None and callable(fn) and id(fn) not in seen:
            seen.add(id(fn))
            out.append((name, fn))

    for n in _ACT_NAMES:
        fn = getattr(mlp, n, None)
        if isinstance(fn, nn.Module) or (callable(fn) and not inspect.ismethod(fn) and not isinstance(fn, type)):
            add(n, fn)
    for n, c in mlp.named_children():
        if _as_proj(n, c) is None and not isinstance(c, nn.Dropout | nn.Identity) and not any(True for _ in c.parameters()):
            add(n, c)
    for n, v in vars(mlp).items():
        if not n.startswith("_") and callable(v) and not inspect.ismethod(v) and not isinstance(v, type | nn.Module):
            add(n, v)
    if probe:  # without a stored activation, the MLP calls one inline: the config's, else a standard one
        from transformers.activations import ACT2FN

        names = ([act_hint] if act_hint else []) + ["silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"]
        if not out:
            for n in names:
                if n in ACT2FN:
                    add(n, ACT2FN[n])
    return out


def _dropout_p(mlp: nn.Module) -> float:
    """Dropout the MLP's own forward applies: `nn.Dropout` children and float `*dropout*` attributes it uses."""
    src = _forward_source(mlp)

    def used(name: str) -> bool:
        return src is None or re.search(rf"self\.{re.escape(name)}\b", src) is not None

    for n, c in mlp.named_children():
        if isinstance(c, nn.Dropout) and used(n):
            return float(c.p)
    for n, v in vars(mlp).items():
        if "dropout" in n and isinstance(v, float) and used(n):
            return float(v)
    return 0.0


def _forward_args(mlp: nn.Module) -> tuple[bool, list[str]]:
    """(takes the residual, other required arguments) of the MLP's forward."""
    try:
        params = list(inspect.signature(mlp.forward).parameters.values())
    except (TypeError, ValueError):
        return False, []
    req = [p.name for p in params if p.default is inspect.Parameter.empty
           and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    rest = req[1:]
    residual = bool(rest) and rest[0] == "residual"
    return residual, rest[1:] if residual else rest


# ---- reading one MLP ---------------------------------------------------------------------------------------------


def _readings(ins: list[_Proj], out: _Proj, act: Callable) -> Iterator[FFNWeights]:
    """Every way the projections can form an FFN (gate/up order, fused layouts), most likely first; lazily, so a
    large FFN is copied only for the readings actually tried."""
    w_out, b_out = out.weight(), out.bias()
    if len(ins) == 1 and ins[0].d_out == out.d_in:
        p = ins[0]
        yield FFNWeights(False, act, w_out, w_in=p.weight(), b_in=p.bias(), b_out=b_out,
                         extra={"layout": "two-matrix", "in": p.name, "out": out.name})
        return
    if len(ins) == 1:  # fused [gate | up] (Phi-3), [up | gate] or interleaved
        p = ins[0]
        w, b = p.weight(), p.bias()
        F_ = out.d_in
        splits = {
            "fused-gate-up": (slice(0, F_), slice(F_, 2 * F_)),
            "fused-up-gate": (slice(F_, 2 * F_), slice(0, F_)),
            "fused-interleaved-gate-up": (slice(0, None, 2), slice(1, None, 2)),
            "fused-interleaved-up-gate": (slice(1, None, 2), slice(0, None, 2)),
        }
        for layout, (sg, su) in splits.items():
            yield FFNWeights(
                True, act, w_out, w_gate=w[:, sg].contiguous(), w_up=w[:, su].contiguous(),
                b_gate=None if b is None else b[sg].clone(), b_up=None if b is None else b[su].clone(), b_out=b_out,
                extra={"layout": layout, "gate_up": p.name, "out": out.name},
            )
        return
    a, b_ = ins
    orders = [(a, b_), (b_, a)]
    if "gate" in b_.name.lower() and "gate" not in a.name.lower():
        orders.reverse()
    for g, u in orders:
        bg, bu = g.bias(), u.bias()
        if (bg is None) != (bu is None):  # the block holds both input biases or neither
            bg = torch.zeros(g.d_out, dtype=w_out.dtype, device=w_out.device) if bg is None else bg
            bu = torch.zeros(u.d_out, dtype=w_out.dtype, device=w_out.device) if bu is None else bu
        yield FFNWeights(True, act, w_out, w_gate=g.weight(), w_up=u.weight(), b_gate=bg, b_up=bu, b_out=b_out,
                         extra={"layout": "separate", "gate": g.name, "up": u.name, "out": out.name})


@torch.no_grad()
def _mismatch(mlp: nn.Module, ffn: FFNWeights, residual: bool) -> float:
    """Relative max error of the reading against the MLP's own forward (eval mode) on seeded random input."""
    ref_p = ffn.w_out
    gen = torch.Generator().manual_seed(0)
    D = ffn.hidden_size
    w_first = ffn.w_gate if ffn.gated else ffn.w_in
    scale = 2.0 / max(float(w_first.float().std()) * D**0.5, 1e-6)  # pre-activations of order 1, not ~0
    x = (torch.randn(2, 3, D, generator=gen) * scale).to(device=ref_p.device, dtype=ref_p.dtype)
    was = mlp.training
    mlp.eval()
    try:
        if residual:
            r = torch.randn(2, 3, D, generator=gen).to(x)
            ref = mlp(x, r) - r
        else:
            ref = mlp(x)
    finally:
        mlp.train(was)
    if not isinstance(ref, torch.Tensor) or ref.shape != x.shape:
        return float("inf")
    got = ffn_forward(ffn, x)
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


def _read_mlp(mlp: nn.Module, hidden: int | None, act_hint: str | None, residual: bool) -> FFNWeights:
    cls = type(mlp).__name__
    roles = _split_roles(mlp, hidden)
    if isinstance(roles, str):
        raise LangmoeError(f"{cls} is not an FFN the MoE block can express: {roles}")
    ins, out = roles
    counted = {id(p) for q in (*ins, out) for p in q.module.parameters()}
    acts_params = set()
    p0 = out.module.weight
    probe = p0.device.type != "meta"
    acts = _activation_candidates(mlp, act_hint, probe)
    for _n, fn in acts:
        if isinstance(fn, nn.Module):
            acts_params |= {id(p) for p in fn.parameters()}
    stray = [n for n, p in mlp.named_parameters() if id(p) not in counted and id(p) not in acts_params]
    if stray:
        raise LangmoeError(f"{cls} has weights outside its projections ({', '.join(stray[:3])}): the MoE block "
                           "cannot express an FFN with an internal norm or extra parameters")
    if not acts:
        raise LangmoeError(f"{cls} stores no activation (act_fn, activation_fn, act, ...): cannot read its FFN")
    readings = (r for _n, fn in acts for r in _readings(ins, out, fn))
    if not probe:  # meta weights: the most likely reading, unchecked
        return next(readings)
    tol = _TOL.get(p0.dtype, 3e-2)
    best = float("inf")
    for r in readings:
        err = _mismatch(mlp, r, residual)
        if err <= tol:
            return r
        best = min(best, err)
    raise LangmoeError(
        f"{cls} does not compute act(x W_gate) * (x W_up) W_out nor act(x W_in) W_out with its projections "
        f"{[p.name for p in (*ins, out)]} (best reading off by {best:.2g} relative): the MoE block cannot express it"
    )


# ---- the adapter -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchAdapter:
    """How one model exposes its decoder layers and FFN (discovered by `get_adapter`, or pinned by an override)."""

    name: str
    model_types: tuple[str, ...]
    layers_path: tuple[str, ...]  # attribute path from the CausalLM to the ModuleList of decoder layers
    mlp_attr: str = "mlp"
    gated: bool | None = None  # what the MLPs are (None: not read yet / all already MoE)
    residual_in_mlp: bool = False  # BLOOM: mlp(x, residual) returns dropout(ffn(x)) + residual
    dropout_attr: str | None = None  # config attribute with the FFN output dropout (override); else dropout_p
    dropout_p: float = 0.0  # dropout the MLP's own forward applies at its output
    hidden_size: int | None = None
    act_hint: str | None = None  # the config's activation name (used only if the MLP stores none)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        obj = model
        for attr in self.layers_path:
            if not hasattr(obj, attr):
                raise LangmoeError(
                    f"{self.name} adapter: model has no '{'.'.join(self.layers_path)}' (is it a causal LM?)"
                )
            obj = getattr(obj, attr)
        return obj

    def get_mlp(self, layer: nn.Module) -> nn.Module:
        if not hasattr(layer, self.mlp_attr):
            raise LangmoeError(f"{self.name} adapter: decoder layer has no '{self.mlp_attr}' module")
        return getattr(layer, self.mlp_attr)

    def set_mlp(self, layer: nn.Module, module: nn.Module) -> None:
        setattr(layer, self.mlp_attr, module)

    def dropout(self, config) -> float:
        if self.dropout_attr:
            return float(getattr(config, self.dropout_attr, 0.0) or 0.0)
        return self.dropout_p

    def extract(self, mlp: nn.Module) -> FFNWeights:
        """Read a dense MLP's weights (copies, detached) in the canonical layout, checked against its forward."""
        return _read_mlp(mlp, self.hidden_size, self.act_hint, self.residual_in_mlp)


# Explicit overrides by model_type (`register_adapter`), for models whose structure is ambiguous. Empty by default:
# every tested architecture is discovered.
ADAPTERS: dict[str, ArchAdapter] = {}


def register_adapter(model_type: str, *, layers_path: str | None = None, mlp_attr: str | None = None,
                     dropout_attr: str | None = None) -> None:
    """Pin where `model_type` keeps its decoder layers (`"model.layers"`) and which layer attribute is the FFN."""
    ADAPTERS[model_type] = ArchAdapter(
        model_type, (model_type,), tuple(layers_path.split(".")) if layers_path else (),
        mlp_attr=mlp_attr or "", dropout_attr=dropout_attr,
    )


def supported_model_types() -> list[str]:
    """The architectures the test matrix proves; any other decoder with an FFN of a known shape also works."""
    return sorted(TESTED_MODEL_TYPES)


def _cfg_int(config, names) -> int | None:
    for n in names:
        v = getattr(config, n, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _refuse_moe(model: nn.Module, config) -> None:
    if getattr(config, "langmoe", None) or any(isinstance(m, MoEBlock) for m in model.modules()):
        return  # langmoe's own MoE: its dense structure is what the adapter describes
    n_exp = next((v for n in _CONFIG_EXPERTS if isinstance(v := getattr(config, n, None), int) and v > 1), None)
    cls = next((type(m).__name__ for m in model.modules() if _MOE_CLASS.search(type(m).__name__)), None)
    if n_exp is not None or cls is not None:
        what = f"{cls}" if cls else f"{n_exp} experts"
        raise LangmoeError(
            f"model_type '{getattr(config, 'model_type', None)}' is already a Mixture-of-Experts ({what}): use it as "
            "input for routing analysis, not for upcycling"
        )


def _find_layers(model: nn.Module, n_layers: int | None) -> str:
    best, best_key = None, None
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0 or len({type(m) for m in mod}) != 1:
            continue
        n_params = sum(p.numel() for p in mod.parameters())
        key = (n_layers is None or len(mod) == n_layers, n_params, len(mod), -name.count("."))
        if best_key is None or key > best_key:
            best, best_key = name, key
    if best is None:
        raise LangmoeError(f"{type(model).__name__}: no ModuleList of decoder layers found (is it a causal LM?)")
    return best


def _is_moe_block(m: nn.Module) -> bool:
    return isinstance(m, MoEBlock)


def _find_mlp(layer: nn.Module, hidden: int | None) -> str:
    children = dict(layer.named_children())
    for n, c in children.items():
        if _is_moe_block(c):
            return n
    # FFN-shaped children whose forward takes only the hidden states (and maybe the residual): an attention block
    # with a fused qkv + output projection can be FFN-shaped but needs masks / positions
    ffn_like = [n for n, c in children.items()
                if not isinstance(_split_roles(c, hidden), str) and not _forward_args(c)[1]]
    named = [n for n in _FFN_NAMES if n in ffn_like]
    if named:
        return named[0]
    if len(ffn_like) == 1:
        return ffn_like[0]
    cls = type(layer).__name__
    if not ffn_like:
        loose = [n for n, c in children.items() if _as_proj(n, c) is not None]
        if loose:
            raise LangmoeError(
                f"decoder layer {cls} keeps its FFN projections ({', '.join(loose)}) directly, not in an FFN "
                "submodule: the MoE block replaces a whole FFN module, so this layout cannot be upcycled"
            )
        raise LangmoeError(f"decoder layer {cls} has no FFN submodule (two or three projections D -> F -> D)")
    raise LangmoeError(f"decoder layer {cls}: several children look like an FFN ({', '.join(ffn_like)}); pin one "
                       "with langmoe.models.adapters.register_adapter(model_type, mlp_attr=...)")


def _meta_model(config) -> nn.Module:
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for an unknown config
        raise LangmoeError(f"cannot build a causal LM for model_type '{getattr(config, 'model_type', None)}' "
                           f"({type(e).__name__}): give the model, not its config") from None


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _discover(model: nn.Module, config) -> ArchAdapter:
    model_type = getattr(config, "model_type", None) or type(model).__name__
    _refuse_moe(model, config)
    hidden = _cfg_int(config, _CONFIG_HIDDEN)
    override = ADAPTERS.get(model_type)
    path = ".".join(override.layers_path) if override and override.layers_path else None
    if path is None:
        path = _find_layers(model, _cfg_int(config, _CONFIG_LAYERS))
    base = ArchAdapter(model_type, (model_type,), tuple(path.split(".")), hidden_size=hidden,
                       dropout_attr=override.dropout_attr if override else None,
                       act_hint=next((v for n in _CONFIG_ACT if isinstance(v := getattr(config, n, None), str)), None))
    layers = base.layers(model)
    if not isinstance(layers, nn.ModuleList | list | tuple) or len(layers) == 0:
        raise LangmoeError(f"{model_type}: '{path}' is not a non-empty list of decoder layers")
    mlp_attr = override.mlp_attr if override and override.mlp_attr else _find_mlp(layers[0], hidden)
    base = replace(base, mlp_attr=mlp_attr)
    dense = next((m for layer in layers if not _is_moe_block(m := base.get_mlp(layer))), None)
    if dense is None:
        blk = base.get_mlp(layers[0])
        return replace(base, gated=getattr(blk, "gated", None), residual_in_mlp=bool(getattr(blk, "residual_in_mlp", 0)),
                       dropout_p=float(getattr(blk, "dropout_p", 0.0)))
    residual, others = _forward_args(dense)
    if others:
        raise LangmoeError(f"{type(dense).__name__}.forward needs {others} besides the hidden states: the MoE block "
                           "cannot replace it")
    roles = _split_roles(dense, hidden)
    if isinstance(roles, str):
        raise LangmoeError(f"{type(dense).__name__} is not an FFN the MoE block can express: {roles}")
    gated = len(roles[0]) == 2 or roles[0][0].d_out == 2 * roles[1].d_in
    return replace(base, gated=gated, residual_in_mlp=residual, dropout_p=_dropout_p(dense))


def get_adapter(model_or_config) -> ArchAdapter:
    """The adapter of a model (discovered from its modules) or of a config (from a weightless meta-device copy).

    LangmoeError with the reason when the model has no decoder-layer list or FFN the MoE block can express, or is
    already a Mixture-of-Experts.
    """
    if isinstance(model_or_config, nn.Module):
        model, config = model_or_config, getattr(model_or_config, "config", None)
        cached = _CACHE.get(model)
        if cached is not None:
            return cached
        adapter = _discover(model, config)
        _CACHE[model] = adapter
        return adapter
    config = model_or_config
    if getattr(config, "langmoe", None) is None:
        n_exp = next((v for n in _CONFIG_EXPERTS if isinstance(v := getattr(config, n, None), int) and v > 1), None)
        if n_exp is not None:
            raise LangmoeError(
                f"model_type '{getattr(config, 'model_type', None)}' is already a Mixture-of-Experts ({n_exp} "
                "experts): use it as input for routing analysis, not for upcycling"
            )
    return _discover(_meta_model(config), config)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return get_adapter(model).layers(model)
