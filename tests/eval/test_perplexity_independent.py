"""Perplexity and bits per byte against a from-scratch scorer: one forward per target token with exactly the context
the strided scheme promises, NLL summed in Python; windows listed by hand; the unigram baseline counted by hand."""

import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from data_fixtures import CHARS, char_tokenizer, write_txt  # noqa: E402

from langmoe.data.corpus import FolderCorpus  # noqa: E402
from langmoe.eval.perplexity import evaluate_languages, iter_windows  # noqa: E402
from langmoe.eval.unigram import unigram_bpb  # noqa: E402

ID = {c: i for i, c in enumerate(CHARS)}
DOCS = ["abc ab", "дé a", "cab"]  # 12 scored tokens, 15 UTF-8 bytes... counted below, not assumed


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(CHARS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    m = LlamaForCausalLM(cfg)
    with torch.no_grad():  # make the prediction depend strongly on the context
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(20.0)
    return m.eval()


@pytest.fixture
def corpus(tmp_path):
    write_txt(tmp_path / "de.txt", DOCS)
    return FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)


def stream_of(docs):
    ids, scored = [], []
    for d in docs:
        ids += [0] + [ID[c] for c in d]
        scored += [False] + [True] * len(d)
    return ids, scored


def context_start(t, n, window, stride):
    """First position of the window that scores target t (the HF strided scheme, written out)."""
    step = min(stride, window - 1)
    end = min(window, n)
    if t < end:
        return 0
    while True:
        end = min(end + step, n)
        if t < end:
            return end - window


@torch.no_grad()
def reference_nll(model, ids, scored, window, stride):
    total, count = 0.0, 0
    for t in range(1, len(ids)):
        if not scored[t]:
            continue
        b = context_start(t, len(ids), window, stride)
        logits = model(input_ids=torch.tensor([ids[b:t]])).logits[0, -1].double()
        total += float(-torch.log_softmax(logits, -1)[ids[t]])
        count += 1
    return total, count


def test_windows_by_hand():
    assert list(iter_windows(10, 4, 2)) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    assert list(iter_windows(10, 4, 4)) == [(0, 4, 1), (3, 7, 4), (6, 10, 7)]  # stride = window acts as window-1
    assert list(iter_windows(9, 4, 3)) == [(0, 4, 1), (3, 7, 4), (5, 9, 7)]  # last window clipped to the stream
    assert list(iter_windows(3, 8, 4)) == [(0, 3, 1)]
    assert list(iter_windows(1, 8, 4)) == []
    for n, w, s in [(17, 5, 2), (23, 6, 3), (8, 8, 8), (30, 7, 1)]:
        targets = [t for _, e, f in iter_windows(n, w, s) for t in range(f, e)]
        assert targets == list(range(1, n)), (n, w, s)  # every target exactly once, in order
        for i, (b, e, f) in enumerate(iter_windows(n, w, s)):
            assert b >= 0 and e - b <= w
            if i:  # a later window's first target sees at least window - stride tokens of context
                assert f - b >= w - min(s, w - 1)


@pytest.mark.parametrize(("window", "stride"), [(64, 32), (6, 3), (5, 2), (4, 4), (7, 1)])
def test_nll_tokens_and_bits_per_byte_match_the_reference(model, corpus, window, stride):
    s = evaluate_languages(model, char_tokenizer(), corpus, ["de"], split="train", window=window, stride=stride,
                           batch_size=3)["de"]
    ids, scored = stream_of(DOCS)
    nll, count = reference_nll(model, ids, scored, window, stride)
    nbytes = sum(len(d.encode("utf-8")) for d in DOCS)
    assert s.tokens == count == sum(len(d) for d in DOCS)  # eos separators are never scored
    assert s.bytes == nbytes and s.chars == sum(map(len, DOCS)) and s.docs == 3
    assert s.nll_sum == pytest.approx(nll, rel=1e-5)
    assert s.bits_per_byte == pytest.approx(nll / math.log(2) / nbytes, rel=1e-5)
    assert s.ppl == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_short_windows_really_cut_the_context(model, corpus):
    full = evaluate_languages(model, char_tokenizer(), corpus, ["de"], split="train", window=64, stride=32)["de"]
    short = evaluate_languages(model, char_tokenizer(), corpus, ["de"], split="train", window=3, stride=1)["de"]
    assert full.tokens == short.tokens
    assert abs(full.nll_sum - short.nll_sum) > 1e-3  # otherwise the window tests above could not tell


def test_per_document_streams_and_char_cap(model, corpus):
    s = evaluate_languages(model, char_tokenizer(), corpus, ["de"], split="train", window=64, stride=32,
                           per_document=True)["de"]
    nll = 0.0
    for d in DOCS:
        ids, scored = stream_of([d])
        nll += reference_nll(model, ids, scored, 64, 32)[0]
    assert s.nll_sum == pytest.approx(nll, rel=1e-5)
    capped = evaluate_languages(model, char_tokenizer(), corpus, ["de"], split="train", window=64, stride=32,
                                max_chars_per_lang=8)["de"]
    ids, scored = stream_of(["abc ab", "дé"])  # 6 + 2 characters: the second document cut to fit
    assert capped.tokens == 8 and capped.docs == 2 and capped.bytes == 6 + 4
    assert capped.nll_sum == pytest.approx(reference_nll(model, ids, scored, 64, 32)[0], rel=1e-5)


def test_unigram_by_hand(tmp_path):
    write_txt(tmp_path / "de.txt", ["aab", "ca"])
    corpus = FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)
    s = unigram_bpb(char_tokenizer(), corpus, ["de"], split="train", train_split="train", vocab_size=7)["de"]
    counts = {"a": 3, "b": 1, "c": 1}  # N = 5 tokens (eos not counted), V = 7
    nll = -sum(math.log((counts[ch] + 1) / (5 + 7)) for ch in "aabca")
    assert s.tokens == 5 and s.bytes == 5
    assert s.nll_sum == pytest.approx(nll, rel=1e-9)
    assert s.bits_per_byte == pytest.approx(nll / math.log(2) / 5, rel=1e-9)
