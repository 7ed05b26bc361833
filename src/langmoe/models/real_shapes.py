"""Real-shaped models generated on the fly: the shapes users bring (many layers, grouped-query attention, tied
embeddings), with random weights and the shipped tokenizer, so size-dependent code paths (memory, sharding, GQA,
bf16) are exercised without downloads.

`qwen2-362m` is Qwen2.5-0.5B's body (hidden 896, 24 layers, 14 query / 2 key-value heads, FFN 4864) with the
built-in 4096-token vocabulary; `qwen2-30m` keeps the shape at ~30M parameters for CI; `qwen2-tiny` is for
dry runs of the GPU scripts on a CPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from langmoe.errors import LangmoeError
from langmoe.models.folders import builtin_base_path, quiet_transformers

REAL_SHAPES: dict[str, dict[str, Any]] = {
    # Qwen2.5-0.5B's body: 24 x (attention 1.84M + MLP 13.07M) + 4096 x 896 tied embeddings = 362M parameters.
    "qwen2-362m": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2),
    # The same shape family at ~30M: 18 x (0.39M + 1.18M) + 4096 x 384 = 29.9M parameters.
    "qwen2-30m": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=18, num_attention_heads=6,
                      num_key_value_heads=2),
    # A few layers, GQA 4/2: for CPU dry runs of the GPU scripts (0.4M parameters).
    "qwen2-tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2),
}

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def real_shaped_config(name: str, vocab_size: int, max_positions: int = 2048) -> PretrainedConfig:
    """The Qwen2 config of a real shape (tied embeddings, RoPE theta 1e6, RMSNorm eps 1e-6 as Qwen2.5)."""
    if name not in REAL_SHAPES:
        raise LangmoeError(f"unknown real shape {name!r}: choose one of {', '.join(REAL_SHAPES)}")
    return AutoConfig.for_model(
        "qwen2", vocab_size=int(vocab_size), max_position_embeddings=int(max_positions), rms_norm_eps=1e-6,
        rope_theta=1e6, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        use_sliding_window=False, **REAL_SHAPES[name],
    )


def write_real_shaped_model(name: str, out: str | Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """A model folder of shape `name`: random weights (seeded), saved in `dtype`, the shipped tokenizer."""
    out = Path(out)
    tok_dir = builtin_base_path()
    import json

    vocab = json.loads((tok_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    config = real_shaped_config(name, vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out)
    for f in _TOKENIZER_FILES:
        shutil.copyfile(tok_dir / f, out / f)
    return out
