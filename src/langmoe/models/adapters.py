"""Per-architecture FFN adapters: where a causal LM keeps its decoder layers and how its MLP maps to expert weights.

The MoE core never guesses from parameter names at run time; each supported `model_type` has a small adapter that
says where the layers live, which attribute is the MLP and how to read its weights in one canonical layout:

- gated (Llama, Mistral, Qwen2, Qwen3, Gemma): `act(x W_gate) * (x W_up) W_out`, optional biases;
- non-gated (GPT-2, BLOOM): `act(x W_in + b_in) W_out + b_out`.

Weights are returned "input-major" (`[in, out]`, so `y = x @ W`), the layout `torch.nn.functional.grouped_mm`
consumes. GPT-2's Conv1D already stores `[in, out]`; `nn.Linear` stores `[out, in]` and is transposed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from langmoe.errors import LangmoeError

__all__ = ["FFNWeights", "ArchAdapter", "ADAPTERS", "get_adapter", "supported_model_types", "decoder_layers"]


@dataclass
class FFNWeights:
    """One dense FFN in canonical input-major layout. Gated: w_gate, w_up, w_out; non-gated: w_in, w_out."""

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


def _t(linear: nn.Linear) -> torch.Tensor:
    return linear.weight.detach().t().contiguous()


def _b(linear) -> torch.Tensor | None:
    b = getattr(linear, "bias", None)
    return None if b is None else b.detach().clone()


@dataclass(frozen=True)
class ArchAdapter:
    """How one architecture family exposes its decoder layers and FFN."""

    name: str
    model_types: tuple[str, ...]
    layers_path: tuple[str, ...]  # attribute path from the CausalLM to the ModuleList of decoder layers
    mlp_attr: str = "mlp"
    gated: bool = True
    residual_in_mlp: bool = False  # BLOOM: mlp(x, residual) returns dropout(ffn(x)) + residual
    dropout_attr: str | None = None  # config attribute with the FFN output dropout probability

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
        return float(getattr(config, self.dropout_attr, 0.0) or 0.0) if self.dropout_attr else 0.0

    def extract(self, mlp: nn.Module) -> FFNWeights:
        """Read a dense MLP's weights (copies, detached) in the canonical layout."""
        if self.name == "gpt2":
            return FFNWeights(
                gated=False,
                act=mlp.act,
                w_in=mlp.c_fc.weight.detach().clone(),  # Conv1D: [in, out] already
                b_in=_b(mlp.c_fc),
                w_out=mlp.c_proj.weight.detach().clone(),
                b_out=_b(mlp.c_proj),
            )
        if self.name == "bloom":
            if getattr(mlp, "pretraining_tp", 1) > 1 and getattr(mlp, "slow_but_exact", False):
                raise LangmoeError("bloom: slow_but_exact tensor-parallel MLPs are not supported; set slow_but_exact=False")
            return FFNWeights(
                gated=False,
                act=mlp.gelu_impl,
                w_in=_t(mlp.dense_h_to_4h),
                b_in=_b(mlp.dense_h_to_4h),
                w_out=_t(mlp.dense_4h_to_h),
                b_out=_b(mlp.dense_4h_to_h),
            )
        for attr in ("gate_proj", "up_proj", "down_proj", "act_fn"):
            if not hasattr(mlp, attr):
                raise LangmoeError(f"{self.name} adapter: MLP {type(mlp).__name__} has no '{attr}'")
        return FFNWeights(
            gated=True,
            act=mlp.act_fn,
            w_gate=_t(mlp.gate_proj),
            w_up=_t(mlp.up_proj),
            w_out=_t(mlp.down_proj),
            b_gate=_b(mlp.gate_proj),
            b_up=_b(mlp.up_proj),
            b_out=_b(mlp.down_proj),
        )


ADAPTERS: dict[str, ArchAdapter] = {}
for _a in (
    ArchAdapter("llama", ("llama",), ("model", "layers")),
    ArchAdapter("mistral", ("mistral",), ("model", "layers")),
    ArchAdapter("qwen2", ("qwen2",), ("model", "layers")),
    ArchAdapter("qwen3", ("qwen3",), ("model", "layers")),
    ArchAdapter("gemma", ("gemma",), ("model", "layers")),
    ArchAdapter("gpt2", ("gpt2",), ("transformer", "h"), gated=False, dropout_attr="resid_pdrop"),
    ArchAdapter(
        "bloom", ("bloom",), ("transformer", "h"), gated=False, residual_in_mlp=True, dropout_attr="hidden_dropout"
    ),
):
    for _t_name in _a.model_types:
        ADAPTERS[_t_name] = _a


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)


def get_adapter(model_or_config) -> ArchAdapter:
    """The adapter for a model (or its config); LangmoeError naming the supported types otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise LangmoeError(
            f"no adapter for model_type '{model_type}'; supported: {', '.join(supported_model_types())}"
        )
    return ADAPTERS[model_type]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return get_adapter(model).layers(model)
