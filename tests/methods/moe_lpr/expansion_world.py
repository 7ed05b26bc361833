"""A tiny expansion world: synthetic languages (own alphabets), a char tokenizer, a 2-layer Llama, fast settings."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ALPHABETS = {"en": "abcdef", "de": "ghijkl", "es": "mnopqr", "it": "stuvwx", "fr": "abcxyz", "nl": "ghiyz"}
EOS = "<|endoftext|>"


def make_corpus(root: Path, langs=("en", "de", "es", "it", "fr", "nl"), docs=(30, 3, 3), seed: int = 0,
                empty: tuple[str, ...] = ()) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        letters = ALPHABETS[lang]
        rows = []
        for split, n in zip(("train", "valid", "test"), docs, strict=True):
            for i in range(0 if lang in empty and split == "train" else n):
                words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 5))) for _ in range(30)]
                rows.append({"id": f"{lang}-{split}-{i}", "split": split, "text": " ".join(words)})
        (root / f"{lang}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def char_tokenizer() -> PreTrainedTokenizerFast:
    chars = sorted(set("".join(ALPHABETS.values())) | {" "})
    vocab = {EOS: 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def make_base(root: Path, seed: int = 0, layers: int = 2) -> Path:
    tok = char_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return root


def fast_config(tmp: Path, **over) -> dict:
    corpus = tmp / "corpus"
    if not corpus.exists():
        make_corpus(corpus)
    base = tmp / "base"
    if not base.exists():
        make_base(base)
    cfg = {
        "model": str(base), "corpus": str(corpus), "new": ["es", "it"], "old": ["en", "de"],
        "block_len": 16, "micro_batch_size": 4, "max_train_tokens_per_lang": 3000,
        "stage1": {"steps": 4, "lr": 3e-3, "warmup_ratio": 0.0}, "stage2": {"steps": 4, "lr": 3e-3, "warmup_ratio": 0.0},
        "replay_share": 0.5, "threads": 1,
        "eval": {"window": 32, "stride": 16, "max_chars_per_lang": 300, "batch_size": 4, "routing_tokens_per_lang": 64},
    }
    cfg.update(over)
    return cfg
