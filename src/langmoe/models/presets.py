"""Presets for bases trained from scratch on a CPU (tests, the demo, the shipped tiny bases).

`tiny` and `small` are Llama models whose non-embedding part is ~1M and ~5M parameters. `tiny-moe` is a stock
Qwen3-MoE model (8 experts, top-2, load-balancing loss on) whose *active* parameters per token equal `tiny`'s: each
expert is half of tiny's MLP, two are active. Plain transformers loads every preset. The vocabulary is a separate
argument: at hidden 128 a vocab-8192 output layer costs as much compute as the whole body, so the tiny presets
suggest 4096 (see `PRESET_VOCAB`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from langmoe.errors import LangmoeError

PRESETS: dict[str, dict[str, Any]] = {
    # 4 x (attention 4*128^2 + MLP 3*128*512) = 1.05M non-embedding parameters.
    "tiny": dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
    ),
    # 6 x (attention 4*256^2 + MLP 3*256*768) = 5.1M non-embedding parameters.
    "small": dict(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
    ),
    # tiny's attention + 8 experts of 3*128*256 (2 active = tiny's MLP) per layer: 1.05M active, 3.4M in all.
    "tiny-moe": dict(
        hidden_size=128,
        intermediate_size=512,
        moe_intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        router_aux_loss_coef=0.01,
        output_router_logits=True,  # training loss = CLM + 0.01 * load balancing (switched off in the saved config)
    ),
}

# The transformers model type of each preset (a preset not named here is a Llama model).
PRESET_ARCH: dict[str, str] = {"tiny-moe": "qwen3_moe"}

# Suggested tokenizer vocabulary per preset (the output layer must stay cheap next to the body).
PRESET_VOCAB: dict[str, int] = {"tiny": 4096, "small": 8192, "tiny-moe": 4096}

DEFAULT_MAX_POSITIONS = 1024


def preset_config(
    preset: str,
    vocab_size: int,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    bos_token_id: int | None = 0,
    eos_token_id: int | None = 0,
    pad_token_id: int | None = 0,
) -> PretrainedConfig:
    """The transformers config of a preset; the special-token ids default to 0 (`<|endoftext|>` of our BPE)."""
    if preset not in PRESETS:
        raise LangmoeError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if vocab_size < 2:
        raise LangmoeError(f"vocab_size must be at least 2, got {vocab_size}")
    if max_positions < 1:
        raise LangmoeError(f"max_positions must be positive, got {max_positions}")
    return AutoConfig.for_model(
        PRESET_ARCH.get(preset, "llama"),
        vocab_size=int(vocab_size),
        max_position_embeddings=int(max_positions),
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        **PRESETS[preset],
    )


def create_model(
    preset: str,
    vocab_size: int,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    seed: int = 0,
    **token_ids: int | None,
) -> PreTrainedModel:
    """A freshly initialised causal LM of a preset; the same seed gives the same weights."""
    config = preset_config(preset, vocab_size, max_positions, **token_ids)
    devices = [torch.device("cuda", torch.cuda.current_device())] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model


def count_parameters(model: PreTrainedModel) -> dict[str, int]:
    """Total, embedding (input embeddings + untied output layer) and non-embedding parameter counts."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb_ids: set[int] = set()
    embedding = 0
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is None:
            continue
        for p in module.parameters():
            if id(p) not in emb_ids:
                emb_ids.add(id(p))
                embedding += p.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def active_parameters(model: PreTrainedModel) -> int:
    """Parameters one token uses: all of a dense model; a stock MoE's experts count `top_k / num_experts` of theirs."""
    cfg = model.config
    n_exp = getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", None)
    top_k = getattr(cfg, "num_experts_per_tok", None)
    total = count_parameters(model)["total"]
    if not n_exp or not top_k:
        return total
    experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    return total - experts + experts * top_k // n_exp
