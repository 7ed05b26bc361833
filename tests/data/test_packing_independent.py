"""Packing against a from-scratch reimplementation: per-language streams `eos d1 eos d2 ...`, blocks that never cross
a language boundary, tails kept (padded, masked) from 2 tokens, dropped at 1, and the per-language token cap."""

import pytest
import torch
from data_fixtures import CHARS, char_tokenizer, write_txt

from langmoe.data.corpus import FolderCorpus
from langmoe.data.packing import IGNORE_INDEX, pack_corpus
from langmoe.errors import LangmoeError

EOS = 0
ID = {c: i for i, c in enumerate(CHARS)}

# Stream lengths (eos + chars per doc): en 2+3+2 = 7, ru 3+2 = 5, fr 6, de 4 + 4 = 8 -> with block_len 3 the
# tails are 1 (dropped), 2 (kept), 0 and 2 tokens.
DOCS = {
    "en": ["a", "bc", "c"],
    "ru": ["дд", "é"],
    "fr": ["abcab"],
    "de": ["a cb", "ддд"],
}


def reference_blocks(docs_of: dict[str, list[str]], block_len: int, max_tokens: int | None = None):
    """(tokens, lang, lengths) rows packed by hand, one language at a time."""
    rows = []
    for li, docs in enumerate(docs_of.values()):
        stream = []
        for d in docs:
            stream += [EOS] + [ID[ch] for ch in d]
        if max_tokens is not None:
            stream = stream[:max_tokens]
        for start in range(0, len(stream), block_len):
            chunk = stream[start:start + block_len]
            if len(chunk) < 2:
                continue
            rows.append((chunk + [EOS] * (block_len - len(chunk)), li, len(chunk)))
    return rows


@pytest.fixture
def corpus(tmp_path):
    for lang, docs in DOCS.items():
        write_txt(tmp_path / f"{lang}.txt", docs)
    return FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)


@pytest.mark.parametrize("block_len", [2, 3, 4, 5])
def test_blocks_equal_a_hand_packing_per_language(corpus, block_len):
    b = pack_corpus(corpus, char_tokenizer(), list(DOCS), "train", block_len)
    ref = reference_blocks(DOCS, block_len)
    assert b.tokens.tolist() == [r[0] for r in ref]
    assert b.lang.tolist() == [r[1] for r in ref]
    assert b.lengths.tolist() == [r[2] for r in ref]
    per_lang = b.meta["per_lang"]
    for lang, docs in DOCS.items():
        assert per_lang[lang]["tokens"] == sum(len(d) + 1 for d in docs)


def test_each_language_starts_a_fresh_block_with_its_eos(corpus):
    b = pack_corpus(corpus, char_tokenizer(), list(DOCS), "train", 3)
    langs = b.lang.tolist()
    firsts = [i for i in range(len(langs)) if i == 0 or langs[i] != langs[i - 1]]
    assert len(firsts) == len(DOCS)
    for i in firsts:
        assert b.tokens[i, 0].item() == EOS  # never the previous language's tail
    # en: 7 tokens -> 2 full blocks, its 1-token tail ("c") dropped rather than moved into ru's first block
    assert b.tokens[:2].tolist() == [[EOS, ID["a"], EOS], [ID["b"], ID["c"], EOS]]
    assert b.tokens[2].tolist() == [EOS, ID["д"], ID["д"]]
    # ru: 5 tokens -> one full block + a 2-token tail, padded and masked
    assert b.tokens[3].tolist() == [EOS, ID["é"], EOS] and b.lengths[3].item() == 2


def test_eos_separates_documents_inside_a_block(corpus):
    b = pack_corpus(corpus, char_tokenizer(), ["de"], "train", 8)
    assert b.tokens.tolist() == [[EOS, ID["a"], ID[" "], ID["c"], ID["b"], EOS, ID["д"], ID["д"]]]
    b9 = pack_corpus(corpus, char_tokenizer(), ["de"], "train", 9)  # one token more than the stream
    assert b9.tokens[0, :9].tolist() == [EOS, ID["a"], ID[" "], ID["c"], ID["b"], EOS, ID["д"], ID["д"], ID["д"]]
    b10 = pack_corpus(corpus, char_tokenizer(), ["de"], "train", 10)
    assert b10.lengths.tolist() == [9]


def test_tail_labels_mask_exactly_the_padding(corpus):
    b = pack_corpus(corpus, char_tokenizer(), list(DOCS), "train", 3)
    batch = b.batch(list(range(len(b))))
    for r in range(len(b)):
        n = int(b.lengths[r])
        labels = batch["labels"][r].tolist()
        assert labels[:n] == b.tokens[r, :n].tolist()
        assert labels[n:] == [IGNORE_INDEX] * (3 - n)
    assert b.num_tokens() == sum(r[2] for r in reference_blocks(DOCS, 3))


def test_a_one_token_cap_leaves_nothing_to_pack(corpus):
    with pytest.raises(LangmoeError, match="no train text to pack"):
        pack_corpus(corpus, char_tokenizer(), list(DOCS), "train", 3, max_tokens_per_lang=1)


@pytest.mark.parametrize("cap", [2, 3, 4, 6, 7, 8])
def test_token_cap_cuts_the_stream_of_every_language(corpus, cap):
    b = pack_corpus(corpus, char_tokenizer(), list(DOCS), "train", 3, max_tokens_per_lang=cap)
    ref = reference_blocks(DOCS, 3, max_tokens=cap)
    assert b.tokens.tolist() == [r[0] for r in ref]
    assert b.lengths.tolist() == [r[2] for r in ref]
    for lang, docs in DOCS.items():
        assert b.meta["per_lang"][lang]["tokens"] == min(cap, sum(len(d) + 1 for d in docs))


def test_batch_labels_per_token_language_and_group(corpus):
    b = pack_corpus(corpus, char_tokenizer(), list(DOCS), "train", 3, group_of={"en": 1, "ru": 0, "fr": 1, "de": 2})
    batch = b.batch([0, 2, 4])
    assert batch["lang_ids"].tolist() == [[0] * 3, [1] * 3, [2] * 3]
    assert batch["group_ids"].tolist() == [[1] * 3, [0] * 3, [1] * 3]
    assert torch.equal(batch["input_ids"], b.tokens[[0, 2, 4]])
