import pytest
import torch
from data_fixtures import char_tokenizer, write_txt
from transformers import GPT2Config, LlamaConfig

import langmoe.data.parallel_tokenize as parallel_tokenize
from langmoe.data.corpus import FolderCorpus
from langmoe.data.packing import (
    IGNORE_INDEX,
    LanguageIndex,
    PackedBlocks,
    check_block_len,
    pack_corpus,
)
from langmoe.data.tokenizer import train_tokenizer
from langmoe.errors import LangmoeError


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def corpus(tmp_path):
    write_txt(tmp_path / "en.txt", ["ab", "c"])  # stream: 0 1 2 0 3
    write_txt(tmp_path / "ru.txt", ["abc ab", "дд"])  # stream: 0 1 2 3 4 1 2 0 6 6
    return FolderCorpus(tmp_path / "", valid_frac=0.0, test_frac=0.0)


def test_hand_packed_blocks(corpus):
    b = pack_corpus(corpus, char_tokenizer(), ["en", "ru"], "train", 3)
    assert b.tokens.tolist() == [[0, 1, 2], [0, 3, 0], [0, 1, 2], [3, 4, 1], [2, 0, 6]]  # ru's last "6" dropped
    assert b.lang.tolist() == [0, 0, 1, 1, 1] and b.lengths.tolist() == [3, 2, 3, 3, 3]
    assert b.counts() == {"en": 2, "ru": 3} and b.num_tokens() == 14
    batch = b.batch([1, 3])
    assert batch["input_ids"].tolist() == [[0, 3, 0], [3, 4, 1]]
    assert batch["labels"].tolist() == [[0, 3, IGNORE_INDEX], [3, 4, 1]]
    assert batch["lang_ids"].tolist() == [[0, 0, 0], [1, 1, 1]]
    assert batch["group_ids"].tolist() == [[-1] * 3] * 2
    assert all(v.dtype == torch.long for v in batch.values())
    g = b.batch([1, 3], group_of={"en": 5, "ru": 2})["group_ids"]
    assert g.tolist() == [[5] * 3, [2] * 3]
    with pytest.raises(LangmoeError, match="ru have no group"):
        b.batch([3], group_of={"en": 0})


def test_max_tokens_and_group_index(corpus):
    b = pack_corpus(corpus, char_tokenizer(), ["ru"], "train", 2, max_tokens_per_lang=5, group_of={"ru": 1})
    assert b.tokens.tolist() == [[0, 1], [2, 3]]  # 5 tokens -> 2 blocks, a 1-token tail is dropped
    assert b.batch([0])["group_ids"].tolist() == [[1, 1]]


def test_round_trip_with_trained_bpe(tmp_path):
    docs = [f"Ein kleiner Satz Nummer {i}, schön!" for i in range(30)]
    write_txt(tmp_path / "de.txt", docs)
    corpus = FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)
    tok = train_tokenizer(corpus, 300)
    b = pack_corpus(corpus, tok, ["de"], "train", 16)
    flat = torch.cat([b.tokens[i, : b.lengths[i]] for i in range(len(b))]).tolist()
    text = tok.decode(flat)
    assert text == "".join("<|endoftext|>" + d for d in docs)[: len(text)]
    assert len(text) > 0.9 * len("".join(docs))


@pytest.mark.parametrize("name", ["blocks.pt", "blocks.safetensors"])
def test_save_load(corpus, tmp_path, name):
    b = pack_corpus(corpus, char_tokenizer(), ["en", "ru"], "train", 3, group_of={"en": 0, "ru": 1})
    b.save(tmp_path / name)
    c = PackedBlocks.load(tmp_path / name)
    assert torch.equal(c.tokens, b.tokens) and c.tokens.dtype == torch.long
    assert torch.equal(c.lang, b.lang) and torch.equal(c.lengths, b.lengths)
    assert c.index == b.index and c.index.group_of == {"en": 0, "ru": 1} and c.meta == b.meta
    assert not list(tmp_path.glob(".*tmp"))
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(LangmoeError, match="not a packed-blocks file"):
        PackedBlocks.load(tmp_path / "bad.pt")


def test_cache_tokenises_once(corpus, tmp_path, monkeypatch):
    """With cache_dir the streams live in a token store under cache_dir/tokens: packing again (another block
    length, another grouping) reads it and tokenises nothing."""
    tok = char_tokenizer()
    a = pack_corpus(corpus, tok, ["en", "ru"], "train", 3, cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / "tokens" / "manifest.json").is_file()

    def boom(*a, **k):
        raise AssertionError("should read the store")

    monkeypatch.setattr(parallel_tokenize.DocumentEncoder, "encode", boom)
    b = pack_corpus(corpus, tok, ["en", "ru"], "train", 3, cache_dir=tmp_path / "cache", group_of={"en": 1, "ru": 0})
    assert torch.equal(a.tokens, b.tokens) and b.index.group_of == {"en": 1, "ru": 0}
    assert pack_corpus(corpus, tok, ["en", "ru"], "train", 3, cache_dir=tmp_path / "cache").index.group_of is None
    c = pack_corpus(corpus, tok, ["ru"], "train", 4, cache_dir=tmp_path / "cache")
    assert c.tokens.tolist() == [[0, 1, 2, 3], [4, 1, 2, 0], [6, 6, 0, 0]] and c.lengths.tolist() == [4, 4, 2]


def test_views_read_only_what_they_are_asked(corpus):
    """subset / only / language / concat keep reading from the store; rows equal the materialised tokens."""
    b = pack_corpus(corpus, char_tokenizer(), ["en", "ru"], "train", 3)
    assert b.rows([4, 0]).tolist() == [b.tokens[4].tolist(), b.tokens[0].tolist()]
    sub = b.subset([1, 3])
    assert sub.tokens.tolist() == [[0, 3, 0], [3, 4, 1]] and sub.lang.tolist() == [0, 1] and sub.index == b.index
    ru = b.language("ru")
    assert ru.index.codes == ["ru"] and ru.lang.tolist() == [0, 0, 0] and torch.equal(ru.tokens, b.tokens[2:])
    assert torch.equal(b.only(["ru"]).lang, torch.tensor([1, 1, 1]))
    both = PackedBlocks.concat(b.language("en"), ru)
    assert both.index.codes == ["en", "ru"] and torch.equal(both.tokens, b.tokens)
    assert torch.equal(both.lang, b.lang) and torch.equal(both.lengths, b.lengths)
    mixed = PackedBlocks.concat(b.language("en"), PackedBlocks(tokens=ru.tokens, lang=ru.lang, index=ru.index,
                                                               lengths=ru.lengths))
    assert torch.equal(mixed.tokens, b.tokens)


def test_errors(corpus):
    tok = char_tokenizer()
    with pytest.raises(LangmoeError, match="not in the corpus"):
        pack_corpus(corpus, tok, ["de"], "train", 3)
    with pytest.raises(LangmoeError, match="no test text"):
        pack_corpus(corpus, tok, ["en"], "test", 3)
    tok.eos_token = None
    with pytest.raises(LangmoeError, match="no eos token"):
        pack_corpus(corpus, tok, ["en"], "train", 3)
    with pytest.raises(LangmoeError, match="duplicate"):
        LanguageIndex(["en", "en"])
    with pytest.raises(LangmoeError, match="have no group"):
        LanguageIndex(["en", "ru"], {"en": 0})


def test_check_block_len():
    check_block_len(LlamaConfig(max_position_embeddings=8), 8)
    with pytest.raises(LangmoeError, match="exceeds the model's max_position_embeddings=8"):
        check_block_len(LlamaConfig(max_position_embeddings=8), 9)
    with pytest.raises(LangmoeError, match="=16: lower block_len"):
        check_block_len(GPT2Config(n_positions=16), 17)
    with pytest.raises(LangmoeError, match="at least 2"):
        check_block_len(LlamaConfig(), 1)
