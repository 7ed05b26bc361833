"""Deviation probe on a tiny Llama with synthetic languages (2 probe steps): exact values, restore, cache."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from dmoe_fixtures import synthetic_blocks, tiny_llama

import langmoe.methods.dmoe.deviation as deviation_mod
from langmoe.data.samplers import TemperatureSampler
from langmoe.errors import LangmoeError
from langmoe.methods.dmoe.deviation import (
    DeviationConfig,
    DeviationResult,
    _language_view,
    layer_params,
    measure_deviation,
)
from langmoe.train.trainer import TrainConfig, train

torch.set_num_threads(1)
CFG = {"steps": 2, "lr": 1e-3, "micro_batch_size": 4, "grad_accum": 1, "stability": False}
# the paper's probe (what the probe did before it had kinds): AdamW on every parameter, raw cosines
PAPER = {**CFG, "kind": "adamw", "params": "all", "include_attention": True, "center": False}


def test_hand_computed_deviation_and_vector(tmp_path):
    """dev_ffn = Frobenius norm over gate/up/down deltas, vector = concatenated deltas of the last 2 layers,
    against an independent fine-tune of a copy with the same sampler and settings."""
    model, blocks = tiny_llama(), synthetic_blocks()
    ref = copy.deepcopy(model)
    base = {n: p.detach().clone() for n, p in ref.named_parameters()}
    cfg = DeviationConfig(**PAPER, last_n_layers=2)
    res = measure_deviation(model, blocks, cfg, langs=["de"])
    tc = TrainConfig(steps=2, lr=1e-3, warmup_ratio=0.0, min_lr_ratio=1.0, weight_decay=0.0, grad_clip=1.0,
                     micro_batch_size=4,
                     log_every=1, progress=False)
    train(ref, TemperatureSampler(_language_view(blocks, "de"), 4, seed=0), tc, tmp_path / "ref")
    after = dict(ref.named_parameters())
    pieces = []
    for layer in range(3):
        names = [f"model.layers.{layer}.mlp.{w}_proj.weight" for w in ("gate", "up", "down")]
        deltas = [(after[n].detach() - base[n]) for n in names]
        expected = torch.sqrt(sum((d.double() ** 2).sum() for d in deltas)).item()
        assert res.dev_ffn["de"][layer] == pytest.approx(expected, rel=1e-5)
        att = [f"model.layers.{layer}.self_attn.{w}_proj.weight" for w in ("q", "k", "v", "o")]
        exp_att = torch.sqrt(sum(((after[n].detach() - base[n]).double() ** 2).sum() for n in att)).item()
        assert res.dev_attn["de"][layer] == pytest.approx(exp_att, rel=1e-5)
        if layer >= 1:
            pieces += [d.reshape(-1) for d in deltas]
    assert res.vector_layers == [1, 2]
    assert torch.allclose(res.vectors["de"], torch.cat(pieces), atol=1e-7)
    assert res.dev_ffn["de"][0] > 0


def test_similar_languages_and_base_restored():
    model, blocks = tiny_llama(), synthetic_blocks()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = measure_deviation(model, blocks, PAPER)
    assert res.langs == ["en", "fr", "de"] and res.num_layers == 3 and not res.sketched
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    s = res.similarity
    assert s[0][1] > 0.5 > max(abs(s[0][2]), abs(s[1][2]))  # en~fr (same rule), de unrelated
    # every language starts from the same base: the first loss is the base's on that language's batch
    assert res.probe["en"].steps == 2 and res.probe["en"].tokens_seen == 2 * 4 * 16


def test_sketched_vectors_keep_the_similarity():
    model, blocks = tiny_llama(), synthetic_blocks()
    exact = measure_deviation(model, blocks, PAPER)
    sk = measure_deviation(model, blocks, {**PAPER, "sketch_dim": 256, "sketch_method": "gaussian"})
    assert sk.sketched and sk.vector_dim == 256 and exact.vector_dim == 3 * 3 * 32 * 64
    for i in range(3):
        for j in range(3):
            assert sk.similarity[i][j] == pytest.approx(exact.similarity[i][j], abs=0.25)
    assert sk.similarity[0][1] > 0.5 > abs(sk.similarity[0][2])


def test_cache_resumes_without_redoing_finished_languages(tmp_path, monkeypatch):
    model, blocks = tiny_llama(), synthetic_blocks()
    first = measure_deviation(model, blocks, PAPER, out_dir=tmp_path)
    assert (tmp_path / "deviation.json").is_file() and (tmp_path / "deviation.vectors.pt").is_file()
    (tmp_path / "probe" / "fr.json").unlink()  # as if killed while probing fr
    calls = []
    real = deviation_mod.run_probe
    monkeypatch.setattr(deviation_mod, "run_probe", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = measure_deviation(model, blocks, PAPER, out_dir=tmp_path)
    assert len(calls) == 1
    assert again.probe["en"].cached and not again.probe["fr"].cached
    for x in first.langs:  # the re-probed language reproduces exactly (seeded), the cached ones are read back
        assert again.dev_ffn[x] == pytest.approx(first.dev_ffn[x], rel=1e-6)
    assert np.allclose(again.similarity, first.similarity, atol=1e-6)
    # another config invalidates the cache
    calls.clear()
    measure_deviation(model, blocks, {**PAPER, "lr": 2e-3}, out_dir=tmp_path)
    assert len(calls) == 3
    loaded = DeviationResult.load(tmp_path / "deviation.json")
    assert loaded.config.lr == 2e-3 and set(loaded.vectors) == {"en", "fr", "de"}


def test_factory_source_and_all_layers():
    model, blocks = tiny_llama(), synthetic_blocks()
    factory = lambda lang: TemperatureSampler(_language_view(blocks, lang), 4, seed=0)  # noqa: E731
    a = measure_deviation(model, factory, {**CFG, "last_n_layers": None}, langs=["en", "de"])
    b = measure_deviation(model, {"en": blocks, "de": blocks}, {**CFG, "last_n_layers": None})
    assert a.vector_layers == [0, 1, 2]
    for x in ("en", "de"):
        assert a.dev_ffn[x] == pytest.approx(b.dev_ffn[x], rel=1e-6)


def test_errors():
    model, blocks = tiny_llama(), synthetic_blocks()
    with pytest.raises(LangmoeError, match="last_n_layers=5"):
        measure_deviation(model, blocks, {**CFG, "last_n_layers": 5})
    with pytest.raises(LangmoeError, match="'xx' is not in the packed blocks"):
        measure_deviation(model, blocks, CFG, langs=["xx"])
    with pytest.raises(LangmoeError, match="deviation config: steps"):
        DeviationConfig.parse({"steps": 0})
    with pytest.raises(LangmoeError, match="pass `langs`"):
        measure_deviation(model, lambda x: None, CFG)
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    with pytest.raises(LangmoeError, match="frozen"):
        measure_deviation(model, blocks, CFG)


def test_layer_params_finds_ffn_and_attention_matrices_only():
    lp = layer_params(tiny_llama())
    assert len(lp) == 3
    assert [n for n, _ in lp[0]["ffn"]] == [f"model.layers.0.mlp.{w}_proj.weight" for w in ("gate", "up", "down")]
    assert len(lp[0]["attn"]) == 4


def test_accumulated_probe_matches_reference_and_reports_stability(tmp_path):
    """grad_accum=2: the probe equals an independent fine-tune with 2 micro-batches per step; the stability probe
    (seed + 1) equals the same fine-tune with seed 1, and the reported correlation is computed from the two."""
    from langmoe.methods.dmoe.deviation import FLAT_RATIO

    model, blocks = tiny_llama(), synthetic_blocks()
    langs = ["en", "de", "fr"]
    res = measure_deviation(model, blocks, {**PAPER, "grad_accum": 2, "stability": True}, out_dir=tmp_path / "d",
                            langs=langs)
    refs = {}
    for seed in (0, 1):
        vecs = []
        for x in langs:
            ref = copy.deepcopy(model)
            base = {n: p.detach().clone() for n, p in ref.named_parameters()}
            tc = TrainConfig(steps=2, lr=1e-3, warmup_ratio=0.0, min_lr_ratio=1.0, weight_decay=0.0, grad_clip=1.0,
                             micro_batch_size=4, grad_accum=2, seed=seed, log_every=1, progress=False)
            train(ref, TemperatureSampler(_language_view(blocks, x), 4, seed=seed, grad_accum=2), tc,
                  tmp_path / f"ref{seed}{x}")
            after = dict(ref.named_parameters())
            names = [f"model.layers.{li}.mlp.{w}_proj.weight" for li in range(3) for w in ("gate", "up", "down")]
            vecs.append(torch.cat([(after[n].detach() - base[n]).reshape(-1) for n in names]).double())
        v = torch.stack(vecs)
        v = v / v.norm(dim=1, keepdim=True)
        refs[seed] = (v @ v.T).numpy()
    np.testing.assert_allclose(np.asarray(res.similarity), refs[0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(res.stability.similarity), refs[1], atol=1e-5)
    iu = np.triu_indices(3, 1)
    assert res.stability.similarity_corr == pytest.approx(np.corrcoef(refs[0][iu], refs[1][iu])[0, 1], abs=1e-4)
    assert res.stability.seeds == [0, 1]
    saved = DeviationResult.load(tmp_path / "d" / "deviation.json")
    assert saved.stability is not None and saved.layer_spread == pytest.approx(res.layer_spread)
    spread = np.asarray([res.dev_ffn[x] for x in langs]).mean(axis=0)
    assert res.layer_spread == pytest.approx(spread.max() / spread.min())
    assert (res.layer_spread < FLAT_RATIO) == any("flat" in w for w in res.warnings)


def test_flat_layers_warn():
    from langmoe.methods.dmoe.deviation import layer_spread

    assert layer_spread({"a": [1.0, 1.05], "b": [1.0, 1.07]}) == pytest.approx(1.06)
    assert layer_spread({"a": [0.0, 1.0]}) is None


def test_vectors_are_sketched_above_a_size_and_keep_the_similarity():
    model, blocks = tiny_llama(), synthetic_blocks()
    exact = measure_deviation(model, blocks, {**CFG, "kind": "gradient"})
    auto = measure_deviation(model, blocks, {**CFG, "kind": "gradient", "sketch_above": 1000})
    assert not exact.sketched and exact.vector_dim == 3 * 3 * 32 * 64
    assert auto.sketched and auto.sketch_method == "count" and auto.vector_dim == 65536
    np.testing.assert_allclose(auto.similarity, exact.similarity, atol=0.03)
    assert auto.dev_ffn == exact.dev_ffn  # the deviations never depend on the sketch
    small = measure_deviation(model, blocks, {**CFG, "kind": "gradient", "sketch_dim": 2048})
    assert small.sketched and small.vector_dim == 2048
    np.testing.assert_allclose(small.similarity, exact.similarity, atol=0.1)
    never = DeviationConfig.parse({"sketch_above": None})
    assert never.sketch_of(10**12) is None and DeviationConfig().sketch_of(10**12) == ("count", 65536)


def test_config_defaults_per_kind_and_one_line_errors():
    assert DeviationConfig.parse({"kind": "adamw"}).lr == 3e-4
    assert DeviationConfig.parse({"kind": "sgd"}).lr == 0.3
    assert DeviationConfig.parse({"kind": "gradient"}).lr is None
    assert DeviationConfig.parse({"kind": "sgd", "lr": 0.1}).lr == 0.1
    for bad, field in (({"kind": "lion"}, "kind"), ({"params": "ffn"}, "params"), ({"sketch_dim": 0}, "sketch_dim"),
                       ({"sketch_above": 0}, "sketch_above"), ({"sketch_method": "fft"}, "sketch_method"),
                       ({"lr": -1.0}, "lr"), ({"mixed_precision": "fp8"}, "mixed_precision"), ({"centre": True},
                                                                                              "centre")):
        with pytest.raises(LangmoeError, match=f"deviation config: {field}") as e:
            DeviationConfig.parse(bad)
        assert "\n" not in str(e.value)


def test_a_result_written_before_kinds_reads_as_the_paper_probe(tmp_path):
    import json

    old = {"langs": ["en"], "num_layers": 1, "dev_ffn": {"en": [0.1]}, "vector_layers": [0], "vector_dim": 2,
           "sketched": False, "similarity": [[1.0]],
           "config": {"steps": 4, "lr": 3e-4, "micro_batch_size": 8, "grad_accum": 4, "stability": True,
                      "block_len": 128, "max_tokens_per_lang": 50000, "last_n_layers": 3,
                      "include_attention": True, "sketch_dim": None, "weight_decay": 0.0, "grad_clip": 1.0,
                      "mixed_precision": "no", "seed": 0, "progress": False}}
    (tmp_path / "d.json").write_text(json.dumps(old))
    cfg = DeviationResult.load(tmp_path / "d.json").config
    assert (cfg.kind, cfg.params, cfg.center, cfg.sketch_above, cfg.lr) == ("adamw", "all", False, None, 3e-4)


def test_the_paper_probe_keeps_its_cache_key():
    """Runs that pin the old probe (kind adamw, params all, raw cosines) keep the per-language key they had."""
    import hashlib
    import json

    cfg = DeviationConfig.parse(PAPER)
    old_fields = {k: v for k, v in cfg.model_dump(mode="json").items()
                  if k not in ("progress", "kind", "params", "center", "sketch_method", "sketch_above",
                               "optimizer_state", "base_copy", "checkpointing")}
    assert cfg.key_fields(1000) == old_fields
    old_key = hashlib.sha256(json.dumps({"v": 1, "cfg": old_fields, "base": "b", "data": "d", "lang": "en"},
                                        sort_keys=True).encode()).hexdigest()[:20]
    assert deviation_mod._cache_key(cfg.key_fields(1000), "b", "d", "en") == old_key
    assert "kind" in DeviationConfig.parse(CFG).key_fields(1000)
