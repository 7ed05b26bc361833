"""The shipped tiny base must have learned more than token frequencies: it beats the add-one unigram model's test
bits per byte on every built-in language (re-measured here, not read from pretrain.json). The stronger bar of
issue 12: its mean test bits per byte is below that of `bz2 -9` and `xz -9e` compressing the very same text
(`benchmarks/base_vs_compressors.py`)."""

import bz2
import lzma

import pytest
import torch
from script_loader import load_script

from langmoe.data.corpus import open_corpus
from langmoe.eval.perplexity import evaluate_languages
from langmoe.eval.texts import select_texts
from langmoe.eval.unigram import unigram_bpb
from langmoe.models.base import load_model_and_tokenizer


def _bench():
    return load_script("benchmarks/base_vs_compressors.py")


def test_compressor_bits_per_byte_by_hand():
    bench = _bench()
    texts = ["Grüße aus Köln, ", "и привет из Москвы. " * 5, "abcabcabc"]
    data = "".join(texts).encode("utf-8")
    assert bench.compressed_bpb(texts, bench.bz2_size) == len(bz2.compress(data, 9)) * 8 / len(data)
    xz = len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) * 8 / len(data)
    assert bench.compressed_bpb(texts, bench.xz_size) == xz
    assert len(data) == sum(len(t.encode("utf-8")) for t in texts)  # UTF-8 bytes, not characters
    size, note = bench.zstd_compressor()
    if size is not None:  # zstandard module or the zstd program: a valid frame that decompresses to the text
        assert 0 < size(data) < len(data) + 64, note


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


def _own_languages(name: str, corpus) -> list[str]:
    """The languages a shipped base was pretrained on (its pretrain.json), held-out ones excluded."""
    import json

    from langmoe.models.base import builtin_base_path

    langs = json.loads((builtin_base_path(name) / "pretrain.json").read_text())["config"]["langs"]
    return list(langs) if langs else list(corpus.languages())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["builtin", "builtin-g0", "builtin-moe"])
def test_shipped_base_beats_bz2_and_xz_on_its_languages(name):
    """Issue 12's bar for every shipped base, on its own languages' test text: the mean bits per byte is below
    `bz2 -9`'s and `xz -9e`'s on the same text, and the base wins against each on most languages. Failed for the
    tiny base shipped before issue 12 (mean 2.61 vs bz2 2.52)."""
    torch.set_num_threads(2)
    bench = _bench()
    model, tokenizer = load_model_and_tokenizer(name)
    corpus = open_corpus("builtin")
    langs = _own_languages(name, corpus)
    ours = evaluate_languages(model, tokenizer, corpus, langs, split="test", window=256, stride=128,
                              max_chars_per_lang=20000)
    mean = {"model": sum(s.bits_per_byte for s in ours.values()) / len(langs)}
    for comp, size in (("bz2 -9", bench.bz2_size), ("xz -9e", bench.xz_size)):
        per = {x: bench.compressed_bpb(select_texts(corpus, x, "test", 20000), size) for x in langs}
        mean[comp] = sum(per.values()) / len(langs)
        wins = sum(ours[x].bits_per_byte < per[x] for x in langs)
        assert wins > len(langs) / 2, (name, comp, f"wins on {wins} of {len(langs)}")
    assert mean["model"] < mean["bz2 -9"] and mean["model"] < mean["xz -9e"], {k: round(v, 3) for k, v in mean.items()}
