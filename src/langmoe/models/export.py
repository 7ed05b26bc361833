"""Export an upcycled model to a stock transformers MoE architecture, loadable with no custom code.

Targets (all in transformers 5.x, fused expert weights `gate_up_proj [E, 2F, D]`, `down_proj [E, D, F]`):

- qwen2_moe: from Llama / Mistral / Qwen2. Non-MoE layers go into `mlp_only_layers` (dense `intermediate_size`);
  the shared expert is disabled with `shared_expert_intermediate_size=0` (its output is exactly zero); Llama has no
  q/k/v bias, so `qkv_bias=False` (Qwen2 sources keep theirs).
- qwen3_moe: from Qwen3 (q/k norms match; Llama cannot go there, its attention has no q/k norm).
- mixtral: from Llama / Mistral when every layer is MoE and top-k is renormalised (Mixtral always renormalises).

Conditions checked (LangmoeError otherwise): gated SiLU FFN without biases, the same number of experts, top-k and
renormalisation in every MoE layer, no old/new classifier (stock routers have none); frozen expert 0 is exported as
an ordinary expert. The new model is built with `from_config`, filled tensor by tensor and saved with its own
`save_pretrained`, then (by default) reloaded with `AutoModelForCausalLM.from_pretrained` to check the logits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from langmoe.errors import LangmoeError
from langmoe.models.adapters import get_adapter
from langmoe.models.moe import moe_blocks
from langmoe.models.moe_io import write_folder_atomically

__all__ = ["export_stock", "choose_export_arch", "EXPORT_ARCHS"]

EXPORT_ARCHS = ("qwen2_moe", "qwen3_moe", "mixtral")
_SOURCES = {"qwen2_moe": ("llama", "mistral", "qwen2"), "qwen3_moe": ("qwen3",), "mixtral": ("llama", "mistral")}


def _check_common(model: nn.Module) -> dict:
    blocks = moe_blocks(model)
    if not blocks:
        raise LangmoeError("model has no MoE layer: upcycle it before exporting")
    cfg = model.config
    b0 = blocks[0]
    for b in blocks:
        if b.classifier is not None:
            raise LangmoeError(f"layer {b.layer_idx} has an old/new classifier: stock MoE routers cannot express it")
        if not b.gated or any(n.startswith("b_") for n in b._weight_names):
            raise LangmoeError(f"layer {b.layer_idx}: only gated FFNs without biases map to stock MoE experts")
        if (b.num_experts, b.top_k, b.renormalize) != (b0.num_experts, b0.top_k, b0.renormalize):
            raise LangmoeError(
                "stock MoE architectures need the same experts/top-k/renormalisation in every MoE layer; got "
                + ", ".join(f"layer {x.layer_idx}: E={x.num_experts} k={x.top_k}" for x in blocks)
            )
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise LangmoeError(f"hidden_act {cfg.hidden_act!r}: stock MoE exports here need silu")
    if getattr(cfg, "mlp_bias", False):
        raise LangmoeError("mlp_bias=True: stock MoE experts have no biases")
    return {"E": b0.num_experts, "k": b0.top_k, "renorm": b0.renormalize, "layers": [b.layer_idx for b in blocks]}


def choose_export_arch(model: nn.Module) -> str:
    """The stock target for `--arch auto`: Qwen3 -> qwen3_moe; all-layer Llama/Mistral -> mixtral; else qwen2_moe."""
    src = model.config.model_type
    info = _check_common(model)
    if src == "qwen3":
        return "qwen3_moe"
    n = model.config.num_hidden_layers
    if src in ("llama", "mistral") and len(info["layers"]) == n and info["renorm"]:
        return "mixtral"
    if src in _SOURCES["qwen2_moe"]:
        return "qwen2_moe"
    raise LangmoeError(f"no stock MoE export for model_type {src!r}; exportable: llama, mistral, qwen2, qwen3")


def _target_config(model: nn.Module, arch: str, info: dict):
    import transformers as tf

    src = model.config
    if src.model_type not in _SOURCES[arch]:
        raise LangmoeError(f"cannot export model_type {src.model_type!r} to {arch}; sources: {', '.join(_SOURCES[arch])}")
    n = src.num_hidden_layers
    dense_layers = [i for i in range(n) if i not in info["layers"]]
    head_dim = getattr(src, "head_dim", None) or src.hidden_size // src.num_attention_heads
    if getattr(src, "attention_bias", False) and src.model_type in ("llama", "mistral"):
        raise LangmoeError("attention_bias=True (o_proj bias) has no place in the stock MoE attention")
    window = getattr(src, "sliding_window", None)
    use_window = bool(getattr(src, "use_sliding_window", src.model_type == "mistral")) and window is not None
    if use_window and window >= src.max_position_embeddings:
        use_window = False  # a window longer than any sequence changes nothing
    common = dict(
        vocab_size=src.vocab_size,
        hidden_size=src.hidden_size,
        num_hidden_layers=n,
        num_attention_heads=src.num_attention_heads,
        num_key_value_heads=src.num_key_value_heads,
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=src.max_position_embeddings,
        rms_norm_eps=src.rms_norm_eps,
        rope_parameters=dict(src.rope_parameters) if getattr(src, "rope_parameters", None) else None,
        tie_word_embeddings=bool(getattr(src, "tie_word_embeddings", False)),
        attention_dropout=getattr(src, "attention_dropout", 0.0),
        bos_token_id=src.bos_token_id,
        eos_token_id=src.eos_token_id,
        pad_token_id=src.pad_token_id,
        num_experts_per_tok=info["k"],
    )
    F_ = src.intermediate_size
    if arch == "mixtral":
        if dense_layers:
            raise LangmoeError(f"mixtral needs every layer to be MoE; dense layers: {dense_layers} (use qwen2_moe)")
        if not info["renorm"]:
            raise LangmoeError("mixtral always renormalises the top-k weights; this model does not (use qwen2_moe)")
        return tf.MixtralConfig(
            intermediate_size=F_, num_local_experts=info["E"], sliding_window=window if use_window else None,
            router_jitter_noise=0.0, **common,
        )
    if use_window:
        raise LangmoeError(f"sliding_window={window} is shorter than the context: export to mixtral instead")
    if arch == "qwen2_moe":
        return tf.Qwen2MoeConfig(
            intermediate_size=F_, moe_intermediate_size=F_, shared_expert_intermediate_size=0,
            num_experts=info["E"], norm_topk_prob=info["renorm"], mlp_only_layers=dense_layers,
            decoder_sparse_step=1, qkv_bias=src.model_type == "qwen2", use_sliding_window=False, **common,
        )
    return tf.Qwen3MoeConfig(
        intermediate_size=F_, moe_intermediate_size=F_, num_experts=info["E"], norm_topk_prob=info["renorm"],
        mlp_only_layers=dense_layers, decoder_sparse_step=1, attention_bias=bool(getattr(src, "attention_bias", False)),
        use_sliding_window=False, **common,
    )


def _convert_state(model: nn.Module, target: nn.Module) -> dict[str, torch.Tensor]:
    blocks = {b.layer_idx: b for b in moe_blocks(model)}
    src_state = model.state_dict()
    tgt_state = target.state_dict()
    out: dict[str, torch.Tensor] = {}
    layers_prefix = "model.layers."
    for i, b in blocks.items():
        p = f"{layers_prefix}{i}.mlp."
        with torch.no_grad():
            g, u, d = b.weight("w_gate"), b.weight("w_up"), b.weight("w_out")  # [E,D,F], [E,D,F], [E,F,D]
            out[p + "experts.gate_up_proj"] = torch.cat([g.transpose(1, 2), u.transpose(1, 2)], dim=1).contiguous()
            out[p + "experts.down_proj"] = d.transpose(1, 2).contiguous()
            out[p + "gate.weight"] = b.router.weight.detach().clone()
    for k, v in src_state.items():
        if k.startswith(layers_prefix) and ".mlp." in k and int(k[len(layers_prefix):].split(".")[0]) in blocks:
            continue
        if k not in tgt_state:
            raise LangmoeError(f"export: source weight {k!r} has no counterpart in the stock architecture")
        out[k] = v.detach().clone()
    for k, v in tgt_state.items():
        if k in out:
            if tuple(out[k].shape) != tuple(v.shape):
                raise LangmoeError(f"export: shape mismatch for {k}: {list(out[k].shape)} vs {list(v.shape)}")
            continue
        # weights the source does not have and that must be zero for equal outputs
        if k.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")) or ".shared_expert" in k:
            out[k] = torch.zeros_like(v)
        elif k == "lm_head.weight" and target.config.tie_word_embeddings:
            out[k] = out["model.embed_tokens.weight"]
        else:
            raise LangmoeError(f"export: stock weight {k!r} has no source in the upcycled model")
    return out


def export_stock(model: nn.Module, path: str | Path, arch: str = "auto", tokenizer=None, verify: bool = True) -> str:
    """Write `model` as a stock transformers MoE model to `path`; returns the architecture used.

    With `verify`, the folder is reloaded with plain `AutoModelForCausalLM.from_pretrained` and its logits are
    compared with the upcycled model's on a few random tokens (max abs diff <= 1e-4 in fp32).
    """
    from transformers import AutoModelForCausalLM

    get_adapter(model)
    info = _check_common(model)
    if arch == "auto":
        arch = choose_export_arch(model)
    if arch not in EXPORT_ARCHS:
        raise LangmoeError(f"unknown export arch {arch!r}; choose auto, {', '.join(EXPORT_ARCHS)}")
    config = _target_config(model, arch, info)
    dtype = next(model.parameters()).dtype
    with warnings.catch_warnings():  # the disabled shared expert has zero-element weights
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        target = AutoModelForCausalLM.from_config(config).to(dtype)
    state = _convert_state(model, target)
    target.load_state_dict(state, strict=True)
    if config.tie_word_embeddings:
        target.tie_weights()
    target.eval()

    def writer(tmp: Path) -> None:
        target.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    write_folder_atomically(path, writer)
    if verify:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            reloaded = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        diff = max_logit_diff(model, reloaded)
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        if diff > tol:
            raise LangmoeError(f"export to {arch}: reloaded logits differ by {diff:.3g} (> {tol}); please report")
    return arch


@torch.no_grad()
def max_logit_diff(a: nn.Module, b: nn.Module, batch: int = 2, length: int = 12, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    length = min(length, a.config.max_position_embeddings)
    x = torch.randint(0, a.config.vocab_size, (batch, length), generator=g)
    was = a.training, b.training
    a.eval()
    b.eval()
    try:
        return (a(x).logits.float() - b(x).logits.float()).abs().max().item()
    finally:
        a.train(was[0])
        b.train(was[1])
