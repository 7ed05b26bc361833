"""Tiny random stock transformers MoE models (one per supported family) and a langmoe-upcycled one; no downloads."""

from __future__ import annotations

import torch
import transformers as tf

STOCK = ("olmoe", "qwen2_moe", "qwen3_moe", "mixtral", "phimoe", "granitemoe", "deepseek_v3", "gpt_oss")
VOCAB = 128


def tiny_moe_config(arch: str, layers: int = 3, hidden: int = 32, experts: int = 8, top_k: int = 2,
                    vocab: int = VOCAB):
    base = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, num_experts_per_tok=top_k,
                pad_token_id=0, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    if arch == "olmoe":
        return tf.OlmoeConfig(intermediate_size=64, num_experts=experts, **base)
    if arch == "qwen2_moe":
        return tf.Qwen2MoeConfig(intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                 num_experts=experts, norm_topk_prob=True, **base)
    if arch == "qwen3_moe":
        return tf.Qwen3MoeConfig(intermediate_size=64, moe_intermediate_size=32, num_experts=experts, head_dim=8,
                                 **base)
    if arch == "mixtral":
        return tf.MixtralConfig(intermediate_size=32, num_local_experts=experts, **base)
    if arch == "phimoe":
        return tf.PhimoeConfig(intermediate_size=32, num_local_experts=experts, router_jitter_noise=0.01,
                               input_jitter_noise=0.0, **base)
    if arch == "granitemoe":
        return tf.GraniteMoeConfig(intermediate_size=32, num_local_experts=experts, **base)
    if arch == "deepseek_v3":
        base["num_key_value_heads"] = base["num_attention_heads"]
        return tf.DeepseekV3Config(intermediate_size=64, moe_intermediate_size=32, n_routed_experts=experts,
                                   n_shared_experts=1, n_group=2, topk_group=1, first_k_dense_replace=1,
                                   q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
                                   v_head_dim=8, norm_topk_prob=True, **base)
    if arch == "gpt_oss":
        return tf.GptOssConfig(intermediate_size=32, num_local_experts=experts, head_dim=8, sliding_window=16,
                               **base)
    raise ValueError(arch)


def tiny_moe(arch: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(tiny_moe_config(arch, **kw))
    with torch.no_grad():  # random routers with visible preferences, so routing is far from uniform
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.2 if ("gate" in name or "router" in name) else 0.05)
    model.eval()
    return model


def tiny_langmoe(seed: int = 0, experts: int = 4, top_k: int = 2, vocab: int = VOCAB, **kw):
    """A tiny Qwen3 upcycled by langmoe (MoEBlock in every layer), experts made distinct."""
    from langmoe.models.moe import moe_blocks
    from langmoe.models.upcycle import upcycle

    torch.manual_seed(seed)
    cfg = tf.Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                         tie_word_embeddings=False)
    model = upcycle(tf.AutoModelForCausalLM.from_config(cfg), layers="all", num_experts=experts, top_k=top_k, **kw)
    with torch.no_grad():
        for b in moe_blocks(model):
            for _, w in sorted(b.experts.named_parameters()):
                w.add_(torch.randn_like(w) * 0.05)
            b.router.weight.normal_(0.0, 0.3)
    model.eval()
    return model


def tokens(batch: int = 2, length: int = 12, seed: int = 1, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (batch, length), generator=g)
