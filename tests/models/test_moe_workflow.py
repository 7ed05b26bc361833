"""What the user gave survives: one loader for eval/train/export, generation_config, dtype, clear refusals."""

import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from moe_fixtures import tiny_model, tokens

from langmoe.cli import main
from langmoe.errors import LangmoeError
from langmoe.models.base import builtin_base_path, load_tokenizer
from langmoe.models.export import export_stock
from langmoe.models.moe import moe_blocks
from langmoe.models.moe_io import folder_kind, load_model_any, load_moe_pretrained, save_moe_pretrained
from langmoe.models.upcycle import upcycle

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")


def _dense_folder(path: Path, dtype=torch.float32, logit_scale: float = 1.0) -> Path:
    """A tiny Llama with the shipped tokenizer and a generation_config of its own."""
    tok = load_tokenizer(builtin_base_path())
    cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=128,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
    model.generation_config.eos_token_id = [0, 7]
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.6
    model.to(dtype).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _gen(folder: Path) -> dict:
    return json.loads((folder / "generation_config.json").read_text())


def _perturb_and_resave(src: Path, dst: Path) -> None:
    model, tok = load_model_any(src)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for b in moe_blocks(model):
            for t in b.experts.parameters():
                t.add_(torch.randn(t.shape, generator=g).to(t.dtype) * 0.05)
            b.router.weight.normal_(0, 1.0, generator=g)
    save_moe_pretrained(model, tok, dst)


def test_eval_native_equals_eval_of_export_and_train_keeps_experts(tmp_path, capsys):
    dense = _dense_folder(tmp_path / "dense")
    assert main(["upcycle", "--model", str(dense), "--layers", "0,2", "--experts", "4", "--top-k", "2",
                 "--out", str(tmp_path / "up")]) == 0
    assert folder_kind(tmp_path / "up") == "native"
    assert _gen(tmp_path / "up")["eos_token_id"] == [0, 7] and _gen(tmp_path / "up")["temperature"] == 0.6
    _perturb_and_resave(tmp_path / "up", tmp_path / "moe")
    assert main(["export", "--model", str(tmp_path / "moe"), "--out", str(tmp_path / "stock")]) == 0
    assert _gen(tmp_path / "stock")["eos_token_id"] == [0, 7] and _gen(tmp_path / "stock")["do_sample"] is True
    ev = ["--langs", "en", "de", "--max-chars", "1500", "--window", "64", "--stride", "32", "--no-unigram"]
    for name in ("moe", "stock", "dense"):
        assert main(["eval", "--model", str(tmp_path / name), "--json", str(tmp_path / f"{name}.json"), *ev]) == 0
    score = {n: json.loads((tmp_path / f"{n}.json").read_text())["mean"]["bits_per_byte"]
             for n in ("moe", "stock", "dense")}
    assert abs(score["moe"] - score["stock"]) <= 1e-5 * score["stock"]
    assert abs(score["moe"] - score["dense"]) > 1e-3  # the experts matter: eval did not load the dense model
    capsys.readouterr()

    # `langmoe train` on the MoE folder continues the MoE: same structure, experts trained, native folder
    assert main(["train", "--model", str(tmp_path / "moe"), "--out", str(tmp_path / "trained"), "--langs", "en",
                 "--steps", "2", "--batch-size", "2", "--block-len", "32", "--max-train-tokens", "2000",
                 "--save-every", "2", "--log-every", "1"]) == 0
    assert folder_kind(tmp_path / "trained") == "native"
    before, after = load_moe_pretrained(tmp_path / "moe"), load_moe_pretrained(tmp_path / "trained")
    assert after.config.langmoe == before.config.langmoe
    b0, a0 = moe_blocks(before)[0], moe_blocks(after)[0]
    assert not torch.equal(b0.experts.gate_up_proj, a0.experts.gate_up_proj)
    assert _gen(tmp_path / "trained")["eos_token_id"] == [0, 7]


def test_bf16_source_stays_bf16_unless_dtype_says_otherwise(tmp_path):
    dense = _dense_folder(tmp_path / "dense", dtype=torch.bfloat16, logit_scale=300.0)
    assert main(["upcycle", "--model", str(dense), "--layers", "all", "--experts", "2", "--top-k", "1",
                 "--out", str(tmp_path / "moe")]) == 0
    moe = load_moe_pretrained(tmp_path / "moe")
    assert next(moe.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        assert moe(tokens()).logits.abs().max() > 10
    assert main(["export", "--model", str(tmp_path / "moe"), "--out", str(tmp_path / "stock")]) == 0
    assert json.loads((tmp_path / "stock" / "config.json").read_text())["dtype"] == "bfloat16"
    stock = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "stock", dtype="auto")
    assert next(stock.parameters()).dtype == torch.bfloat16
    assert main(["export", "--model", str(tmp_path / "moe"), "--out", str(tmp_path / "f32"), "--dtype",
                 "float32"]) == 0
    assert json.loads((tmp_path / "f32" / "config.json").read_text())["dtype"] == "float32"
    assert main(["upcycle", "--model", str(dense), "--layers", "0", "--experts", "2", "--dtype", "float32",
                 "--out", str(tmp_path / "moe32")]) == 0
    assert next(load_moe_pretrained(tmp_path / "moe32").parameters()).dtype == torch.float32
    # training runs in fp32 and saves in the source's dtype
    assert main(["train", "--model", str(tmp_path / "moe"), "--out", str(tmp_path / "trained"), "--langs", "en",
                 "--steps", "1", "--batch-size", "2", "--block-len", "32", "--max-train-tokens", "1000",
                 "--save-every", "1", "--log-every", "1"]) == 0
    trained = load_moe_pretrained(tmp_path / "trained")
    assert next(trained.parameters()).dtype == torch.bfloat16 and len(moe_blocks(trained)) == 3


def test_failed_verification_writes_nothing(tmp_path, monkeypatch):
    import langmoe.models.export as ex

    model = upcycle(tiny_model("llama"), "all", 2, top_k=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("old")
    monkeypatch.setattr(ex, "max_logit_diff", lambda *a, **k: (5.0, 10.0))
    with pytest.raises(LangmoeError, match="nothing written"):
        export_stock(model, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]  # the old folder untouched


@pytest.mark.parametrize("dtype,diff,scale,ok", [
    (torch.bfloat16, 0.5, 100.0, True),  # bf16 logits ~100: half a unit is a few ulps (a fixed 5e-2 refused it)
    (torch.bfloat16, 0.5, 1.0, False),
    (torch.float32, 5e-4, 100.0, True),
    (torch.float32, 5e-3, 100.0, False),
])
def test_export_tolerance_is_relative_to_the_logit_scale(tmp_path, monkeypatch, dtype, diff, scale, ok):
    import langmoe.models.export as ex

    model = upcycle(tiny_model("llama"), "all", 2, top_k=1).to(dtype)
    monkeypatch.setattr(ex, "max_logit_diff", lambda *a, **k: (diff, scale))
    if ok:
        assert export_stock(model, tmp_path / "o") == "mixtral"
    else:
        with pytest.raises(LangmoeError, match="differ by"):
            export_stock(model, tmp_path / "o")


def _window_mistral():
    torch.manual_seed(0)
    cfg = tf.MistralConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                           num_key_value_heads=1, vocab_size=64, max_position_embeddings=64, sliding_window=4)
    return tf.MistralForCausalLM(cfg).eval()


def test_partially_moe_mistral_with_sliding_window_exports_to_qwen2_moe(tmp_path):
    model = upcycle(_window_mistral(), [0, 2], 3, top_k=2)
    with torch.no_grad():
        for b in moe_blocks(model):
            for t in b.experts.parameters():
                t.add_(torch.randn_like(t) * 0.1)
            b.router.weight.normal_(0, 1.0)
    with pytest.raises(LangmoeError, match=r"every layer.*\(use qwen2_moe\)"):
        export_stock(model, tmp_path / "m", arch="mixtral")
    assert export_stock(model, tmp_path / "q") == "qwen2_moe"  # the advice works
    stock = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    x = tokens(length=20)  # longer than the window: the window matters
    with torch.no_grad():
        assert (model(x).logits - stock(x).logits).abs().max() <= 1e-5
        full = tf.MistralForCausalLM(tf.MistralConfig(**{**_window_mistral().config.to_dict(), "sliding_window": None}))
        full.load_state_dict(_window_mistral().state_dict())
        assert (full.eval()(x).logits - _window_mistral()(x).logits).abs().max() > 1e-4


def test_mixtral_advice_names_no_target_when_none_fits(tmp_path):
    model = upcycle(tiny_model("qwen3"), [0], 2, top_k=1)
    with pytest.raises(LangmoeError, match="cannot export model_type 'qwen3' to mixtral"):
        export_stock(model, tmp_path / "x", arch="mixtral")
    assert export_stock(model, tmp_path / "y") == "qwen3_moe"


def test_per_layer_experts_for_layers_that_are_not_moe_is_an_error(tmp_path, capsys):
    with pytest.raises(LangmoeError, match=r"layers \[2\] that are not upcycled"):
        upcycle(tiny_model("llama"), [0], {0: 2, 2: 4})
    tiny_model("llama").save_pretrained(tmp_path / "dense")
    assert main(["upcycle", "--model", str(tmp_path / "dense"), "--layers", "0", "--experts", "0:2,2:4",
                 "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "not upcycled" in err and len(err.strip().splitlines()) == 1


def test_tokenizer_that_does_not_fit_is_refused(tmp_path, capsys):
    tok = load_tokenizer(builtin_base_path())  # 4096 tokens for a 64-row model
    model = upcycle(tiny_model("llama"), [0], 2)
    with pytest.raises(LangmoeError, match="tokens but the model"):
        save_moe_pretrained(model, tok, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    tiny_model("llama").save_pretrained(tmp_path / "dense")
    tok.save_pretrained(tmp_path / "dense")
    assert main(["upcycle", "--model", str(tmp_path / "dense"), "--layers", "0", "--out", str(tmp_path / "o")]) == 2
    assert "tokens but the model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
