"""A tiny world for pipeline tests: a JSONL corpus of synthetic languages, a char tokenizer and a 2-layer Llama."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Each language draws words from its own alphabet; en/fr and de/nl share letters, so they are "related".
ALPHABETS = {"en": "abcdef", "fr": "abcdeg", "de": "hijklm", "nl": "hijkln", "es": "opqrst", "it": "opqrsu"}
EOS = "<|endoftext|>"


def make_corpus(root: Path, langs=("en", "fr", "de", "nl", "es"), docs=(40, 4, 4), seed: int = 0,
                alphabets: dict[str, str] = ALPHABETS, empty: tuple[str, ...] = ()) -> Path:
    """`docs` = documents per train/valid/test split; languages in `empty` get no train documents."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        letters = alphabets[lang]
        rows = []
        for split, n in zip(("train", "valid", "test"), docs, strict=True):
            for i in range(0 if lang in empty and split == "train" else n):
                words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 5))) for _ in range(30)]
                rows.append({"id": f"{lang}-{split}-{i}", "split": split, "text": " ".join(words)})
        (root / f"{lang}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def char_tokenizer(alphabets: dict[str, str] = ALPHABETS) -> PreTrainedTokenizerFast:
    chars = sorted(set("".join(alphabets.values())) | {" "})
    vocab = {EOS: 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def make_base(root: Path, seed: int = 0, layers: int = 3, alphabets: dict[str, str] = ALPHABETS) -> Path:
    tok = char_tokenizer(alphabets)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return root


DMOE = {"num_groups": 2, "groups": [["en", "fr"], ["de", "nl"]], "moe_layers": [0, 2], "top_k": 2,
        "stage1": {"steps": 4}, "stage2": {"steps": 6}}


def tiny_recipe(tmp: Path, systems=("base", "cpt"), dmoe: dict | None = None, new_language: dict | None = None,
                **over) -> dict:
    """A recipe dict (registry shape) on the tiny world: budget 10 steps; `systems` are names, expanded to entries
    with tiny settings (DMoE: fixed groups and layers, 4 + 6 steps, `dmoe` overrides; BTX: 6 MoE steps)."""
    corpus = make_corpus(tmp / "corpus")
    base = make_base(tmp / "base")
    entries = []
    for name in systems:
        if not isinstance(name, str):
            entries.append(name)
        elif name in ("dmoe", "dmoe_random"):
            nl = {"new_language": new_language} if new_language and name == "dmoe" else {}
            entries.append({"name": name, **DMOE, **(dmoe or {}), **nl})
        elif name == "btx":
            entries.append({"name": "btx", "moe_steps": 6})
        else:
            entries.append(name)
    recipe = {
        "name": "tiny", "model": str(base), "corpus": str(corpus), "languages": ["en", "fr", "de", "nl"],
        "data": {"block_len": 16, "micro_batch_size": 4, "max_train_tokens_per_lang": 2000},
        "budget_steps": 10, "optim": {"lr": 3e-3, "warmup_ratio": 0.0},
        "eval": {"window": 32, "stride": 16, "max_chars_per_lang": 300, "batch_size": 4},
        "systems": entries, "threads": 1, "save_every": 2,
    }
    recipe.update(over)
    return recipe
