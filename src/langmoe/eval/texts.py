"""A language's held-out text and its score: the documents scored (`select_texts`), their tokens (`tokenize`),
and `LangScore` (ppl and bits per byte from summed NLL). Shared by the model's evaluation (`perplexity`) and the
unigram baseline (`unigram`), which build on this module and not on each other."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel

from langmoe.errors import LangmoeError

__all__ = ["LN2", "LangScore", "select_texts", "tokenize"]

LN2 = math.log(2.0)


class LangScore(BaseModel):
    """Scores of one language on one split."""

    lang: str
    nll_sum: float  # nats, summed over scored tokens
    tokens: int  # scored tokens
    bytes: int  # UTF-8 bytes of the scored text
    chars: int
    docs: int
    ppl: float
    bits_per_byte: float

    @classmethod
    def from_sums(cls, lang: str, nll_sum: float, tokens: int, nbytes: int, chars: int, docs: int) -> LangScore:
        if tokens == 0 or nbytes == 0:
            raise LangmoeError(f"language {lang!r} has no text to score in this split: add documents or drop it")
        return cls(
            lang=lang,
            nll_sum=nll_sum,
            tokens=tokens,
            bytes=nbytes,
            chars=chars,
            docs=docs,
            ppl=math.exp(min(nll_sum / tokens, 700.0)),
            bits_per_byte=nll_sum / LN2 / nbytes,
        )


def select_texts(corpus, lang: str, split: str, max_chars: int | None = None) -> list[str]:
    """Non-empty documents of `lang`/`split` in corpus order, cut at `max_chars` characters in total."""
    if max_chars is not None and max_chars <= 0:
        raise LangmoeError(f"max_chars_per_lang must be positive, got {max_chars}")
    texts: list[str] = []
    used = 0
    for doc in corpus.iter_documents(lang, split):
        text = doc.text
        if not text:
            continue
        if max_chars is not None:
            room = max_chars - used
            if room <= 0:
                break
            text = text[:room]
        texts.append(text)
        used += len(text)
    return texts


def tokenize(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
