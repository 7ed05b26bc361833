"""Tiny random models of every supported architecture (no downloads)."""

from __future__ import annotations

import torch
import transformers as tf

from langmoe.models.moe import build_moe_block
from langmoe.models.router_recorder import RouterRecorder

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


# ---- one MoE block on small tensors (tests/models/test_moe.py, tests/models/overrides/)


def block(E=4, k=2, gated=True, seed=0, override=None, **kw):
    """A seeded block (D=8, F=16) with random experts and router; `override`: a factory of its route override."""
    torch.manual_seed(seed)
    kw["override"] = override() if override is not None else None
    b = build_moe_block(8, 16, E, k, gated=gated, bias_in=not gated, bias_out=not gated, **kw)
    with torch.no_grad():
        for t in list(b.experts.parameters()) + list(b.experts.buffers()):
            t.normal_(0, 0.3)
        b.router.weight.normal_(0, 1.0)
    return b


def ffn_ref(b, x, e):
    """Expert e computed from its canonical (input-major) weights, independently of the block's code."""
    f = b.experts.ffn(e)
    if f.gated:
        g, u = x @ f.w_gate, x @ f.w_up
        if f.b_gate is not None:
            g, u = g + f.b_gate, u + f.b_up
        h = f.act(g) * u
    else:
        h = x @ f.w_in
        if f.b_in is not None:
            h = h + f.b_in
        h = f.act(h)
    y = h @ f.w_out
    return y if f.b_out is None else y + f.b_out


def recorded(b):
    """Attach a recorder of the last forward (what `router_outputs` reads on a model)."""
    b.__dict__["_rec"] = RouterRecorder(b, detach=False, accumulate=False).start()
    return b


def last_output(b):
    return b.__dict__["_rec"].last_outputs()[0]


def reference(b, x, idx, w):
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            out[t] += w[t, j] * ffn_ref(b, x[t : t + 1], int(idx[t, j]))[0]
    return out
