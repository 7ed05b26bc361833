"""The native MoE folder cannot be misread: stock transformers refuses it, `import langmoe` loads it exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from moe_fixtures import tiny_model, tokens

from langmoe.errors import LangmoeError
from langmoe.models.moe import moe_blocks
from langmoe.models.moe_io import folder_kind, load_model_any, load_moe_pretrained, save_moe_pretrained
from langmoe.models.routing import routing
from langmoe.models.upcycle import upcycle

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
DATA = Path(__file__).parent / "data"


def _perturbed(arch="llama", layers=(0, 2), **kw):
    model = upcycle(tiny_model(arch), list(layers), 4, top_k=2, **kw)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for b in moe_blocks(model):
            for t in b.experts.parameters():
                t.add_(torch.randn(t.shape, generator=g) * 0.2)
            b.router.weight.normal_(0, 1.0, generator=g)
    return model


def _env_without_langmoe():
    env = dict(os.environ)
    env["PYTHONPATH"] = ""
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_native_config_declares_its_own_type(tmp_path):
    model = _perturbed()
    save_moe_pretrained(model, None, tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["model_type"] == "langmoe_moe" and raw["architectures"] == ["LangmoeMoEForCausalLM"]
    assert raw["base_config"]["model_type"] == "llama"
    assert raw["base_config"]["architectures"] == ["LlamaForCausalLM"]
    assert set(raw["langmoe"]["layers"]) == {"0", "2"} and raw["langmoe"]["version"] == 3
    assert folder_kind(tmp_path / "m") == "native"
    # a plain save_pretrained of an MoE model writes the native format too
    model.save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["model_type"] == "langmoe_moe"
    assert model.config.architectures in (None, ["LlamaForCausalLM"])  # in-memory config left dense


def test_stock_transformers_without_langmoe_refuses(tmp_path):
    save_moe_pretrained(_perturbed(), None, tmp_path / "m")
    code = (
        "import sys\n"
        "sys.modules['langmoe'] = None  # langmoe may be installed: make sure nothing imports it\n"
        "from transformers import AutoModelForCausalLM\n"
        f"AutoModelForCausalLM.from_pretrained({str(tmp_path / 'm')!r})\n"
        "print('LOADED')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env_without_langmoe(),
                       cwd=tmp_path, timeout=300)
    assert r.returncode != 0 and "LOADED" not in r.stdout
    assert "langmoe_moe" in r.stderr  # transformers names the unknown model type


def test_import_langmoe_registers_with_auto_classes_in_a_fresh_process(tmp_path):
    """`import langmoe` first, transformers after: the registration still happens (post-import hook)."""
    model = _perturbed()
    save_moe_pretrained(model, None, tmp_path / "m")
    x = tokens()
    torch.save(x, tmp_path / "x.pt")
    src = str(Path(__file__).resolve().parents[2] / "src")
    code = (
        "import sys, torch\n"
        "import langmoe\n"
        "assert 'transformers' not in sys.modules, 'import langmoe must not import transformers'\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'm')!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "with torch.no_grad():\n"
        f"    torch.save(m(x).logits, {str(tmp_path / 'logits.pt')!r})\n"
        "print(type(m).__name__)\n"
    )
    env = dict(_env_without_langmoe(), PYTHONPATH=src)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "LangmoeMoELlamaForCausalLM"
    with torch.no_grad():  # another process may use another thread count: equal up to summation order
        torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), model(x).logits, rtol=1e-5, atol=1e-6)


def test_auto_classes_load_exact_and_generate_with_cache(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

    from langmoe.models.moe_format import LangmoeMoEForCausalLM

    model = _perturbed()
    save_moe_pretrained(model, None, tmp_path / "m")
    cfg = AutoConfig.from_pretrained(tmp_path / "m")
    assert cfg.model_type == "langmoe_moe" and cfg.vocab_size == model.config.vocab_size
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert isinstance(loaded, LangmoeMoEForCausalLM) and isinstance(loaded, LlamaForCausalLM)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    prompt = tokens(batch=1, length=4)
    cached = loaded.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = loaded.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)
    # greedy by hand, no cache: the same tokens
    seq = prompt
    with torch.no_grad():
        for _ in range(8):
            seq = torch.cat([seq, loaded(seq).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(cached, seq)
    assert moe_blocks(AutoModelForCausalLM.from_config(cfg))  # from_config builds the MoE structure too


def test_native_logits_equal_the_stock_export(tmp_path):
    from transformers import AutoModelForCausalLM

    from langmoe.models.export import export_stock

    model = _perturbed(layers=(0, 1, 2))
    save_moe_pretrained(model, None, tmp_path / "m")
    native = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    export_stock(native, tmp_path / "stock")
    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "stock")
    assert stock.config.model_type == "mixtral"
    x = tokens()
    with torch.no_grad():
        assert (native(x).logits - stock(x).logits).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["legacy_qwen3", "legacy_gpt2"])
def test_legacy_folders_load_transparently(tmp_path, name):
    """Folders written by langmoe 0.1 (dense model_type + `langmoe`, w_gate/w_up/w_out) give their saved logits."""
    folder = DATA / name
    assert folder_kind(folder) == "legacy"
    model = load_moe_pretrained(folder)
    expected = torch.load(folder / "expected_logits.pt")  # computed by langmoe 0.1 when it wrote the folder
    with torch.no_grad():
        got = model(tokens()).logits
    # frozen expert 0 now runs as its own part: the per-token sum is ordered differently (float rounding only)
    assert (got - expected).abs().max() <= 1e-6
    save_moe_pretrained(model, None, tmp_path / "native")  # re-saving converts it
    assert folder_kind(tmp_path / "native") == "native"
    with torch.no_grad():
        assert torch.equal(load_moe_pretrained(tmp_path / "native")(tokens()).logits, got)


def test_one_loader_for_dense_native_and_legacy(tmp_path):
    dense = tiny_model("llama")
    dense.save_pretrained(tmp_path / "dense")
    m, tok = load_model_any(tmp_path / "dense")
    assert tok is None and not moe_blocks(m)
    m, _ = load_model_any(DATA / "legacy_qwen3")
    assert len(moe_blocks(m)) == 2 and m.config.model_type == "qwen3"
    with routing(m, route_labels=torch.zeros_like(tokens())):
        m(tokens())
    with pytest.raises(LangmoeError, match="no 'langmoe'"):
        load_moe_pretrained(tmp_path / "dense")


def test_generation_config_survives_save_load(tmp_path):
    model = _perturbed()
    model.generation_config.eos_token_id = [3, 5]
    model.generation_config.temperature = 0.7
    model.generation_config.do_sample = True
    save_moe_pretrained(model, None, tmp_path / "m")
    loaded = load_moe_pretrained(tmp_path / "m")
    assert loaded.generation_config.eos_token_id == [3, 5]
    assert loaded.generation_config.temperature == 0.7 and loaded.generation_config.do_sample


def test_dtype_survives_and_can_be_changed(tmp_path):
    model = _perturbed().to(torch.bfloat16)
    save_moe_pretrained(model, None, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["dtype"] == "bfloat16"
    assert next(load_moe_pretrained(tmp_path / "m").parameters()).dtype == torch.bfloat16
    m, _ = load_model_any(tmp_path / "m", dtype="float32")
    assert next(m.parameters()).dtype == torch.float32


def test_convert_command_rewrites_a_legacy_folder(tmp_path, capsys):
    from langmoe.cli import main

    assert main(["convert", "--model", str(DATA / "legacy_gpt2"), "--out", str(tmp_path / "n")]) == 0
    assert folder_kind(tmp_path / "n") == "native"
    with torch.no_grad():
        converted = load_moe_pretrained(tmp_path / "n")(tokens()).logits
        assert torch.equal(converted, load_moe_pretrained(DATA / "legacy_gpt2")(tokens()).logits)
    # saved on another CPU: kernels round differently at ~1e-7 (AVX2 / AVX-512), so across machines to 1e-5
    torch.testing.assert_close(converted, torch.load(DATA / "legacy_gpt2" / "expected_logits.pt"), rtol=1e-5, atol=1e-5)
    tiny_model("llama").save_pretrained(tmp_path / "dense")
    assert main(["convert", "--model", str(tmp_path / "dense"), "--out", str(tmp_path / "x")]) == 2
    assert "nothing to convert" in capsys.readouterr().err
