"""The token store: streams equal a hand-built `eos d1 eos d2 ...`, only what is asked is tokenised, a store grows
when more is asked, and kills, cut shards, a full disk, another tokenizer or corpus are one line and lose nothing."""

import errno
import hashlib
import json
import warnings

import numpy as np
import pytest
import torch
from data_fixtures import CHARS, char_tokenizer, write_txt

import langmoe.data.parallel_tokenize as parallel_tokenize
import langmoe.data.token_store as token_store
from langmoe.data.corpus import FolderCorpus, open_corpus
from langmoe.data.packing import pack_corpus
from langmoe.data.parallel_tokenize import DocumentEncoder
from langmoe.data.token_store import Request, TokenStore
from langmoe.errors import LangmoeError

ID = {c: i for i, c in enumerate(CHARS)}
DOCS = {"en": ["ab", "c", "abc", "cab", "a b", "bb"], "ru": ["дд", "дé", "д"]}


def reference_stream(docs):
    return [t for d in docs for t in [0] + [ID[ch] for ch in d]]


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for lang, docs in DOCS.items():
        write_txt(root / f"{lang}.txt", docs)
    return FolderCorpus(root, valid_frac=0.0, test_frac=0.0)


def store_at(tmp_path, name="store", **kw):
    kw.setdefault("progress", "off")
    return TokenStore(tmp_path / name, char_tokenizer(), **kw)


def test_stream_document_index_and_dtype(corpus, tmp_path):
    st = store_at(tmp_path).ensure(corpus, [Request("en", "train")])[("en", "train")]
    ref = reference_stream(DOCS["en"])
    assert st.read(0, len(st)).tolist() == ref and st.dtype == np.uint16 and st.state.exhausted
    docs = st.docs()
    assert docs[:, 1].tolist() == [len(d) + 1 for d in DOCS["en"]]  # tokens with the eos
    assert docs[:, 0].tolist() == np.concatenate([[0], np.cumsum(docs[:-1, 1])]).tolist()
    assert docs[:, 2].tolist() == [len(d) for d in DOCS["en"]] and st.ids() == [str(i) for i in range(6)]
    assert (tmp_path / "store" / "train" / "en" / "00000.tokens").stat().st_size == 2 * len(ref)


def test_only_what_is_asked_then_extended(corpus, tmp_path, monkeypatch):
    """A request for 5 tokens stores whole documents up to the first that reaches 5 (2 docs: 3 + 2 tokens); a later
    request for more continues after them, and blocks never depend on how the store grew."""
    store = store_at(tmp_path, shard_tokens=4)
    st = store.ensure(corpus, [Request("en", "train", tokens=5)])[("en", "train")]
    assert len(st) == 5 and st.state.docs == 2 and not st.state.exhausted
    encoded = []
    real = DocumentEncoder.encode
    monkeypatch.setattr(DocumentEncoder, "encode", lambda self, texts: encoded.extend(texts) or real(self, texts))
    st = store.ensure(corpus, [Request("en", "train", tokens=12)])[("en", "train")]
    assert encoded[:2] == ["abc", "cab"] and st.state.docs == 4 and len(st) == 13
    assert st.read(0, 13).tolist() == reference_stream(DOCS["en"])[:13]
    assert [s.tokens for s in st.state.shards] == [5, 4, 4]  # shard 0 ended with the first request
    grown = pack_corpus(corpus, char_tokenizer(), ["en"], "train", 3, max_tokens_per_lang=10, token_store=store)
    fresh = pack_corpus(corpus, char_tokenizer(), ["en"], "train", 3, max_tokens_per_lang=10)
    assert torch.equal(grown.tokens, fresh.tokens) and torch.equal(grown.lengths, fresh.lengths)
    encoded.clear()
    store.ensure(corpus, [Request("en", "train", tokens=13)])
    assert encoded == []


def test_reads_across_shards(corpus, tmp_path):
    st = store_at(tmp_path, shard_tokens=3).ensure(corpus, [Request("en", "train")])[("en", "train")]
    ref = reference_stream(DOCS["en"])
    assert len(st.state.shards) > 3
    for a in range(len(ref)):
        for b in range(a, len(ref) + 1):
            assert st.read(a, b).tolist() == ref[a:b]
    with pytest.raises(LangmoeError, match="outside the stored stream"):
        st.read(0, len(ref) + 1)


def test_chars_request(corpus, tmp_path):
    st = store_at(tmp_path).ensure(corpus, [Request("en", "train", chars=4)])[("en", "train")]
    assert st.state.docs == 3 and st.state.chars == 6  # "ab" + "c" = 3 < 4, "abc" reaches it


def _build(corpus, tmp_path, name):
    store = store_at(tmp_path, name=name, shard_tokens=4)
    store.ensure(corpus, [Request("en", "train"), Request("ru", "train", tokens=4)])
    return store.content_hash(verify=True)


@pytest.mark.parametrize("point", ["shard-written", "state-written"])
@pytest.mark.parametrize("nth", [1, 2, 4])
def test_kill_then_rerun_gives_the_same_store(corpus, tmp_path, monkeypatch, point, nth):
    """A crash at the n-th shard (after its files are renamed, or after state.json lists it) keeps what is listed;
    the rerun removes the leftovers and ends with exactly the store of an uninterrupted build."""
    expected = _build(corpus, tmp_path, "uninterrupted")
    seen = []

    def crash(p):
        if p == point:
            seen.append(p)
            if len(seen) == nth:
                raise KeyboardInterrupt
    monkeypatch.setattr(token_store, "_fault", crash)
    with pytest.raises(KeyboardInterrupt):
        _build(corpus, tmp_path, "killed")
    state = json.loads((tmp_path / "killed" / "train" / "en" / "state.json").read_text()) \
        if (tmp_path / "killed" / "train" / "en" / "state.json").is_file() else {"shards": []}
    assert len(state["shards"]) == (nth if point == "state-written" else nth - 1)
    monkeypatch.setattr(token_store, "_fault", lambda p: None)
    assert _build(corpus, tmp_path, "killed") == expected


def test_disk_full_keeps_finished_shards(corpus, tmp_path, monkeypatch):
    expected = _build(corpus, tmp_path, "ok")
    real = token_store._write_atomic
    calls = []

    def full(path, data):
        calls.append(path)
        if len(calls) == 7:  # the third shard's .tokens file
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)
    monkeypatch.setattr(token_store, "_write_atomic", full)
    with pytest.raises(LangmoeError, match=r"No space left on device.*free disk space.*finished shards are kept"):
        _build(corpus, tmp_path, "full")
    folder = tmp_path / "full" / "train" / "en"
    assert len(json.loads((folder / "state.json").read_text())["shards"]) == 2
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("0")) == [
        f"0000{k}.{x}" for k in range(2) for x in ("docs.npy", "ids.jsonl", "tokens")]
    monkeypatch.setattr(token_store, "_write_atomic", real)
    assert _build(corpus, tmp_path, "full") == expected


def test_cut_shard_is_dropped_and_tokenised_again(corpus, tmp_path):
    expected = _build(corpus, tmp_path, "s")
    shard = tmp_path / "s" / "train" / "en" / "00001.tokens"
    shard.write_bytes(shard.read_bytes()[:-2])
    store = store_at(tmp_path, name="s", shard_tokens=4)
    with pytest.raises(LangmoeError, match="missing or cut short"):
        store.verify_stream("en", "train")
    with pytest.raises(LangmoeError, match="00001.tokens is missing or cut short: rerun the command"):
        store.stream("en", "train")
    with pytest.warns(UserWarning, match=r"00001.tokens is missing or cut short: dropping it and the \d+ shard"):
        store.ensure(corpus, [Request("en", "train"), Request("ru", "train", tokens=4)])
    assert store.content_hash(verify=True) == expected
    (tmp_path / "s" / "train" / "en" / "00000.tokens").write_bytes(b"\0\0" * 5)  # same size, other bytes
    with pytest.raises(LangmoeError, match="does not match its checksum"):
        store.content_hash(verify=True)


def test_another_tokenizer_or_corpus(corpus, tmp_path):
    store_at(tmp_path).ensure(corpus, [Request("en", "train")])
    other = char_tokenizer()
    other.add_tokens(["zz"])
    with pytest.raises(LangmoeError, match="was tokenised with another tokenizer"):
        TokenStore(tmp_path / "store", other, progress="off")
    write_txt(corpus.root / "en.txt", ["cab ba"])
    with pytest.raises(LangmoeError, match="holds 'en' of another corpus"):
        store_at(tmp_path).ensure(FolderCorpus(corpus.root, valid_frac=0.0, test_frac=0.0), [Request("en", "train")])
    with warnings.catch_warnings(record=True) as w:  # a store langmoe owns is replaced instead
        warnings.simplefilter("always")
        owned = TokenStore(tmp_path / "store", other, owned=True, progress="off")
        got = owned.ensure(FolderCorpus(corpus.root, valid_frac=0.0, test_frac=0.0), [Request("en", "train")])
    assert any("another tokenizer" in str(x.message) for x in w)
    assert got[("en", "train")].read(0, 7).tolist() == [0, 3, 1, 2, 4, 2, 1]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(LangmoeError, match="is not a token store"):
        store_at(tmp_path, name="junk")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LangmoeError, match="is a file"):
        store_at(tmp_path, name="afile")


def test_store_equals_todays_packer_on_the_builtin_corpus():
    """The demo's blocks (9 languages, 150k tokens each, block 128) and a test split, hashed as the packer before the
    store (langmoe 5f1a1a9, in-memory int64) produced them: the demo's numbers cannot move."""
    from langmoe.models.base import load_tokenizer, resolve_model_path

    tok = load_tokenizer(resolve_model_path("builtin"))
    c = open_corpus("builtin")

    def h(b):
        m = hashlib.sha256()
        for t in (b.tokens, b.lang, b.lengths):
            m.update(t.long().numpy().tobytes())
        return m.hexdigest()
    demo = ["en", "de", "nl", "fr", "es", "it", "ru", "uk", "pl"]
    assert h(pack_corpus(c, tok, demo, "test", 128, max_tokens_per_lang=4096, progress="off")) == \
        "b1992d2c023a604d7642840a17fcf3a7b3ee23379619ea4bcb68a9a37a580552"
    assert h(pack_corpus(c, tok, ["ga"], "train", 128, max_tokens_per_lang=150000, progress="off")) == \
        "1b636ff8e47df054d22703fbafd7f91bb2bcb98883d1f365daad721e8a2d7da1"
    assert h(pack_corpus(c, tok, demo, "train", 128, max_tokens_per_lang=150000, progress="off")) == \
        "a26a112d70480ad11fcb27f37389b44b3da76824800b0433a5b374b74ba3322c"


@pytest.mark.slow
def test_store_equals_todays_packer_on_the_whole_builtin_train_split():
    from langmoe.models.base import load_tokenizer, resolve_model_path

    tok = load_tokenizer(resolve_model_path("builtin"))
    c = open_corpus("builtin")
    b = pack_corpus(c, tok, c.languages(), "train", 256, progress="off")
    m = hashlib.sha256()
    for t in (b.tokens, b.lang, b.lengths):
        m.update(t.long().numpy().tobytes())
    assert m.hexdigest() == "2d02696f9f179f53dc0a71abe402b7ef1610137fa8654e6ad13208c3ee31bfd9"


def test_encoder_equals_the_tokenizer_call_and_falls_back(tmp_path, monkeypatch):
    from langmoe.data.tokenizer import train_tokenizer

    texts = [f"Größe {i}: ça va? Да, {i * 7} шагов." for i in range(40)]
    write_txt(tmp_path / "de.txt", texts)
    tok = train_tokenizer(FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0), 300)
    want = tok(texts, add_special_tokens=False)["input_ids"]
    enc = DocumentEncoder(tok)
    assert enc.encode(texts) == want and enc._fast is not None
    bad = DocumentEncoder(tok)
    monkeypatch.setattr(bad, "_fast", type("Wrong", (), {"encode_batch_fast": lambda self, t, add_special_tokens: [
        type("E", (), {"ids": [1]})() for _ in t]})())
    assert bad.encode(texts) == want and bad._fast is None  # disagreed with the tokenizer's call: not used


def test_read_ahead_stops_the_reader_and_raises_its_errors():
    def docs():
        for i in range(10**6):
            if i == 50:
                raise LangmoeError("bad file")
            yield "x" * 1000

    with pytest.raises(LangmoeError, match="bad file"), \
            parallel_tokenize.read_ahead(docs(), text_of=str, first_chars=10) as batches:
        for _ in batches:
            pass
    with parallel_tokenize.read_ahead(iter(["a"] * 10**6), text_of=str, first_chars=10) as batches:
        assert next(batches) == ["a"] * 10  # leaving early stops the thread (the test would hang otherwise)


def test_progress_lines_when_piped(corpus, tmp_path, monkeypatch, capsys):
    """Piped stderr: a plain line per interval with tokens, MB/s and the ETA, and a summary line."""
    monkeypatch.setattr(parallel_tokenize, "PLAIN_EVERY_S", 0.0)
    monkeypatch.setattr(token_store, "SUMMARY_AFTER_S", 0.0)
    store = TokenStore(tmp_path / "s", char_tokenizer(), progress="lines")
    store.ensure(corpus, [Request("en", "train", tokens=12), Request("ru", "train", tokens=4)])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("tokenize train/en: ") and "MB/s, ETA" in err[0]
    assert err[-1].startswith("tokenize: 2 stream(s) of train into") and "tokens from" in err[-1]
    p = parallel_tokenize.TokenizeProgress("x", mode="lines", total_bytes=100)
    p.add(5, 50)
    assert "ETA" in p.status()
