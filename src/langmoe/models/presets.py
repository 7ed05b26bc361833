"""Llama-architecture presets for bases trained from scratch on a CPU (tests, the demo, the shipped tiny base).

Sizes are chosen so that the non-embedding part is ~1M (`tiny`) and ~5M (`small`) parameters. The vocabulary is a
separate argument: at hidden 128 a vocab-8192 output layer costs as much compute as the whole body, so the tiny
preset suggests 4096 (see `PRESET_VOCAB`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

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
}

# Suggested tokenizer vocabulary per preset (the output layer must stay cheap next to the body).
PRESET_VOCAB: dict[str, int] = {"tiny": 4096, "small": 8192}

DEFAULT_MAX_POSITIONS = 1024


def preset_config(
    preset: str,
    vocab_size: int,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    bos_token_id: int | None = 0,
    eos_token_id: int | None = 0,
    pad_token_id: int | None = 0,
) -> LlamaConfig:
    """The LlamaConfig of a preset; the special-token ids default to 0 (`<|endoftext|>` of our BPE)."""
    if preset not in PRESETS:
        raise LangmoeError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if vocab_size < 2:
        raise LangmoeError(f"vocab_size must be at least 2, got {vocab_size}")
    if max_positions < 1:
        raise LangmoeError(f"max_positions must be positive, got {max_positions}")
    return LlamaConfig(
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
) -> LlamaForCausalLM:
    """A freshly initialised LlamaForCausalLM of a preset; the same seed gives the same weights."""
    config = preset_config(preset, vocab_size, max_positions, **token_ids)
    devices = [torch.device("cuda", torch.cuda.current_device())] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
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
