"""A language's held-out text and its score: the documents scored (`select_texts`), their tokens (`tokenize`),
the same tokens read from a token store (`document_tokens`), and `LangScore` (ppl and bits per byte from summed NLL). Shared by the model's evaluation (`perplexity`) and the
unigram baseline (`unigram`), which build on this module and not on each other."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from langmoe.data.packing import open_token_store
from langmoe.data.token_store import Request, default_token_store
from langmoe.errors import LangmoeError

__all__ = ["LN2", "LangScore", "document_tokens", "select_texts", "tokenize"]

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


def document_tokens(tokenizer, corpus, lang: str, split: str, max_chars: int | None = None,
                    token_store: Any = None) -> tuple[list[list[int]], int, int, int]:
    """(token ids of each document, UTF-8 bytes, characters, documents) of `select_texts(corpus, lang, split,
    max_chars)`, tokenised without special tokens.

    With a token store (given, or set by `using_token_store`), whole documents come from the store (tokenised
    once for every evaluation, up to `max_chars` characters); only a document cut by `max_chars` is tokenised
    here, from its first characters, exactly as without a store."""
    if max_chars is not None and max_chars <= 0:
        raise LangmoeError(f"max_chars_per_lang must be positive, got {max_chars}")
    if token_store is None and default_token_store() is None:
        texts = select_texts(corpus, lang, split, max_chars)
        return (tokenize(tokenizer, texts), sum(len(t.encode("utf-8")) for t in texts), sum(map(len, texts)),
                len(texts))
    store = open_token_store(token_store, tokenizer, progress="off")
    st = store.ensure(corpus, [Request(lang, split, chars=max_chars)])[(lang, split)]
    docs = st.docs()
    whole, room = len(docs), 0
    if max_chars is not None:
        ends = np.cumsum(docs[:, 2])
        whole = int(np.searchsorted(ends, max_chars, side="right"))
        room = max_chars - (int(ends[whole - 1]) if whole else 0) if whole < len(docs) else 0
    lists = [st.read(int(o) + 1, int(o) + int(t)).tolist() for o, t in docs[:whole, :2]]
    nbytes, chars = int(docs[:whole, 3].sum()), int(docs[:whole, 2].sum())
    if room > 0:  # the document the cap cuts: its first `room` characters, tokenised on their own
        text = next(itertools.islice(corpus.iter_documents(lang, split), whole, None)).text[:room]
        lists += tokenize(tokenizer, [text])
        nbytes, chars = nbytes + len(text.encode("utf-8")), chars + len(text)
    return lists, nbytes, chars, len(lists)
