"""Architecture matrix: every tested decoder upcycles function-preservingly, generates, saves/loads and exports.

Tiny random configs (hidden 32, 2 layers, vocab 128, fp32). Every parameter gets seeded noise on top of the
initialisation so biases, norms (incl. the Gemma-2/3 and OLMo-2 post-feedforward norms that sit in the decoder
layer around the FFN) and multipliers are non-trivial: an upcycle that dropped or misplaced any of them would move
the logits. The reference is always the dense transformers model itself.
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf

from langmoe.errors import LangmoeError
from langmoe.models.adapters import TESTED_MODEL_TYPES, get_adapter, supported_model_types
from langmoe.models.export import export_stock
from langmoe.models.moe import MoEBlock, moe_blocks
from langmoe.models.moe_io import load_moe_pretrained, save_moe_pretrained
from langmoe.models.router_recorder import router_outputs
from langmoe.models.upcycle import upcycle

torch.set_num_threads(1)
VOCAB = 128
_C = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
_LL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           max_position_embeddings=64, **_C)

CONFIGS = {
    "llama": lambda: tf.LlamaConfig(**_LL),
    "mistral": lambda: tf.MistralConfig(**_LL, sliding_window=None),
    "qwen2": lambda: tf.Qwen2Config(**_LL),
    "qwen3": lambda: tf.Qwen3Config(**_LL, head_dim=8),
    "gemma": lambda: tf.GemmaConfig(**_LL, head_dim=8),
    "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **_C),
    "bloom": lambda: tf.BloomConfig(hidden_size=32, n_layer=2, n_head=4, **_C),
    "phi3": lambda: tf.Phi3Config(**_LL),  # fused gate_up_proj
    "olmo2": lambda: tf.Olmo2Config(**_LL),  # post-attention / post-feedforward norms
    "granite": lambda: tf.GraniteConfig(**_LL, embedding_multiplier=2.0, residual_multiplier=0.5,
                                        attention_multiplier=0.2, logits_scaling=2.0, mlp_bias=True),
    "stablelm": lambda: tf.StableLmConfig(**_LL),  # partial rotary, LayerNorm
    "gemma2": lambda: tf.Gemma2Config(**_LL, head_dim=8, sliding_window=4, query_pre_attn_scalar=8),
    "gemma3_text": lambda: tf.Gemma3TextConfig(**_LL, head_dim=8, sliding_window=4,
                                              layer_types=["sliding_attention", "full_attention"]),
    "cohere": lambda: tf.CohereConfig(**_LL, use_qk_norm=True),  # parallel attention + FFN
    "gpt_neox": lambda: tf.GPTNeoXConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=64, **_C),
    "falcon": lambda: tf.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, bias=True,
                                      max_position_embeddings=64, **_C),  # multi-query, parallel attention
    "falcon_new_arch": lambda: tf.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                               num_kv_heads=2, new_decoder_architecture=True,
                                               max_position_embeddings=64, **_C),
    "phi": lambda: tf.PhiConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                max_position_embeddings=64, **_C),
    "starcoder2": lambda: tf.Starcoder2Config(**_LL, use_bias=True, sliding_window=None),
}
# stock MoE targets that express the upcycled model (others must refuse with one line)
EXPORTABLE = {"llama": "mixtral", "mistral": "mixtral", "qwen2": "qwen2_moe", "qwen3": "qwen3_moe",
              "phi3": "mixtral"}  # phi3: fused qkv / gate_up split into the Llama names
POST_FFN_NORM = {"gemma2": "post_feedforward_layernorm", "gemma3_text": "post_feedforward_layernorm",
                 "olmo2": "post_feedforward_layernorm"}


def dense_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(CONFIGS[arch]())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def tokens(b: int = 2, t: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits(model, x):
    return model(input_ids=x).logits


def test_matrix_covers_the_tested_types():
    assert {CONFIGS[a]().model_type for a in CONFIGS} == set(TESTED_MODEL_TYPES) == set(supported_model_types())


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_upcycle_preserves_function_and_generates(arch):
    dense = dense_model(arch)
    x = tokens()
    ref = logits(dense, x)
    n = len(get_adapter(dense).layers(dense))

    some = upcycle(copy.deepcopy(dense), [1], 2, top_k=1).eval()
    assert [b.layer_idx for b in moe_blocks(some)] == [1]
    assert (logits(some, x) - ref).abs().max().item() <= 1e-5

    full = upcycle(copy.deepcopy(dense), "all", 3, top_k=2).eval()
    blocks = moe_blocks(full)
    assert len(blocks) == n == 2 and all(b.top_k == 2 and b.num_experts == 3 for b in blocks)
    assert (logits(full, x) - ref).abs().max().item() <= 1e-5
    # the router really mixes two experts per token (weights < 1), so this is not a single-expert shortcut
    assert bool((router_outputs(full)[0].topk_weight < 0.999).all())
    if arch in POST_FFN_NORM:  # the norm after the FFN lives in the decoder layer: still there, still applied
        layer = get_adapter(full).layers(full)[0]
        assert isinstance(getattr(layer, POST_FFN_NORM[arch]), torch.nn.Module)
        assert isinstance(get_adapter(full).get_mlp(layer), MoEBlock)

    prompt = tokens(2, 5, seed=2)
    kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False, num_beams=1, pad_token_id=0)
    with torch.no_grad():
        want = dense.generate(prompt, **kw)
        got = full.generate(prompt, **kw)
    assert got.shape == (2, 9)
    assert torch.equal(got, want)


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_save_load_and_export(arch, tmp_path):
    dense = dense_model(arch)
    x = tokens()
    moe = upcycle(copy.deepcopy(dense), "all", 3, top_k=2).eval()
    want = logits(moe, x)

    save_moe_pretrained(moe, None, tmp_path / "moe")
    back = load_moe_pretrained(tmp_path / "moe")
    sd_a, sd_b = moe.state_dict(), back.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert torch.equal(logits(back, x), want)

    if arch in EXPORTABLE:
        assert export_stock(moe, tmp_path / "stock") == EXPORTABLE[arch]
        stock = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "stock").eval()
        assert stock.config.model_type == EXPORTABLE[arch]
        assert (logits(stock, x) - want).abs().max().item() <= 1e-5
    else:
        with pytest.raises(LangmoeError) as e:
            export_stock(moe, tmp_path / "stock")
        msg = str(e.value)
        assert "\n" not in msg and len(msg) < 300, msg
        assert not (tmp_path / "stock").exists()


# ---- DMoE reads the FFN weights of the new architectures --------------------------------------------------------


def synthetic_blocks(n: int = 8, seq: int = 16):
    """One language of packed blocks (token rows of a repeating pattern) for the probe."""
    from langmoe.data.packing import LanguageIndex, PackedBlocks

    g = torch.Generator().manual_seed(0)
    rows = [(torch.randint(3, 40, (1,), generator=g) + torch.arange(seq)) % VOCAB for _ in range(n)]
    return PackedBlocks(tokens=torch.stack(rows), lang=torch.zeros(n, dtype=torch.long), index=LanguageIndex(["en"]))


@pytest.mark.parametrize(("arch", "ffn_names"), [
    ("phi3", ("gate_up_proj", "down_proj")),
    ("gpt_neox", ("dense_h_to_4h", "dense_4h_to_h")),
])
def test_deviation_probe_and_layer_selection(arch, ffn_names, monkeypatch):
    """The probe's per-layer FFN deviation is the Frobenius norm over exactly the MLP's weight matrices (checked
    against the fine-tuned parameters by name), and layer selection runs on it."""
    import langmoe.methods.dmoe.deviation as dev_mod
    from langmoe.methods.dmoe.layer_selection import select_layers

    model = dense_model(arch)
    prefix = ".".join(get_adapter(model).layers_path)
    lp = dev_mod.layer_params(model)
    assert len(lp) == 2
    for i, entry in enumerate(lp):
        assert [n for n, _ in entry["ffn"]] == [f"{prefix}.{i}.mlp.{w}.weight" for w in ffn_names]
        assert entry["attn"], "attention matrices found too"

    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuned: dict[str, torch.Tensor] = {}
    orig = dev_mod.measure

    def measure(*args, **kwargs):  # the fine-tuned weights, read right before the probe restores the base
        tuned.update({n: p.detach().clone() for n, p in model.named_parameters()})
        return orig(*args, **kwargs)

    monkeypatch.setattr(dev_mod, "measure", measure)
    cfg = dev_mod.DeviationConfig(kind="adamw", steps=2, lr=1e-3, micro_batch_size=4, last_n_layers=1)
    res = dev_mod.measure_deviation(model, synthetic_blocks(), cfg, langs=["en"])
    for i in range(2):
        names = [f"{prefix}.{i}.mlp.{w}.weight" for w in ffn_names]
        expected = torch.sqrt(sum(((tuned[n] - base[n]).double() ** 2).sum() for n in names)).item()
        assert expected > 0
        assert res.dev_ffn["en"][i] == pytest.approx(expected, rel=1e-5)
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters())  # base restored
    sel = select_layers(res.dev_ffn, top_n=1)
    assert len(sel.selected) == 1 and sel.selected[0] in (0, 1)


def test_phi3_partial_moe_exports_to_qwen2_moe_with_its_dense_layers_split(tmp_path):
    """Phi-3's dense layers keep a fused `gate_up_proj`: export splits it (gate rows first) and `qkv_proj` into
    the Llama names of Qwen2-MoE's `mlp_only_layers`; the stock model gives the same logits."""
    dense = dense_model("phi3")
    x = tokens()
    moe = upcycle(copy.deepcopy(dense), [1], 3, top_k=2).eval()
    want = logits(moe, x)
    assert export_stock(moe, tmp_path / "stock") == "qwen2_moe"
    stock = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "stock").eval()
    assert stock.config.mlp_only_layers == [0]
    assert (logits(stock, x) - want).abs().max().item() <= 1e-5
