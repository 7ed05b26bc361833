"""Tiny random models of every supported architecture (no downloads)."""

from __future__ import annotations

import torch
import transformers as tf

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gpt2", "bloom")
VOCAB = 64


def tiny_config(arch: str, layers: int = 3, hidden: int = 16, inter: int = 32):
    common = dict(vocab_size=VOCAB)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=hidden, n_layer=layers, n_head=2, n_positions=64, n_inner=inter,
                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                             eos_token_id=0, **common)
    if arch == "bloom":
        return tf.BloomConfig(hidden_size=hidden, n_layer=layers, n_head=2, **common)
    llama_like = dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, **common)
    cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config,
           "qwen3": tf.Qwen3Config, "gemma": tf.GemmaConfig}[arch]
    if arch in ("qwen3", "gemma"):
        llama_like["head_dim"] = hidden // 2
    return cls(**llama_like)


def tiny_model(arch: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(tiny_config(arch, **kw))
    model.eval()
    return model


def tokens(batch: int = 2, length: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=g)
