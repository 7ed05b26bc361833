"""Evaluation read from a token store scores exactly what it scores from text, cut documents included."""

import pytest
import torch
from eval_fixtures import CHARS, ListCorpus
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.data.token_store import TokenStore, using_token_store
from langmoe.eval.perplexity import evaluate_languages
from langmoe.eval.texts import document_tokens
from langmoe.eval.unigram import unigram_bpb

DATA = {
    "xa": {"train": ["ab ab", "cab", "éé d", "a"], "test": ["abc", "d é", "ba ba ba", "c"]},
    "xb": {"train": ["d", "dd ab"], "test": ["éa", "bd"]},
}


def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(CHARS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("max_chars", [None, 1, 3, 4, 7, 12, 100])
def test_document_tokens_from_the_store_equal_those_from_text(tok, tmp_path, max_chars):
    corpus = ListCorpus(DATA)
    store = TokenStore(tmp_path / "s", tok, progress="off")
    for lang in DATA:
        assert document_tokens(tok, corpus, lang, "test", max_chars, store) == \
            document_tokens(tok, corpus, lang, "test", max_chars)


def test_scores_and_unigram_equal_with_a_store(tok, tmp_path):
    corpus, m = ListCorpus(DATA), model()
    kw = dict(split="test", window=4, stride=2, max_chars_per_lang=7)
    plain = evaluate_languages(m, tok, corpus, list(DATA), **kw)
    with using_token_store(tmp_path / "s"):
        stored = evaluate_languages(m, tok, corpus, list(DATA), **kw)
        uni_stored = unigram_bpb(tok, corpus, list(DATA), max_chars_per_lang=7, max_train_chars_per_lang=6)
    assert {k: v.model_dump() for k, v in stored.items()} == {k: v.model_dump() for k, v in plain.items()}
    uni = unigram_bpb(tok, corpus, list(DATA), max_chars_per_lang=7, max_train_chars_per_lang=6)
    assert {k: v.model_dump() for k, v in uni_stored.items()} == {k: v.model_dump() for k, v in uni.items()}
    st = TokenStore(tmp_path / "s", tok, progress="off")
    assert sorted(st.streams()) == [("test", "xa"), ("test", "xb"), ("train", "xa"), ("train", "xb")]
    assert st.state("xa", "test").chars >= 7 and not st.state("xa", "test").exhausted  # only what the cap needs
