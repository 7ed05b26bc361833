"""Train a byte-level BPE tokenizer on a language-balanced sample, and check a tokenizer fits a model.

Why balanced: BPE merges follow frequency, so an unbalanced corpus gives the big languages most of the
vocabulary and leaves thin languages (and their scripts) split into bytes. Each language contributes at most
`max_chars_per_lang` characters (default: the median language size, so about half the languages are capped).
Why byte-level: every string is encodable (no unknown tokens) and decoding is an exact round trip, so
bits per byte compare across tokenizers.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Iterator, Sequence
from typing import Any

from langmoe.data.corpus import choose_languages
from langmoe.errors import LangmoeError

EOT = "<|endoftext|>"
MIN_VOCAB = 257  # 256 byte symbols + <|endoftext|>


def _accept(seed: int, lang: str, doc_id: str, rate: float) -> bool:
    h = hashlib.blake2b(f"tok\0{seed}\0{lang}\0{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64 < rate


def balanced_texts(
    corpus, lang: str, cap: int | None, seed: int = 0, split: str = "train", used: dict[str, int] | None = None
) -> Iterator[str]:
    """Stream up to `cap` characters of one language, spread over the whole file (not just its beginning).

    Pass 1 keeps each document with probability cap/total (decided by a seeded hash of its id, so the sample is
    deterministic); pass 2 tops up from the skipped documents in file order. The last document is cut to fit.
    """
    total = corpus.num_chars(lang, split)
    budget = total if cap is None else min(cap, total)
    rate = 1.0 if total == 0 else budget / total
    got = 0
    taken: set[str] = set()
    for pass_no in (1, 2):
        if got >= budget:
            break
        for doc in corpus.iter_documents(lang, split):
            if pass_no == 1 and rate < 1.0 and not _accept(seed, lang, doc.id, rate):
                continue
            if pass_no == 2 and doc.id in taken:
                continue
            text = doc.text[: budget - got]
            if not text:
                break
            got += len(text)
            if rate < 1.0:
                taken.add(doc.id)
            yield text
            if got >= budget:
                break
        if rate >= 1.0:
            break
    if used is not None:
        used[lang] = got


def default_cap(corpus, langs: Sequence[str], split: str = "train") -> int:
    """The median (lower) language size in characters: the cap that keeps big languages from dominating."""
    sizes = [corpus.num_chars(lang, split) for lang in langs]
    return max(1, int(statistics.median_low(sizes)))


def train_tokenizer(
    corpus,
    vocab_size: int,
    langs: Sequence[str] | None = None,
    max_chars_per_lang: int | None = None,
    seed: int = 0,
    split: str = "train",
    min_frequency: int = 2,
    stats: dict[str, Any] | None = None,
):
    """Byte-level BPE with `<|endoftext|>` (id 0) as bos/eos/pad/unk, as a `PreTrainedTokenizerFast`.

    Deterministic for the same corpus, arguments and seed. `stats`, if given, receives the characters used per
    language and the cap.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB:
        raise LangmoeError(f"vocab_size must be at least {MIN_VOCAB} (256 bytes + {EOT}), got {vocab_size}")
    if max_chars_per_lang is not None and max_chars_per_lang <= 0:
        raise LangmoeError(f"max_chars_per_lang must be positive, got {max_chars_per_lang}")

    langs = choose_languages(corpus, langs)
    cap = max_chars_per_lang if max_chars_per_lang is not None else default_cap(corpus, langs, split)
    used: dict[str, int] = {}

    def texts() -> Iterator[str]:
        for lang in langs:
            yield from balanced_texts(corpus, lang, cap, seed=seed, split=split, used=used)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        min_frequency=int(min_frequency),
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(), trainer=trainer)
    if sum(used.values()) == 0:
        raise LangmoeError(f"no {split} text to train the tokenizer on: add documents to the corpus")
    if stats is not None:
        stats.update({"cap_chars_per_lang": cap, "chars_used": dict(used), "vocab_size": tok.get_vocab_size()})
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        unk_token=EOT,
        clean_up_tokenization_spaces=False,
    )


def check_tokenizer_matches(model, tokenizer) -> None:
    """Every token id the tokenizer can emit (and its special ids) must index a row of the model's embeddings."""
    rows: list[tuple[str, int]] = []
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        rows.append(("input embedding", int(emb.weight.shape[0])))
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and getattr(out, "weight", None) is not None:
        rows.append(("output layer", int(out.weight.shape[0])))
    if not rows:
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if vocab is None:
            raise LangmoeError("cannot find the model's vocabulary size: pass a causal LM with input embeddings")
        rows.append(("config.vocab_size", int(vocab)))
    what, limit = min(rows, key=lambda r: r[1])
    n = len(tokenizer)
    if n > limit:
        raise LangmoeError(
            f"the tokenizer has {n} tokens but the model's {what} has {limit} rows: use the tokenizer the model "
            "was trained with (or resize the model's embeddings)"
        )
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        tid = getattr(tokenizer, name, None)
        if tid is not None and not 0 <= int(tid) < limit:
            raise LangmoeError(f"tokenizer {name}={tid} is outside the model's {limit} embedding rows: "
                               "use the tokenizer the model was trained with")


def chars_per_token(tokenizer, corpus, langs: Sequence[str], split: str = "valid",
                    max_chars: int = 20_000) -> dict[str, float]:
    """Characters per token on up to `max_chars` of each language (higher = the vocabulary covers it better)."""
    out: dict[str, float] = {}
    for lang in langs:
        texts: list[str] = []
        got = 0
        for doc in corpus.iter_documents(lang, split):
            texts.append(doc.text[: max_chars - got])
            got += len(texts[-1])
            if got >= max_chars:
                break
        if not texts:
            continue
        n_tok = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        out[lang] = got / max(1, n_tok)
    return out
