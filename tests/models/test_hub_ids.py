"""`--model org/name`: a Hub id (not an existing folder) loads from the user's Hugging Face cache, offline; an id
that is not cached gives one line saying how to download it. The cache is built by hand in the Hub's layout
(models--org--name/refs/main + snapshots/<commit>/), as `hf download` leaves it."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import constants
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.cli import main
from langmoe.errors import LangmoeError
from langmoe.models.base import load_model_and_tokenizer, resolve_model_path
from langmoe.models.hub import looks_like_hub_id

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["<|endoftext|>", *"abcdefghij "])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    repo = cache / "models--tiny-org--tiny-llama"
    snap = repo / "snapshots" / COMMIT
    torch.manual_seed(0)
    tok = _tokenizer()
    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tok),
                                         max_position_embeddings=64))
    model.save_pretrained(snap)
    tok.save_pretrained(snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snap, model


def test_hub_id_loads_the_cached_snapshot_offline(hub_cache):
    snap, model = hub_cache
    assert resolve_model_path("tiny-org/tiny-llama") == snap
    loaded, tok = load_model_and_tokenizer("tiny-org/tiny-llama")
    ids = torch.tensor([tok("abc ba")["input_ids"]])
    torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits)


def test_hub_id_through_the_cli(hub_cache, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.jsonl").write_text('{"id": "1", "split": "test", "text": "abc ba jij bad cab"}\n')
    rc = main(["eval", "--model", "tiny-org/tiny-llama", "--corpus", str(corpus), "--window", "8", "--stride", "4",
               "--no-unigram"])
    assert rc == 0, capsys.readouterr().err
    assert "bits/byte" in capsys.readouterr().out


def test_uncached_hub_id_offline_is_one_line(hub_cache, capsys):
    with pytest.raises(LangmoeError, match="not found locally and offline.*download it first with `hf download"):
        resolve_model_path("tiny-org/not-cached")
    rc = main(["eval", "--model", "tiny-org/not-cached"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not found locally and offline" in err[0]


def test_what_counts_as_a_hub_id(tmp_path):
    assert looks_like_hub_id("bigscience/bloom-560m") and looks_like_hub_id("Qwen/Qwen2.5-0.5B")
    for text in ("builtin", "./a/b", "/abs/path", "a/b/c", "../x", "runs/", "org/..", "a b/c"):
        assert not looks_like_hub_id(text), text
    with pytest.raises(LangmoeError, match="does not exist"):
        resolve_model_path(tmp_path / "missing")
