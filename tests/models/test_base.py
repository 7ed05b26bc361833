from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from langmoe.errors import LangmoeError
from langmoe.models.base import builtin_base_path, load_model_and_tokenizer

CHARS = ["<|endoftext|>", "a", "b", "c", "d", " "]


def _tokenizer():
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(CHARS)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _save(path, vocab=len(CHARS)):
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return model


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_round_trip(tmp_path):
    ref = _save(tmp_path / "m")
    model, tok = load_model_and_tokenizer(tmp_path / "m")
    assert not model.training
    assert len(tok) == len(CHARS)
    ids = torch.tensor([[0, 1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, ref.eval()(input_ids=ids).logits)
    bf, _ = load_model_and_tokenizer(tmp_path / "m", dtype="bf16")
    assert bf.dtype == torch.bfloat16


def test_missing_and_corrupt_folders(tmp_path):
    with pytest.raises(LangmoeError, match="does not exist"):
        load_model_and_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LangmoeError, match="no config.json"):
        load_model_and_tokenizer(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LangmoeError, match="not a model folder"):
        load_model_and_tokenizer(tmp_path / "file")
    _save(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(LangmoeError, match="not valid JSON"):
        load_model_and_tokenizer(tmp_path / "bad")
    _save(tmp_path / "trunc")
    w = tmp_path / "trunc" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(LangmoeError, match="cannot load the model"):
        load_model_and_tokenizer(tmp_path / "trunc")
    _save(tmp_path / "notok")
    for f in (tmp_path / "notok").glob("tokenizer*"):
        f.unlink()
    with pytest.raises(LangmoeError, match="tokenizer"):
        load_model_and_tokenizer(tmp_path / "notok")


def test_tokenizer_model_mismatch(tmp_path):
    _save(tmp_path / "m", vocab=4)  # the tokenizer has 6 tokens
    with pytest.raises(LangmoeError):
        load_model_and_tokenizer(tmp_path / "m")


def test_builtin_base_path():
    p = builtin_base_path()
    assert p.name == "tiny-base" and p.parent.name == "builtin"
    if (p / "config.json").is_file():
        model, tok = load_model_and_tokenizer("builtin")
        assert json.loads((p / "pretrain.json").read_text())["seed"] is not None
        assert model.config.vocab_size >= len(tok)


@pytest.mark.parametrize("name,arch,held_out", [("builtin-g0", "LlamaForCausalLM", {"el", "hu", "tr", "as", "hi", "mr"}),
                                                ("builtin-moe", "Qwen3MoeForCausalLM", {"gl", "uk", "nb"})])
def test_every_shipped_base_loads_and_never_saw_its_held_out_languages(name, arch, held_out):
    """The expansion base never saw G1/G2, the MoE base never saw the routing children: their own pretrain.json
    lists the languages they trained on, and the tokenizer is the tiny base's (the methods compare on one)."""
    p = builtin_base_path(name)
    rec = json.loads((p / "pretrain.json").read_text())
    assert rec["config"]["langs"] and not held_out & set(rec["config"]["langs"])
    assert set(rec["train_blocks"]["per_lang"]) == set(rec["config"]["langs"])
    model, tok = load_model_and_tokenizer(name)
    assert type(model).__name__ == arch and json.loads((p / "config.json").read_text())["architectures"] == [arch]
    assert (p / "tokenizer.json").read_bytes() == (builtin_base_path() / "tokenizer.json").read_bytes()
