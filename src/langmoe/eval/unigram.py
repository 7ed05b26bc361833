"""Per-language unigram baseline: a base that does not beat it has learned nothing beyond token frequencies.

The model is estimated on the train split of each language with add-one smoothing over the whole vocabulary,
``p(t) = (count(t) + 1) / (N + V)``, and scored on the same text, the same way, as `evaluate_languages` scores a
model (same documents, same cap, separators unscored), so the two bits-per-byte numbers compare directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from langmoe.errors import LangmoeError
from langmoe.eval.texts import LangScore, document_tokens


def unigram_log_probs(token_lists: Sequence[Sequence[int]], vocab_size: int) -> torch.Tensor:
    """log p over the vocabulary (fp64) from token lists, add-one smoothed."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for ids in token_lists:
        if len(ids):
            t = torch.as_tensor(list(ids), dtype=torch.long)
            if int(t.max()) >= vocab_size or int(t.min()) < 0:
                raise LangmoeError(f"token id out of range for a vocabulary of {vocab_size}: use the matching tokenizer")
            counts += torch.bincount(t, minlength=vocab_size).double()
    return torch.log(counts + 1.0) - math.log(float(counts.sum()) + vocab_size)


def unigram_bpb(
    tokenizer,
    corpus,
    langs: Sequence[str] | None = None,
    split: str = "test",
    train_split: str = "train",
    max_chars_per_lang: int | None = None,
    max_train_chars_per_lang: int | None = None,
    vocab_size: int | None = None,
    token_store: Any = None,
) -> dict[str, LangScore]:
    """Per-language scores of the add-one unigram model trained on `train_split`, evaluated on `split` (the
    documents' tokens from `token_store` when given, see `document_tokens`)."""
    langs = list(langs) if langs is not None else list(corpus.languages())
    vocab = int(vocab_size or len(tokenizer))
    scores: dict[str, LangScore] = {}
    for lang in langs:
        train_ids = document_tokens(tokenizer, corpus, lang, train_split, max_train_chars_per_lang, token_store)[0]
        logp = unigram_log_probs(train_ids, vocab)
        test_lists, nbytes, chars, ndocs = document_tokens(tokenizer, corpus, lang, split, max_chars_per_lang,
                                                           token_store)
        test_ids = [i for ids in test_lists for i in ids]
        if any(i >= vocab for i in test_ids):
            raise LangmoeError(f"token id out of range for a vocabulary of {vocab}: use the matching tokenizer")
        nll = -float(logp[torch.as_tensor(test_ids, dtype=torch.long)].sum()) if test_ids else 0.0
        scores[lang] = LangScore.from_sums(lang, nll, len(test_ids), nbytes, chars, ndocs)
    return scores
