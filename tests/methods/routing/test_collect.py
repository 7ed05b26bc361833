"""Routing counts against transformers' own router-logit output, soft sums, warnings and refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from routing_fixtures import tiny_langmoe, tiny_moe

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "eval"))
from eval_fixtures import ListCorpus, char_tokenizer  # noqa: E402

from langmoe.data.packing import pack_corpus  # noqa: E402
from langmoe.errors import LangmoeError  # noqa: E402
from langmoe.methods.routing.collect import RoutingCounts, collect_routing  # noqa: E402

torch.set_num_threads(1)

CORPUS = ListCorpus({
    "xa": {"test": ["abca abcc " * 4, "aab cab " * 5], "train": ["abc " * 40]},
    "xb": {"test": ["dédé ddé " * 6], "train": ["déd " * 40]},
    "xc": {"test": ["ab"], "train": ["a"]},
})


def _reference_counts(model, tok, lang, window, budget):
    """Independent route: transformers' `output_router_logits=True`, softmax top-k by hand (olmoe's rule)."""
    blocks = pack_corpus(CORPUS, tok, [lang], "test", window, max_tokens_per_lang=budget)
    valid = (torch.arange(blocks.block_len)[None] < blocks.lengths[:, None]).reshape(-1)
    with torch.no_grad():
        out = model(blocks.tokens, output_router_logits=True)
    k = model.config.num_experts_per_tok
    rows = []
    for logits in out.router_logits:
        idx = torch.softmax(logits.float(), -1).topk(k, -1).indices[valid]
        rows.append(torch.bincount(idx.reshape(-1), minlength=model.config.num_experts).double().numpy())
    return np.stack(rows), int(valid.sum())


def test_topk_counts_match_transformers_router_logits():
    model, tok = tiny_moe("olmoe"), char_tokenizer()
    rc = collect_routing(model, tok, CORPUS, ["xa", "xb"], tokens_per_lang=60, window=16, batch_size=2,
                         min_tokens=1, equal_budget=False)
    c = rc.array()
    assert c.shape == (2, 3, 8) and rc.layers == [0, 1, 2] and rc.top_k == [2, 2, 2]
    for i, lang in enumerate(["xa", "xb"]):
        ref, n = _reference_counts(model, tok, lang, 16, 60)
        assert rc.tokens[lang] == n
        assert np.array_equal(c[i], ref)
        assert np.allclose(c[i].sum(-1), 2 * n)  # every real token hits top-k = 2 experts per layer
    assert set(rc.token_ids["xb"]) == {tok.convert_tokens_to_ids(t) for t in ["d", "é", " "]}


def test_equal_budgets_cut_to_the_smallest_language_and_units_sum_to_counts():
    model, tok = tiny_moe("olmoe"), char_tokenizer()
    n_xb = _reference_counts(model, tok, "xb", 16, 60)[1]  # xb has fewer test tokens than xa
    with pytest.warns(UserWarning, match=rf"'xb' has only {n_xb} test tokens of the 200 asked: every language is "
                                         rf"subsampled to {n_xb} tokens"):
        rc = collect_routing(model, tok, CORPUS, ["xa", "xb"], tokens_per_lang=200, window=16, batch_size=3,
                             min_tokens=1)
    assert rc.equal_budget and rc.tokens == {"xa": n_xb, "xb": n_xb}
    for i, lang in enumerate(["xa", "xb"]):
        ref, n = _reference_counts(model, tok, lang, 16, n_xb)  # the first n_xb tokens, routed on their own
        assert n == n_xb and np.array_equal(rc.array()[i], ref)
        units = rc.unit_arrays()[i]
        assert units.shape[1:] == (3, 8) and np.array_equal(units.sum(0), ref)
    assert len(rc.warnings) == 1  # no warning when the smallest language has at least half the ask
    assert not [w for w in collect_routing(model, tok, CORPUS, ["xa", "xb"], tokens_per_lang=60, window=16,
                                           min_tokens=1).warnings if "subsampled" in w]


def test_soft_counts_sum_to_tokens_and_json_round_trip(tmp_path):
    model, tok = tiny_moe("deepseek_v3"), char_tokenizer()
    rc = collect_routing(model, tok, CORPUS, ["xa"], tokens_per_lang=40, window=16, soft=True, min_tokens=1)
    assert rc.layers == [1, 2] and rc.kind == "soft"
    assert np.allclose(rc.array()[0].sum(-1), rc.tokens["xa"])
    rc.save(tmp_path / "c.json")
    assert RoutingCounts.load(tmp_path / "c.json") == rc


def test_generic_transformers_moe_counts_and_no_masking():
    """A model type outside the known families (glm4_moe) is counted through its declared router class."""
    from langmoe.methods.routing.adapt import AdaptConfig, prepare_adaptation

    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(tf.Glm4MoeConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, n_routed_experts=4, num_experts_per_tok=2,
        n_group=1, topk_group=1, first_k_dense_replace=0, pad_token_id=0)).eval()
    rc = collect_routing(model, char_tokenizer(), CORPUS, ["xa", "xb"], tokens_per_lang=40, window=16, min_tokens=1)
    assert rc.layers == [0, 1] and rc.num_experts == [4, 4]
    assert np.allclose(rc.array().sum(-1), 2 * np.array([[rc.tokens["xa"]] * 2, [rc.tokens["xb"]] * 2]))
    cfg = AdaptConfig(mode="seft", child="xc", parent="xa", alpha=0.01)
    with pytest.raises(LangmoeError, match="cannot be masked yet"):
        prepare_adaptation(model, cfg, rc)


def test_langmoe_model_counts():
    model, tok = tiny_langmoe(), char_tokenizer()
    rc = collect_routing(model, tok, CORPUS, ["xa", "xb"], tokens_per_lang=40, window=16, min_tokens=1)
    assert rc.array().shape == (2, 3, 4)
    assert np.allclose(rc.array().sum(-1), 2 * np.array([[rc.tokens["xa"]] * 3, [rc.tokens["xb"]] * 3]))


def test_few_tokens_warn_with_count_and_bad_input():
    model, tok = tiny_moe("mixtral"), char_tokenizer()
    with pytest.warns(UserWarning, match=r"'xc' has only 3 test tokens \(< 50 for stable"):
        rc = collect_routing(model, tok, CORPUS, ["xa", "xc"], tokens_per_lang=60, window=16, min_tokens=50,
                             equal_budget=False)
    assert len(rc.warnings) == 1 and "'xc'" in rc.warnings[0]  # xa has 60 tokens: no warning
    with pytest.raises(LangmoeError, match="not in the corpus"):
        collect_routing(model, tok, CORPUS, ["zz"], window=16)
    with pytest.raises(LangmoeError, match="max positions"):
        collect_routing(model, tok, CORPUS, ["xa"], window=4096)
    dense = tf.AutoModelForCausalLM.from_config(tf.Qwen3Config(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8))
    with pytest.raises(LangmoeError, match="no MoE router"):
        collect_routing(dense, tok, CORPUS, ["xa"], window=16)
    with pytest.raises(LangmoeError, match="routers cannot be found: unsupported MoE layout"):
        dense.config.num_local_experts = 4  # claims experts, has no router the package can find
        collect_routing(dense, tok, CORPUS, ["xa"], window=16)
