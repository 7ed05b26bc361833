"""`langmoe generate` and `langmoe.generate`: greedy decoding checked against a hand-written argmax loop and
transformers' own `generate`, seeded sampling reproducible, the model's generation_config honoured, one-line errors.

Models are tiny Llamas written to tmp_path: dense, upcycled (langmoe MoE, experts perturbed so routing matters)
and exported to a stock transformers MoE architecture.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from langmoe.cli import main
from langmoe.errors import LangmoeError
from langmoe.generate import build_generation_config, encode_prompt, generate_text, prompt_from_corpus

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")

PROMPT = "The file is"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import transformers as tf

    from langmoe.data.corpus import open_corpus
    from langmoe.data.tokenizer import train_tokenizer
    from langmoe.models.export import export_stock
    from langmoe.models.moe import moe_blocks
    from langmoe.models.moe_io import save_moe_pretrained
    from langmoe.models.upcycle import upcycle

    root = tmp_path_factory.mktemp("gen")
    tok = train_tokenizer(open_corpus("builtin"), 300, langs=["en", "de"], max_chars_per_lang=20000)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    dense = tf.AutoModelForCausalLM.from_config(cfg).eval()
    dense.save_pretrained(root / "dense")
    tok.save_pretrained(root / "dense")
    moe = upcycle(tf.AutoModelForCausalLM.from_config(cfg).eval(), "all", 4, top_k=2)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for b in moe_blocks(moe):
            for _, w in sorted(b.experts.named_parameters()):
                w.add_(torch.randn(w.shape, generator=g) * 0.2)
            b.router.weight.normal_(0, 1.0, generator=g)
    save_moe_pretrained(moe, tok, root / "moe")
    export_stock(moe, root / "exported", tokenizer=tok)
    return root


def _manual_greedy(model, ids: list[int], n: int, eos: int) -> list[int]:
    """Argmax of a full forward pass per step: no cache, no transformers generation code."""
    seq = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            out.append(nxt)
            seq.append(nxt)
            if nxt == eos:
                break
    return out


@pytest.mark.parametrize("kind", ["dense", "moe", "exported"])
def test_greedy_equals_argmax_loop_and_transformers_generate(models, kind):
    from langmoe.models.moe_io import load_model_any

    model, tok = load_model_any(models / kind)
    assert tok is not None
    if kind == "moe":
        assert getattr(model.config, "langmoe", None)
    if kind == "exported":
        assert model.config.model_type in ("mixtral", "qwen2_moe")
    gens = generate_text(model, tok, PROMPT, max_new_tokens=12, greedy=True)
    assert len(gens) == 1
    ids = encode_prompt(tok, PROMPT)
    assert ids[0] == tok.bos_token_id
    assert gens[0].token_ids == _manual_greedy(model, ids, 12, eos=0)
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=12, eos_token_id=0, pad_token_id=0)
    assert gens[0].token_ids == ref[0, len(ids):].tolist()
    body = gens[0].token_ids[:-1] if gens[0].stopped_at_eos else gens[0].token_ids
    assert gens[0].text == tok.decode(body, skip_special_tokens=True)


def test_seeded_sampling_is_reproducible_and_per_sample(models):
    from langmoe.models.moe_io import load_model_any

    model, tok = load_model_any(models / "moe")
    kw = dict(max_new_tokens=16, temperature=1.5)
    a = generate_text(model, tok, PROMPT, seed=7, num_samples=3, **kw)
    b = generate_text(model, tok, PROMPT, seed=7, num_samples=3, **kw)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.seed for g in a] == [7, 8, 9]
    assert len({tuple(g.token_ids) for g in a}) > 1  # different seeds give different samples
    # sample i only depends on seed + i, not on how many samples were drawn
    alone = generate_text(model, tok, PROMPT, seed=8, **kw)
    assert alone[0].token_ids == a[1].token_ids
    # top-k 1 sampling is greedy decoding
    top1 = generate_text(model, tok, PROMPT, seed=5, max_new_tokens=10, top_k=1)
    assert top1[0].token_ids == generate_text(model, tok, PROMPT, max_new_tokens=10, greedy=True)[0].token_ids


def test_model_generation_config_is_the_default(models, tmp_path):
    """eos ids and do_sample come from the folder's generation_config; flags override."""
    from transformers import GenerationConfig

    from langmoe.models.moe_io import load_model_any

    model, tok = load_model_any(models / "dense")
    first = generate_text(model, tok, PROMPT, max_new_tokens=5, greedy=True)[0].token_ids
    folder = tmp_path / "m"
    shutil.copytree(models / "dense", folder)
    GenerationConfig(do_sample=False, eos_token_id=[0, first[0]], bos_token_id=0,
                     pad_token_id=0).save_pretrained(folder)
    model, tok = load_model_any(folder)
    gc = build_generation_config(model)
    assert gc.do_sample is False and gc.eos_token_id == [0, first[0]]
    g = generate_text(model, tok, PROMPT, max_new_tokens=5, seed=1)[0]  # no --greedy: config says greedy
    assert g.token_ids == [first[0]] and g.stopped_at_eos and g.text == ""
    gc = build_generation_config(model, temperature=0.7, top_k=3)
    assert gc.do_sample is False  # the config's do_sample=False wins over sampling knobs
    assert build_generation_config(model, max_new_tokens=3).max_new_tokens == 3


def test_prompt_from_corpus_is_seeded_test_text():
    from langmoe.data.corpus import open_corpus

    corpus = open_corpus("builtin")
    a = prompt_from_corpus(corpus, "de", seed=3, max_chars=80)
    assert a == prompt_from_corpus(corpus, "de", seed=3, max_chars=80)
    assert 0 < len(a) <= 80
    tests = [d.text for d in corpus.iter_documents("de", "test")]
    assert any(t.strip().startswith(a) for t in tests)
    assert prompt_from_corpus(corpus, "deu", seed=3, max_chars=80) == a  # ISO 639-3 code
    with pytest.raises(LangmoeError, match="not in the corpus"):
        prompt_from_corpus(corpus, "ast")
    with pytest.raises(LangmoeError, match="not an ISO 639-1"):
        prompt_from_corpus(corpus, "xx")


def test_cli_same_command_same_text(models, capsys):
    argv = ["generate", "--model", str(models / "moe"), "--lang", "en", "--prompt-chars", "40",
            "--max-new-tokens", "8", "--seed", "4", "--num-samples", "2", "--temperature", "1.3"]
    assert main(argv) == 0
    out1 = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == out1
    assert out1.count("[generated]") == 2 and "seed 5" in out1
    import json

    assert main(["generate", "--model", str(models / "dense"), "--prompt", PROMPT, "--greedy",
                 "--max-new-tokens", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["prompt"] == PROMPT and len(data["samples"]) == 1 and data["samples"][0]["new_tokens"] <= 4


@pytest.mark.parametrize("extra,msg", [
    (["--prompt", "  "], "prompt is empty"),
    (["--lang", "ast"], "not in the corpus"),
    (["--prompt", "hi", "--max-new-tokens", "500"], "exceed the model's 64 positions"),
    (["--prompt", "hi", "--max-new-tokens", "4", "--temperature", "0"], "--temperature must be > 0"),
])
def test_cli_one_line_errors(models, capsys, extra, msg):
    assert main(["generate", "--model", str(models / "dense"), *extra]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_cli_no_tokenizer(models, tmp_path, capsys):
    folder = tmp_path / "notok"
    folder.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(models / "dense" / f, folder / f)
    assert main(["generate", "--model", str(folder), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "has no tokenizer" in err and err.count("\n") == 1
