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


# ---- on-disk world for the CLI: a char tokenizer, a saved tiny Llama and a JSONL corpus ------------------------

ALPHABETS = {"en": "abcdef", "fr": "abcdeg", "de": "hijklm"}
EOS = "<|endoftext|>"


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("".join(ALPHABETS.values())) | {" "})
    vocab = {EOS: 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def make_model_dir(root, seed: int = 0):
    tok = char_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return root


def make_corpus(root, docs: int = 12, seed: int = 0):
    import json
    import random

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for lang, letters in ALPHABETS.items():
        rows = []
        for split, n in (("train", docs), ("valid", 2), ("test", 2)):
            for i in range(n):
                words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 5))) for _ in range(30)]
                rows.append({"id": f"{lang}-{split}-{i}", "split": split, "text": " ".join(words)})
        (root / f"{lang}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root
