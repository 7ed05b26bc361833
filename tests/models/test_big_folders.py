"""Big folders: sharded saves round-trip exactly, MoE folders load on the meta device with one copy of the weights
(and equal the plain load), a bf16 folder is scored in bf16 when asked, and device maps place eval and generate."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from moe_fixtures import tiny_model, tokens

from langmoe.cli import main
from langmoe.models.moe import moe_blocks
from langmoe.models.moe_format import MoEStructure
from langmoe.models.moe_io import (
    load_model_any,
    load_moe_pretrained,
    read_safetensors_folder,
    save_moe_pretrained,
)
from langmoe.models.upcycle import apply_moe_structure, upcycle

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


def _moe(arch="qwen2", **kw):
    model = upcycle(tiny_model(arch, **kw), layers="all", num_experts=3, top_k=2)
    with torch.no_grad():  # experts that differ, so a mix-up would show
        for b in moe_blocks(model):
            for t in b.experts.parameters():
                t.add_(torch.randn_like(t) * 0.1)
    return model


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])  # gpt2: tied embeddings across shards
def test_sharded_moe_save_round_trips_exactly(tmp_path, arch):
    model = _moe(arch)
    out = save_moe_pretrained(model, None, tmp_path / "m", max_shard_size="20KB")
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(shards) >= 3 and sorted(set(index["weight_map"].values())) == shards
    assert not (out / "model.safetensors").exists()
    loaded = load_moe_pretrained(out)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(model(tokens()).logits, loaded(tokens()).logits)


def test_sharded_dense_folder_round_trips_exactly(tmp_path, monkeypatch):
    import langmoe.pretrain as pretrain
    from langmoe.models.base import load_tokenizer

    monkeypatch.setattr(pretrain, "MAX_SHARD_SIZE", "100KB")
    model, tok = load_model_any("builtin")
    pretrain.save_hf_folder(model, tok, tmp_path / "d")
    assert len(list((tmp_path / "d").glob("model-*.safetensors"))) >= 3
    again, _ = load_model_any(tmp_path / "d")
    ids = torch.tensor([load_tokenizer(tmp_path / "d").encode("the cat sat on the mat")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_default_shard_size_is_the_hubs():
    from langmoe.models.moe_io import MAX_SHARD_SIZE

    assert MAX_SHARD_SIZE == "5GB"


def test_meta_device_load_equals_the_plain_load(tmp_path):
    """The plain way (random init, then copy the weights in) against the meta-device load: same model."""
    from transformers import AutoModelForCausalLM

    from langmoe.models.moe_format import dense_config_from_dict

    out = save_moe_pretrained(_moe("llama"), None, tmp_path / "m")
    raw = json.loads((out / "config.json").read_text())
    plain = AutoModelForCausalLM.from_config(dense_config_from_dict(raw["base_config"], None))
    apply_moe_structure(plain, MoEStructure.parse(raw["langmoe"]))
    plain.load_state_dict(read_safetensors_folder(out))
    plain.eval()
    meta = load_moe_pretrained(out)
    assert not any(p.is_meta for p in meta.parameters()) and not any(b.is_meta for b in meta.buffers())
    a, b = plain.state_dict(), meta.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a_buf, b_buf = dict(plain.named_buffers()), dict(meta.named_buffers())
    assert a_buf.keys() == b_buf.keys() and all(torch.equal(a_buf[k], b_buf[k]) for k in a_buf)
    with torch.no_grad():
        assert torch.equal(plain(tokens()).logits, meta(tokens()).logits)


_PEAK = """
import json, resource, sys, torch
from transformers import AutoModelForCausalLM
from langmoe.models.moe_format import MoEStructure, dense_config_from_dict
from langmoe.models.moe_io import load_moe_pretrained, read_safetensors_folder
from langmoe.models.upcycle import apply_moe_structure
torch.set_num_threads(1)

def plain(path):  # the way before: a randomly initialised model, then the read weights copied in
    raw = json.load(open(path + "/config.json"))
    model = AutoModelForCausalLM.from_config(dense_config_from_dict(raw["base_config"], None))
    apply_moe_structure(model, MoEStructure.parse(raw["langmoe"]))
    model.load_state_dict(read_safetensors_folder(__import__("pathlib").Path(path)), strict=False)  # tied lm_head
    return model

load = load_moe_pretrained if sys.argv[1] == "meta" else plain
load(sys.argv[2])  # a tiny folder of the same architecture first: every import is done before measuring
rss = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
model = load(sys.argv[3])
from langmoe.memory import peak_memory  # this process's own high-water mark (not the spawning parent's)
print(peak_memory()["peak_rss_bytes"] - rss, sum(p.numel() * p.element_size() for p in model.parameters()))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
def test_moe_load_holds_one_copy_of_the_weights(tmp_path):
    from langmoe.models.real_shapes import write_real_shaped_model

    folders = {}
    for shape in ("qwen2-tiny", "qwen2-30m"):
        base = write_real_shaped_model(shape, tmp_path / shape, dtype=torch.float32)
        model, _ = load_model_any(base)
        n = model.config.num_hidden_layers
        folders[shape] = save_moe_pretrained(upcycle(model, layers=[0, n // 2, n - 1], num_experts=2, top_k=1), None,
                                             tmp_path / f"{shape}-moe")
    growth = {}
    for how in ("meta", "plain"):
        run = subprocess.run([sys.executable, "-c", textwrap.dedent(_PEAK), how, str(folders["qwen2-tiny"]),
                              str(folders["qwen2-30m"])], capture_output=True, text=True, check=True,
                             env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                  "PATH": "/usr/bin:/bin"})
        grown, weights = map(int, run.stdout.split()[-2:])
        growth[how] = grown / weights
    assert weights > 100e6
    assert growth["meta"] < 1.3 and growth["plain"] > 1.8, growth  # one copy of the weights; the old way held two


def _bf16_folder(tmp_path) -> Path:
    model, tok = load_model_any("builtin")
    out = tmp_path / "bf16"
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_bf16_folder_is_scored_in_bf16_when_asked(tmp_path):
    folder = _bf16_folder(tmp_path)
    tables = {}
    for dtype in (None, "bfloat16", "auto"):
        js = tmp_path / f"{dtype}.json"
        args = ["eval", "--model", str(folder), "--langs", "en", "--max-chars", "600", "--window", "64",
                "--stride", "32", "--no-unigram", "--json", str(js), "--threads", "1"]
        assert main(args + (["--dtype", dtype] if dtype else [])) == 0
        tables[dtype] = json.loads(js.read_text())
    assert tables[None]["dtype"] == "float32"
    assert tables["bfloat16"]["dtype"] == tables["auto"]["dtype"] == "bfloat16"
    fp32, bf16 = (tables[k]["langs"]["en"]["bits_per_byte"] for k in (None, "bfloat16"))
    assert bf16 == tables["auto"]["langs"]["en"]["bits_per_byte"]
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.02)  # bf16 arithmetic: close, not equal


def test_device_map_places_moe_and_dense_models(tmp_path):
    out = save_moe_pretrained(_moe("qwen2"), None, tmp_path / "m")
    for folder in (out, "builtin"):
        plain, _ = load_model_any(folder)
        mapped, _ = load_model_any(folder, device_map="auto")
        placed = getattr(mapped, "hf_device_map", None) or {"": "cpu"}  # transformers skips the map on one device
        assert set(placed.values()) == {"cpu"}  # no GPU here: accelerate plans everything on the CPU
        ids = tokens() if folder == out else torch.tensor([[5, 6, 7, 8]])
        with torch.no_grad():
            assert torch.equal(plain(ids).logits, mapped(ids).logits)


def test_eval_and_generate_take_a_device_map(tmp_path, capsys):
    common = ["--langs", "en", "--max-chars", "400", "--window", "64", "--stride", "32", "--no-unigram",
              "--threads", "1"]
    assert main(["eval", "--model", "builtin", *common, "--json", str(tmp_path / "a.json")]) == 0
    assert main(["eval", "--model", "builtin", *common, "--device-map", "auto", "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text())["langs"] for f in ("a.json", "b.json"))
    assert a == b
    gen = ["generate", "--model", "builtin", "--prompt", "the cat", "--max-new-tokens", "8", "--json"]
    capsys.readouterr()
    assert main(gen) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*gen, "--device-map", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == first["samples"]
