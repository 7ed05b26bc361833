import pytest
import torch
from data_fixtures import write_txt
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.data.corpus import FolderCorpus, open_corpus
from langmoe.data.tokenizer import EOT, balanced_texts, check_tokenizer_matches, default_cap, train_tokenizer
from langmoe.errors import LangmoeError


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def corpus(tmp_path):
    write_txt(tmp_path / "en.txt", [f"the quick brown fox {i} jumps over the lazy dog" for i in range(200)])
    write_txt(tmp_path / "ru.txt", [f"съешь же ещё этих мягких булок {i}" for i in range(40)])
    write_txt(tmp_path / "el.txt", [f"ξεσκεπάζω την ψυχοφθόρα βδελυγμία {i}" for i in range(10)])
    return FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)


def tiny_model(vocab):
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg)


def test_byte_level_bpe_specials_and_round_trip(corpus):
    tok = train_tokenizer(corpus, 400)
    assert 257 <= len(tok) <= 400
    assert tok.convert_ids_to_tokens(0) == EOT
    assert tok.eos_token_id == tok.bos_token_id == tok.pad_token_id == tok.unk_token_id == 0
    text = "Grüße, мир!  你好\n\n\tξ 🙂 end "  # includes characters never seen in training
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids
    # merges learned: frequent English words take fewer tokens than bytes
    assert len(tok("the quick brown fox")["input_ids"]) < len(b"the quick brown fox") / 2


def test_deterministic(corpus):
    a = train_tokenizer(corpus, 350, max_chars_per_lang=800, seed=1)
    b = train_tokenizer(corpus, 350, max_chars_per_lang=800, seed=1)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()


def test_balanced_cap(corpus):
    sizes = {lang: corpus.num_chars(lang, "train") for lang in corpus.languages()}
    assert default_cap(corpus, corpus.languages()) == sorted(sizes.values())[1]  # median_low of 3
    stats = {}
    train_tokenizer(corpus, 300, stats=stats)
    cap = stats["cap_chars_per_lang"]
    assert stats["chars_used"] == {lang: min(cap, sizes[lang]) for lang in sizes}
    # the sample is spread over the file (seeded), not the first documents only
    sample = list(balanced_texts(corpus, "en", 2000, seed=0))
    assert sum(map(len, sample)) == 2000
    firsts = [d.text for d in corpus.iter_documents("en", "train")][: len(sample)]
    assert sample != firsts


def test_bad_arguments(corpus):
    with pytest.raises(LangmoeError, match="at least 257"):
        train_tokenizer(corpus, 100)
    with pytest.raises(LangmoeError, match="not in the corpus"):
        train_tokenizer(corpus, 300, langs=["de"])
    with pytest.raises(LangmoeError, match="positive"):
        train_tokenizer(corpus, 300, max_chars_per_lang=0)


def test_check_tokenizer_matches(corpus):
    tok = train_tokenizer(corpus, 300, max_chars_per_lang=500)
    check_tokenizer_matches(tiny_model(len(tok)), tok)
    check_tokenizer_matches(tiny_model(len(tok) + 64), tok)  # padded embeddings are fine
    with pytest.raises(LangmoeError, match=f"has {len(tok)} tokens but .* has {len(tok) - 1} rows"):
        check_tokenizer_matches(tiny_model(len(tok) - 1), tok)


def test_builtin_small_sample():
    c = open_corpus("builtin")
    langs = sorted(c.languages())[:3]
    stats = {}
    tok = train_tokenizer(c, 300, langs=langs, max_chars_per_lang=3000, stats=stats)
    assert len(tok) == 300 and all(v <= 3000 for v in stats["chars_used"].values())
    text = next(c.iter_documents(langs[0], "test")).text[:500]
    assert tok.decode(tok(text)["input_ids"]) == text
