"""Export an upcycled model to a stock transformers MoE architecture, loadable with no custom code.

Targets (all in transformers 5.x, fused expert weights `gate_up_proj [E, 2F, D]`, `down_proj [E, D, F]`):

- qwen2_moe: from Llama / Mistral / Qwen2. Non-MoE layers go into `mlp_only_layers` (dense `intermediate_size`);
  the shared expert is disabled with `shared_expert_intermediate_size=0` (its output is exactly zero); Llama has no
  q/k/v bias, so `qkv_bias=False` (Qwen2 sources keep theirs). Mistral's sliding window (every layer) is expressed
  with `layer_types = ["sliding_attention"] * n`.
- qwen3_moe: from Qwen3 (q/k norms match; Llama cannot go there, its attention has no q/k norm).
- mixtral: from Llama / Mistral when every layer is MoE and top-k is renormalised (Mixtral always renormalises).

Conditions checked (LangmoeError otherwise): gated SiLU FFN without biases, the same number of experts, top-k and
renormalisation in every MoE layer, no old/new classifier (stock routers have none); frozen expert 0 is exported as
an ordinary expert. The expert tensors already have the stock names and layout (`moe.GatedExperts`), so they are
copied as they are. The new model is built with `from_config`, filled tensor by tensor, written with its own
`save_pretrained` into a temporary folder, reloaded there with plain `AutoModelForCausalLM.from_pretrained` and its
logits compared (tolerance relative to the logit scale, per dtype); only then does the folder appear at `path`.
dtype (unless `dtype` is given) and generation_config are the source model's; the tokenizer must fit the model.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from langmoe.data.tokenizer import check_tokenizer_matches
from langmoe.errors import LangmoeError
from langmoe.io import write_folder_atomically
from langmoe.models.adapters import get_adapter
from langmoe.models.folders import quiet_transformers
from langmoe.models.moe import moe_blocks
from langmoe.models.moe_io import MAX_SHARD_SIZE

__all__ = ["export_stock", "choose_export_arch", "EXPORT_ARCHS", "max_logit_diff", "export_tolerance"]

EXPORT_ARCHS = ("qwen2_moe", "qwen3_moe", "mixtral")
_SOURCES = {"qwen2_moe": ("llama", "mistral", "qwen2", "phi3"), "qwen3_moe": ("qwen3",),
            "mixtral": ("llama", "mistral", "phi3")}


def _check_common(model: nn.Module) -> dict:
    blocks = moe_blocks(model)
    if not blocks:
        raise LangmoeError("model has no MoE layer: upcycle it before exporting")
    cfg = model.config
    b0 = blocks[0]
    for b in blocks:
        if b.override is not None:
            raise LangmoeError(f"layer {b.layer_idx} {b.override.export_refusal}")
        if not b.gated or b.has_biases:
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
    if src in ("llama", "mistral", "phi3") and len(info["layers"]) == n and info["renorm"]:
        return "mixtral"
    if src in _SOURCES["qwen2_moe"]:
        return "qwen2_moe"
    raise LangmoeError(f"no stock MoE architecture expresses model_type {src!r} (exportable: llama, mistral, qwen2, "
                       "qwen3, phi3): keep the native folder, which loads with `import langmoe`")


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
    use_window = (bool(getattr(src, "use_sliding_window", src.model_type in ("mistral", "phi3")))
                  and window is not None)
    rope = dict(src.rope_parameters) if getattr(src, "rope_parameters", None) else None
    # Phi-3 = Llama with fused qkv / gate_up, unless its RoPE differs
    partial = float(rope.pop("partial_rotary_factor", 1.0) or 1.0) if rope is not None and src.model_type == "phi3" else 1.0
    if src.model_type == "phi3" and (partial != 1.0 or (rope or {}).get("rope_type", "default") != "default"):
        raise LangmoeError("phi3 with partial rotary or scaled RoPE (longrope/su) has no stock MoE counterpart: "
                               "keep the native folder (loads with `import langmoe`)")
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
        rope_parameters=rope,
        tie_word_embeddings=bool(getattr(src, "tie_word_embeddings", False)),
        attention_dropout=getattr(src, "attention_dropout", 0.0),
        bos_token_id=src.bos_token_id,
        eos_token_id=src.eos_token_id,
        pad_token_id=src.pad_token_id,
        num_experts_per_tok=info["k"],
    )
    F_ = src.intermediate_size
    if arch == "mixtral":
        other = "use qwen2_moe" if src.model_type in _SOURCES["qwen2_moe"] else "no other stock target fits"
        if dense_layers:
            raise LangmoeError(f"mixtral needs every layer to be MoE; dense layers: {dense_layers} ({other})")
        if not info["renorm"]:
            raise LangmoeError(f"mixtral always renormalises the top-k weights; this model does not ({other})")
        return tf.MixtralConfig(
            intermediate_size=F_, num_local_experts=info["E"], sliding_window=window if use_window else None,
            router_jitter_noise=0.0, **common,
        )
    if arch == "qwen2_moe":
        window_kw: dict = {"use_sliding_window": False}
        if use_window:
            layer_types = getattr(src, "layer_types", None) or ["sliding_attention"] * n
            window_kw = {"use_sliding_window": True, "sliding_window": window, "max_window_layers": n,
                         "layer_types": list(layer_types)}
        return tf.Qwen2MoeConfig(
            intermediate_size=F_, moe_intermediate_size=F_, shared_expert_intermediate_size=0,
            num_experts=info["E"], norm_topk_prob=info["renorm"], mlp_only_layers=dense_layers,
            decoder_sparse_step=1, qkv_bias=src.model_type == "qwen2", **window_kw, **common,
        )
    if use_window:
        raise LangmoeError(f"sliding_window={window} is shorter than the context and qwen3_moe here has no window: "
                           "no stock target fits; keep the native folder (loads with `import langmoe`)")
    return tf.Qwen3MoeConfig(
        intermediate_size=F_, moe_intermediate_size=F_, num_experts=info["E"], norm_topk_prob=info["renorm"],
        mlp_only_layers=dense_layers, decoder_sparse_step=1, attention_bias=bool(getattr(src, "attention_bias", False)),
        use_sliding_window=False, **common,
    )


def _convert_state(model: nn.Module, target: nn.Module) -> dict[str, torch.Tensor]:
    blocks = {b.layer_idx: b for b in moe_blocks(model)}
    src_state = _unfused_state(model)
    tgt_state = target.state_dict()
    out: dict[str, torch.Tensor] = {}
    layers_prefix = "model.layers."
    for i, b in blocks.items():
        p = f"{layers_prefix}{i}.mlp."
        with torch.no_grad():
            full = b.base_experts.full_tensors()  # already the stock names and layout: [E, 2F, D], [E, D, F]
            out[p + "experts.gate_up_proj"] = full["gate_up_proj"].detach().clone().contiguous()
            out[p + "experts.down_proj"] = full["down_proj"].detach().clone().contiguous()
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


def _unfused_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The source state dict with Phi-3's fused projections split into the Llama names the stock targets use:
    `qkv_proj` -> q/k/v (rows in that order) and a dense layer's `gate_up_proj` -> gate/up (gate rows first)."""
    state = model.state_dict()
    if model.config.model_type != "phi3":
        return state
    cfg = model.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith("self_attn.qkv_proj.weight"):
            stem = k[: -len("qkv_proj.weight")]
            out[stem + "q_proj.weight"], out[stem + "k_proj.weight"], out[stem + "v_proj.weight"] = (
                v[:q], v[q:q + kv], v[q + kv:q + 2 * kv])
        elif k.endswith("mlp.gate_up_proj.weight"):
            stem, half = k[: -len("gate_up_proj.weight")], v.shape[0] // 2
            out[stem + "gate_proj.weight"], out[stem + "up_proj.weight"] = v[:half], v[half:]
        else:
            out[k] = v
    return out


def export_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) of the export check `max|diff| <= rtol * max|logits| + atol`, per dtype."""
    if dtype == torch.float32:
        return 1e-5, 1e-4
    if dtype == torch.bfloat16:
        return 2e-2, 5e-2  # 8-bit mantissa: a few ulps of the largest logit
    return 5e-3, 1e-2  # float16


def export_stock(model: nn.Module, path: str | Path, arch: str = "auto", tokenizer=None, verify: bool = True,
                 dtype: torch.dtype | None = None) -> str:
    """Write `model` as a stock transformers MoE model to `path`; returns the architecture used.

    dtype: the exported weights' dtype (default: the model's). With `verify`, the folder is first written to a
    temporary folder next to `path`, reloaded there with plain `AutoModelForCausalLM.from_pretrained` and its logits
    compared with the source model's on a few random tokens (`export_tolerance`); `path` is created (replaced)
    only after the check passed, so a failed export leaves nothing at `path`.
    """
    from transformers import AutoModelForCausalLM

    get_adapter(model)
    info = _check_common(model)
    if arch == "auto":
        arch = choose_export_arch(model)
    if arch not in EXPORT_ARCHS:
        raise LangmoeError(f"unknown export arch {arch!r}; choose auto, {', '.join(EXPORT_ARCHS)}")
    if tokenizer is not None:
        check_tokenizer_matches(model, tokenizer)
    config = _target_config(model, arch, info)
    src_dtype = next(model.parameters()).dtype
    dtype = dtype or src_dtype
    with warnings.catch_warnings():  # the disabled shared expert has zero-element weights
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        target = AutoModelForCausalLM.from_config(config).to(src_dtype)
    state = _convert_state(model, target)
    target.load_state_dict(state, strict=True)
    if config.tie_word_embeddings:
        target.tie_weights()
    target = target.to(dtype)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        import copy

        target.generation_config = copy.deepcopy(gen)
    target.eval()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".export", dir=path.parent))
    try:
        with quiet_transformers():
            target.save_pretrained(tmp, safe_serialization=True, max_shard_size=MAX_SHARD_SIZE)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        if verify:
            with warnings.catch_warnings(), quiet_transformers():
                warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
                reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype)
            diff, scale = max_logit_diff(model, reloaded, return_scale=True)
            rtol, atol = export_tolerance(dtype if dtype != torch.float32 else src_dtype)
            tol = rtol * scale + atol
            if not diff <= tol:
                raise LangmoeError(f"export to {arch}: reloaded logits differ by {diff:.3g} (> {tol:.3g} = {rtol} x "
                                   f"max|logit| {scale:.3g} + {atol}); nothing written to {path}; please report")
        write_folder_atomically(path, lambda d: _move_contents(tmp, d))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return arch


def _move_contents(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        shutil.move(str(f), str(dst / f.name))


@torch.no_grad()
def max_logit_diff(a: nn.Module, b: nn.Module, batch: int = 2, length: int = 12, seed: int = 0,
                   return_scale: bool = False):
    """max |logits_a - logits_b| on random tokens (and, with `return_scale`, max |logits_a|)."""
    g = torch.Generator().manual_seed(seed)
    length = min(length, a.config.max_position_embeddings)
    x = torch.randint(0, a.config.vocab_size, (batch, length), generator=g)
    was = a.training, b.training
    a.eval()
    b.eval()
    try:
        la = a(x).logits.float()
        diff = (la - b(x).logits.float()).abs().max().item()
        return (diff, la.abs().max().item()) if return_scale else diff
    finally:
        a.train(was[0])
        b.train(was[1])
