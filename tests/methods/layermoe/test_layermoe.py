"""LayerMoE: FFN-input similarity on a model, classifiers (per token: KV-cached generation), lifelong expansion."""

from __future__ import annotations

import json

import pytest
import torch
from expansion_world import fast_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from langmoe.data.corpus import open_corpus
from langmoe.data.packing import pack_corpus
from langmoe.errors import LangmoeError
from langmoe.methods import layermoe
from langmoe.methods.expansion.surgery import expand_model, set_classifiers
from langmoe.methods.layermoe.similarity import ffn_input_mean_units
from langmoe.models.moe_io import load_moe_pretrained
from langmoe.models.router_recorder import router_outputs


def test_ffn_input_units_match_post_attention_norm_outputs(tmp_path):
    cfg = fast_config(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(cfg["model"])
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
    blocks = pack_corpus(open_corpus(cfg["corpus"]), tokenizer, ["en", "es"], "train", 16, max_tokens_per_lang=100)
    got = ffn_input_mean_units(model, blocks, batch_size=3)
    # independent: capture the Llama post-attention RMSNorm outputs (= the MLP inputs) with forward hooks
    seen = {}
    hooks = [layer.post_attention_layernorm.register_forward_hook(
        lambda m, a, o, i=i: seen.setdefault(i, []).append(o.detach())) for i, layer in enumerate(model.model.layers)]
    batch = blocks.batch(list(range(len(blocks))))
    with torch.no_grad():
        model(input_ids=batch["input_ids"])
    for h in hooks:
        h.remove()
    valid = batch["labels"] != -100
    for li, code in enumerate(blocks.index.codes):
        m = valid & (batch["lang_ids"] == li)
        for i in range(len(model.model.layers)):
            x = seen[i][0][m].double()
            x = x[x.norm(dim=-1) > 0]  # a zero input (zero pad embedding at a document start) has no direction
            ref = (x / x.norm(dim=-1, keepdim=True)).mean(0)
            assert torch.allclose(got[code][i], ref, atol=1e-6)


def _expanded_with_classifier(tmp_path, mode="token"):
    cfg = fast_config(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(cfg["model"])
    expand_model(model, {0: 2, 1: 1}, 2, seed=0)
    model = set_classifiers(model, [0, 1], mode=mode, seed=5)
    model.eval()
    return model


def test_token_classifier_kv_cached_generation_equals_uncached(tmp_path):
    model = _expanded_with_classifier(tmp_path, "token")
    prompt = torch.tensor([[1, 5, 9, 2, 7, 3, 11, 4]])
    with torch.no_grad():
        model(input_ids=prompt)
    decisions = torch.cat([o.override_logits_of("classifier").argmax(-1) for o in router_outputs(model)])
    assert set(decisions.tolist()) == {0, 1}  # both old- and new-routed tokens occur: the test can fail
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    cached = model.generate(prompt, use_cache=True, **kw)
    uncached = model.generate(prompt, use_cache=False, **kw)
    assert cached.shape[1] == prompt.shape[1] + 12
    assert torch.equal(cached, uncached)


def test_sequence_mode_classifier_decides_per_sequence(tmp_path):
    model = _expanded_with_classifier(tmp_path, "sequence")
    ids = torch.tensor([[1, 5, 9, 2], [7, 3, 11, 4]])
    with torch.no_grad():
        model(input_ids=ids)
    out = router_outputs(model)[0]
    assert out.override_logits_of("classifier").shape == (2, 2)
    old_rows = out.override_logits_of("classifier").argmax(-1) == 0
    first = out.topk_idx[:, 0].reshape(2, 4)
    assert all(bool((first[r] == 0).all()) for r in range(2) if old_rows[r])


def test_layermoe_run_and_lifelong_expansion_keeps_g1_experts(tmp_path):
    cfg1 = fast_config(tmp_path, budget=3, top_k_cls=1)
    g1 = layermoe.run(cfg1, tmp_path / "g1")
    rec1 = json.loads((tmp_path / "g1" / "expansion.json").read_text())
    assert rec1["new_experts_total"] == 3 and rec1["budget"] == 3
    assert len(rec1["similarity"]["S"]) == 2 and len(rec1["classifier_layers"]) == 1
    cls_layer = rec1["classifier_layers"][0]
    assert rec1["similarity"]["S"][cls_layer] == max(rec1["similarity"]["S"])  # top-1 most similar layer
    assert rec1["routing"]["layers"][str(cls_layer)]["classifier_accuracy"] is not None
    # the layer with lower similarity gets at least as many experts
    S = rec1["similarity"]["S"]
    lo, hi = (0, 1) if S[0] < S[1] else (1, 0)
    assert rec1["new_experts"][str(lo)] >= rec1["new_experts"][str(hi)]
    g1_model = load_moe_pretrained(tmp_path / "g1")
    assert torch.equal(g1_model.state_dict()["lm_head.weight"], g1.model.state_dict()["lm_head.weight"])

    cfg2 = fast_config(tmp_path, model=str(tmp_path / "g1"), new=["fr", "nl"], old=["en", "de", "es", "it"],
                       budget=2, top_k_cls=1, stage1={"steps": 4, "lr": 0.05, "weight_decay": 0.5})
    layermoe.run(cfg2, tmp_path / "g2")
    rec2 = json.loads((tmp_path / "g2" / "expansion.json").read_text())
    assert rec2["lifelong"] and rec2["expert0_langs"] == ["en", "de"]
    assert rec2["lineage"]["known_langs"] == ["en", "de", "es", "it", "fr", "nl"]
    g2_model = load_moe_pretrained(tmp_path / "g2")
    s1, s2 = g1_model.state_dict(), g2_model.state_dict()
    for k, v in s1.items():
        if "router" in k:
            continue
        w = s2[k]
        if w.shape != v.shape:  # experts added on top: the G1 rows are the prefix
            assert w.shape[1:] == v.shape[1:] and w.shape[0] > v.shape[0], k
            w = w[: v.shape[0]]
        assert torch.equal(w, v), k
    for i in ("0", "1"):
        assert rec2["experts_per_layer"][i] == rec1["experts_per_layer"][i] + rec2["new_experts"][i]
    with pytest.raises(LangmoeError, match="already learned"):
        layermoe.run(fast_config(tmp_path, model=str(tmp_path / "g2"), new=["es"], old=["en"], budget=2),
                     tmp_path / "g3")
    assert not (tmp_path / "g3").exists()


def test_dense_input_must_not_be_foreign_moe(tmp_path):
    from langmoe.models.upcycle import upcycle

    cfg = fast_config(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(cfg["model"])
    upcycle(model, "all", 2, 1)
    from langmoe.models.moe_io import save_moe_pretrained

    save_moe_pretrained(model, AutoTokenizer.from_pretrained(cfg["model"]), tmp_path / "foreign")
    with pytest.raises(LangmoeError, match="no langmoe expansion wrote"):
        layermoe.run(fast_config(tmp_path, model=str(tmp_path / "foreign"), budget=2), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_sequence_mode_run_and_ablations(tmp_path):
    rec = layermoe.run(fast_config(tmp_path, budget=2, top_k_cls=2, classifier_mode="sequence"), tmp_path / "seq").record
    assert rec["classifier_layers"] == [0, 1]
    assert all(v["classifier_accuracy"] is not None for v in rec["routing"]["layers"].values())
    model = load_moe_pretrained(tmp_path / "seq")
    assert all(s["route_override"]["mode"] == "sequence" for s in model.config.langmoe["layers"].values())
    rnd = layermoe.run(fast_config(tmp_path, budget=3, top_k_cls=0, allocation="random", evaluate=False),
                       tmp_path / "rnd").record
    assert rnd["classifier_layers"] == [] and rnd["new_experts_total"] == 3 and "delta" not in rnd


def test_classifier_count_follows_the_official_share_and_init_is_xavier():
    import math

    from langmoe.methods.layermoe import LayerMoEConfig
    from langmoe.methods.layermoe.plan import classifier_count
    from langmoe.models.overrides.classifier import RoutingClassifier

    base = {"new": ["es"], "old": ["en"]}
    assert [classifier_count(LayerMoEConfig(**base), n) for n in (4, 24, 2)] == [1, 7, 1]
    assert classifier_count(LayerMoEConfig(**base, cls_share=0.5), 4) == 2
    assert classifier_count(LayerMoEConfig(**base, top_k_cls=0), 24) == 0  # the ablation
    torch.manual_seed(0)
    w = RoutingClassifier(4096).weight
    assert abs(float(w.std()) - math.sqrt(2 / (4096 + 2))) < 2e-3
