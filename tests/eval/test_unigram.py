from __future__ import annotations

import math

import pytest
from eval_fixtures import CHARS, ListCorpus

from langmoe.eval.unigram import unigram_bpb


def test_unigram_hand_computed(tok):
    # train "aab": counts a=2, b=1, N=3, V=7 → p(a)=3/10, p(b)=2/10, p(é)=1/10.
    corpus = ListCorpus({"xx": {"train": ["aab"], "test": ["abé"]}})
    s = unigram_bpb(tok, corpus, ["xx"])["xx"]
    nll = -(math.log(0.3) + math.log(0.2) + math.log(0.1))
    assert s.tokens == 3 and s.bytes == 4
    assert s.nll_sum == pytest.approx(nll, rel=1e-12)
    assert s.bits_per_byte == pytest.approx(nll / math.log(2) / 4, rel=1e-12)


def test_unigram_per_language_and_capped(tok):
    corpus = ListCorpus({"xx": {"train": ["aaaa"], "test": ["aaaa", "bbbb"]},
                         "yy": {"train": ["bbbb"], "test": ["aaaa"]}})
    s = unigram_bpb(tok, corpus, max_chars_per_lang=4)
    assert s["xx"].tokens == 4 and s["xx"].docs == 1
    assert s["xx"].nll_sum == pytest.approx(-4 * math.log(5 / 11))
    assert s["yy"].nll_sum == pytest.approx(-4 * math.log(1 / 11))
    assert len(CHARS) == 7
