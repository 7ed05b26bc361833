"""Tiny Llama and synthetic packed blocks for the DMoE analysis tests (no tokenizer, no corpus)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.data.packing import LanguageIndex, PackedBlocks

VOCAB, SEQ = 48, 16
# en and fr draw from the same tokens, de from disjoint ones: en/fr should be the similar pair
TOKENS = {"en": range(1, 12), "fr": range(1, 12), "de": range(24, 40)}


def tiny_llama(seed: int = 0, layers: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=SEQ,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def synthetic_blocks(langs=("en", "fr", "de"), n_per_lang: int = 12, seed: int = 0) -> PackedBlocks:
    """Blocks whose language determines the token set; en and fr follow the same rule (different samples)."""
    g = torch.Generator().manual_seed(seed)
    rows, lang_ids = [], []
    for li, lang in enumerate(langs):
        toks = torch.tensor(list(TOKENS[lang]))
        for _ in range(n_per_lang):
            start = int(torch.randint(0, len(toks), (1,), generator=g))
            step = 1
            idx = (start + step * torch.arange(SEQ)) % len(toks)
            rows.append(toks[idx])
            lang_ids.append(li)
    return PackedBlocks(tokens=torch.stack(rows), lang=torch.tensor(lang_ids), index=LanguageIndex(list(langs)))
