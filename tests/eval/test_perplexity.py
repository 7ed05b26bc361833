from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from eval_fixtures import CHARS, ListCorpus
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.errors import LangmoeError
from langmoe.eval.perplexity import build_streams, evaluate_languages, iter_windows, mean_scores


class UniformModel(torch.nn.Module):
    """Zero logits: every token costs exactly ln V nats."""

    def __init__(self, vocab):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=vocab, max_position_embeddings=4096)

    def forward(self, input_ids):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.config.vocab_size) + 0 * self.w)


class SuccessorModel(UniformModel):
    """Perfect memory of a text in which every token has one successor: a huge logit on it."""

    def __init__(self, vocab, succ):
        super().__init__(vocab)
        self.succ = succ

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.config.vocab_size)
        logits.scatter_(-1, self.succ[input_ids].unsqueeze(-1), 1000.0)
        return SimpleNamespace(logits=logits)


def tiny_llama(vocab=len(CHARS), seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def test_windows_score_every_position_once():
    for n, w, s in [(1, 4, 2), (2, 4, 2), (10, 4, 2), (10, 4, 4), (10, 4, 1), (17, 5, 3), (5, 8, 8)]:
        targets = [t for _, end, first in iter_windows(n, w, s) for t in range(first, end)]
        assert targets == list(range(1, n))
        for begin, end, first in iter_windows(n, w, s):
            assert end - begin <= w and first >= begin + 1


def test_bad_window_and_stride():
    with pytest.raises(LangmoeError):
        list(iter_windows(10, 1, 1))
    with pytest.raises(LangmoeError):
        list(iter_windows(10, 4, 5))


def test_bpb_uniform_model_hand_computed(tok):
    # "abé" = 3 tokens, 4 bytes; "dd" = 2 tokens, 2 bytes; separators are not scored.
    corpus = ListCorpus({"xx": {"test": ["abé", "dd"]}})
    s = evaluate_languages(UniformModel(len(CHARS)), tok, corpus, ["xx"], window=4, stride=2)["xx"]
    assert (s.tokens, s.bytes, s.chars, s.docs) == (5, 6, 5, 2)
    assert s.nll_sum == pytest.approx(5 * math.log(7), rel=1e-6)
    assert s.bits_per_byte == pytest.approx(5 * math.log2(7) / 6, rel=1e-6)
    assert s.ppl == pytest.approx(7.0, rel=1e-6)


def test_perfect_memory_costs_nothing(tok):
    text = "abcd" * 5  # a→b→c→d→a: one successor each; the separator (id 0) precedes 'a'.
    succ = torch.tensor([1, 2, 3, 6, 0, 0, 1])
    s = evaluate_languages(SuccessorModel(len(CHARS), succ), tok, ListCorpus({"xx": {"test": [text]}}),
                           window=6, stride=3)["xx"]
    assert s.tokens == 20
    assert s.bits_per_byte < 1e-6
    assert s.ppl == pytest.approx(1.0, abs=1e-6)


@torch.no_grad()
def _full_nll(model, ids):
    logits = model(input_ids=ids[None]).logits[0].float()
    return float(-torch.log_softmax(logits[:-1], -1).gather(-1, ids[1:, None]).double().sum())


def test_stride_equal_window_matches_full_forward(tok):
    model = tiny_llama()
    text = "abc déd abba ccé"
    corpus = ListCorpus({"xx": {"test": [text]}})
    ids = torch.tensor([0] + tok(text, add_special_tokens=False)["input_ids"])
    s = evaluate_languages(model, tok, corpus, window=64, stride=64)["xx"]
    assert s.tokens == len(ids) - 1 == len(text)
    assert s.nll_sum == pytest.approx(_full_nll(model, ids), rel=1e-6)
    assert s.bytes == len(text.encode())
    # Per-document scoring of a single document is the same stream.
    s2 = evaluate_languages(model, tok, corpus, window=64, stride=64, per_document=True)["xx"]
    assert s2.nll_sum == pytest.approx(s.nll_sum, rel=1e-9)


@torch.no_grad()
def test_sliding_window_matches_per_token_reference(tok):
    model = tiny_llama(seed=1)
    text = "abcdé abba dcé cab"
    ids = torch.tensor([0] + tok(text, add_special_tokens=False)["input_ids"])
    w = 5
    ref = 0.0
    for t in range(1, len(ids)):  # stride 1: token t sees exactly the w-1 tokens before it (or all, near the start)
        ctx = ids[max(0, t - w + 1) : t + 1]
        logits = model(input_ids=ctx[None]).logits[0, -2].float()
        ref -= float(torch.log_softmax(logits, -1)[ids[t]])
    s = evaluate_languages(model, tok, ListCorpus({"xx": {"test": [text]}}), window=w, stride=1, batch_size=3)["xx"]
    assert s.nll_sum == pytest.approx(ref, rel=1e-5)


@torch.no_grad()
def test_separators_not_scored_and_docs_concatenated(tok):
    model = tiny_llama(seed=2)
    docs = ["abc", "dd", "éa"]
    corpus = ListCorpus({"xx": {"test": docs}})
    ids = torch.tensor([0, 1, 2, 3, 0, 6, 6, 0, 4, 1])
    logits = model(input_ids=ids[None]).logits[0].float()
    nll = -torch.log_softmax(logits[:-1], -1).gather(-1, ids[1:, None]).squeeze(-1).double()
    keep = ids[1:] != 0
    s = evaluate_languages(model, tok, corpus, window=32, stride=32)["xx"]
    assert s.tokens == 7 and s.bytes == 8
    assert s.nll_sum == pytest.approx(float(nll[keep].sum()), rel=1e-6)
    streams = build_streams([[1, 2, 3], [6, 6], [4, 1]], 0, per_document=True)
    assert [len(i) for i, _ in streams] == [4, 3, 3]


def test_max_chars_cap_and_mean(tok):
    corpus = ListCorpus({"xx": {"test": ["abcd", "abcd"]}, "yy": {"test": ["dd"]}})
    scores = evaluate_languages(UniformModel(len(CHARS)), tok, corpus, window=4, stride=4, max_chars_per_lang=6)
    assert scores["xx"].chars == 6 and scores["xx"].docs == 2
    m = mean_scores(scores)
    assert m["bits_per_byte"] == pytest.approx(math.log2(7))


def test_forward_context_sees_language_ids(tok):
    seen = []

    class Ctx:
        def __init__(self, batch):
            self.batch = batch

        def __enter__(self):
            seen.append((int(self.batch["lang_ids"][0, 0]), int(self.batch["group_ids"][0, 0])))

        def __exit__(self, *a):
            return False

    corpus = ListCorpus({"xx": {"test": ["ab"]}, "yy": {"test": ["cd"]}})
    evaluate_languages(UniformModel(len(CHARS)), tok, corpus, ["yy", "xx"], window=4, stride=4,
                       forward_context=lambda m, b: Ctx(b), group_of={"xx": 5})
    assert seen == [(0, -1), (1, 5)]


def test_errors(tok):
    corpus = ListCorpus({"xx": {"test": ["ab"], "train": []}})
    model = tiny_llama()
    with pytest.raises(LangmoeError, match="not in the corpus"):
        evaluate_languages(model, tok, corpus, ["zz"], window=8, stride=8)
    with pytest.raises(LangmoeError, match="no text"):
        evaluate_languages(model, tok, corpus, ["xx"], split="train", window=8, stride=8)
    with pytest.raises(LangmoeError, match="max positions"):
        evaluate_languages(model, tok, corpus, ["xx"], window=256, stride=128)
    with pytest.raises(LangmoeError, match="tokenizer has"):
        evaluate_languages(tiny_llama(vocab=4), tok, corpus, ["xx"], window=8, stride=8)
