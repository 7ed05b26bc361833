"""The shipped tiny base must have learned more than token frequencies: it beats the add-one unigram model's test
bits per byte on every built-in language (re-measured here, not read from pretrain.json)."""

import pytest
import torch

from langmoe.data.corpus import open_corpus
from langmoe.eval.perplexity import evaluate_languages
from langmoe.eval.unigram import unigram_bpb
from langmoe.models.base import load_model_and_tokenizer


@pytest.mark.slow
def test_builtin_base_beats_unigram_on_every_language():
    torch.set_num_threads(2)
    model, tokenizer = load_model_and_tokenizer("builtin")
    corpus = open_corpus("builtin")
    langs = list(corpus.languages())
    ours = evaluate_languages(model, tokenizer, corpus, langs, split="test", window=256, stride=128,
                              max_chars_per_lang=20000)
    unigram = unigram_bpb(tokenizer, corpus, langs, split="test", max_chars_per_lang=20000)
    worse = {lang: (round(ours[lang].bits_per_byte, 3), round(unigram[lang].bits_per_byte, 3))
             for lang in langs if ours[lang].bits_per_byte >= unigram[lang].bits_per_byte}
    assert not worse, f"base vs unigram bits/byte where the base is not better: {worse}"
