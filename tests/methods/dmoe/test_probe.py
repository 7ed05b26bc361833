"""The probe kinds against hand computations on a tiny Llama; what the probe trains, copies and restores."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from dmoe_fixtures import synthetic_blocks, tiny_llama

import langmoe.methods.dmoe.deviation as deviation_mod
from langmoe.data.samplers import TemperatureSampler
from langmoe.errors import LangmoeError
from langmoe.methods.dmoe.deviation import _language_view, measure_deviation, similarity_matrix
from langmoe.methods.dmoe.probe import BaseCopy, layer_params

torch.set_num_threads(1)
BASE = {"micro_batch_size": 4, "stability": False, "last_n_layers": None, "center": False}


def _ffn_names(model) -> list[str]:
    return [n for e in layer_params(model) for n, _ in e["ffn"]]


def _hand_mean_gradient(model, blocks, lang: str, steps: int, accum: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """d(mean CLM loss over the steps × accum micro-batches)/dW, by plain autograd on a copy."""
    ref = copy.deepcopy(model).train()
    src = TemperatureSampler(_language_view(blocks, lang), 4, seed=seed, grad_accum=accum)
    losses = [ref(input_ids=b["input_ids"], labels=b["labels"]).loss
              for b in (src.get(s, m) for s in range(steps) for m in range(accum))]
    grads = torch.autograd.grad(torch.stack(losses).mean(), [dict(ref.named_parameters())[n] for n in
                                                            _ffn_names(ref)])
    return dict(zip(_ffn_names(ref), grads, strict=True))


def _vector(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads.values()])


def test_gradient_probe_is_the_mean_gradient_and_moves_nothing():
    model, blocks = tiny_llama(), synthetic_blocks()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = measure_deviation(model, blocks, {**BASE, "kind": "gradient", "steps": 2, "grad_accum": 3}, langs=["de"])
    g = _hand_mean_gradient(model, blocks, "de", steps=2, accum=3)
    torch.testing.assert_close(res.vectors["de"], -_vector(g), rtol=1e-4, atol=1e-7)
    for layer in range(3):
        names = [f"model.layers.{layer}.mlp.{w}_proj.weight" for w in ("gate", "up", "down")]
        expected = float(torch.sqrt(sum(g[n].double().pow(2).sum() for n in names)))
        assert res.dev_ffn["de"][layer] == pytest.approx(expected, rel=1e-5)
    assert res.base_copy_bytes is None and res.config.lr is None
    assert res.probe["de"].tokens_seen == 2 * 3 * 4 * 16
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None and p.requires_grad, n


def test_one_sgd_step_is_minus_lr_times_the_gradient():
    model, blocks = tiny_llama(), synthetic_blocks()
    res = measure_deviation(model, blocks, {**BASE, "kind": "sgd", "lr": 0.05, "steps": 1, "grad_accum": 2,
                                            "grad_clip": 0.0}, langs=["en"])
    g = _hand_mean_gradient(model, blocks, "en", steps=1, accum=2)
    torch.testing.assert_close(res.vectors["en"], -0.05 * _vector(g), rtol=1e-4, atol=1e-8)
    assert res.base_copy_bytes == 4 * sum(t.numel() for t in g.values())  # the FFN matrices only, float32


def test_two_sgd_steps_follow_the_gradient_at_the_moved_weights():
    model, blocks = tiny_llama(), synthetic_blocks()
    res = measure_deviation(model, blocks, {**BASE, "kind": "sgd", "lr": 0.5, "steps": 2, "grad_accum": 1,
                                            "grad_clip": 0.0}, langs=["en"])
    ref = copy.deepcopy(model).train()
    params = dict(ref.named_parameters())
    src = TemperatureSampler(_language_view(blocks, "en"), 4, seed=0)
    start = {n: params[n].detach().clone() for n in _ffn_names(ref)}
    for step in range(2):
        b = src.get(step, 0)
        grads = torch.autograd.grad(ref(input_ids=b["input_ids"], labels=b["labels"]).loss,
                                    [params[n] for n in start])
        with torch.no_grad():
            for n, gr in zip(start, grads, strict=True):
                params[n] -= 0.5 * gr
    expected = torch.cat([(params[n].detach() - start[n]).reshape(-1) for n in start])
    torch.testing.assert_close(res.vectors["en"], expected, rtol=1e-4, atol=1e-7)


def test_ffn_only_training_leaves_attention_and_embeddings_untouched(monkeypatch):
    model, blocks = tiny_llama(), synthetic_blocks()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.model.embed_tokens.weight.requires_grad_(False)  # a flag the probe must give back as it was
    seen: dict[str, torch.Tensor] = {}
    real = deviation_mod.measure

    def spy(*a, **k):  # the weights right before the probe measures and restores them
        seen.update({n: p.detach().clone() for n, p in model.named_parameters()})
        seen["grads"] = [n for n, p in model.named_parameters() if p.grad is not None]
        return real(*a, **k)

    monkeypatch.setattr(deviation_mod, "measure", spy)
    measure_deviation(model, blocks, {**BASE, "kind": "adamw", "steps": 2}, langs=["de"])
    ffn = set(_ffn_names(model))
    assert ffn and all(not torch.equal(seen[n], base[n]) for n in ffn)  # the FFN trained
    assert all(torch.equal(seen[n], base[n]) for n in base if n not in ffn)  # attention, norms, embeddings: not
    assert seen["grads"] == []  # the optimizer's last step cleared them; frozen weights never had one
    assert not model.model.embed_tokens.weight.requires_grad and model.model.layers[0].self_attn.q_proj.weight.requires_grad
    for n, p in model.named_parameters():
        assert torch.equal(p, base[n]), n


def test_attention_is_trained_and_measured_only_when_asked():
    model, blocks = tiny_llama(), synthetic_blocks()
    off = measure_deviation(model, blocks, {**BASE, "kind": "sgd", "steps": 1}, langs=["de"])
    on = measure_deviation(model, blocks, {**BASE, "kind": "sgd", "steps": 1, "include_attention": True},
                           langs=["de"])
    assert off.dev_attn is None and all(v > 0 for v in on.dev_attn["de"])
    # one SGD step: the FFN's own step does not depend on what else trains (same gradient at the base)
    assert on.dev_ffn["de"] == pytest.approx(off.dev_ffn["de"], rel=1e-5)


def test_base_copy_is_exact_and_bf16_when_the_weights_are():
    model = tiny_llama()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())  # a bf16 checkpoint loaded in float32
    params = dict(model.named_parameters())
    ffn = {n: params[n] for n in _ffn_names(model)}
    copy_bf16 = BaseCopy(ffn)
    assert copy_bf16.nbytes == 2 * sum(p.numel() for p in ffn.values())
    with torch.no_grad():
        ffn[next(iter(ffn))].add_(1e-3)
    copy_fp32 = BaseCopy(ffn)  # one weight is no longer a bf16 value: that tensor is kept in float32
    first = next(iter(ffn))
    assert copy_fp32.nbytes == copy_bf16.nbytes + 2 * ffn[first].numel()
    copy_bf16.restore(ffn)
    assert all(torch.equal(p, p.to(torch.bfloat16).float()) for p in ffn.values())
    assert float(copy_fp32.delta(first, ffn[first]).abs().max()) == pytest.approx(1e-3, rel=1e-2)


def test_base_copy_on_disk_gives_the_same_probe_and_leaves_no_file(tmp_path):
    from langmoe.methods.dmoe.probe import DiskBaseCopy, make_base_copy

    model, blocks = tiny_llama(), synthetic_blocks()
    cfg = {**BASE, "kind": "sgd", "steps": 2, "stability": True}
    mem = measure_deviation(model, blocks, {**cfg, "base_copy": "memory"})
    disk = measure_deviation(model, blocks, {**cfg, "base_copy": "disk"}, out_dir=tmp_path / "d")
    assert disk.dev_ffn == mem.dev_ffn and disk.similarity == mem.similarity
    assert disk.base_copy_bytes == mem.base_copy_bytes
    assert not list((tmp_path / "d").glob("langmoe-probe-base-*"))  # removed at the end
    params = dict(model.named_parameters())
    ffn = {n: params[n] for n in _ffn_names(model)}
    before = {n: p.detach().clone() for n, p in ffn.items()}
    copy_ = make_base_copy(ffn, "disk", tmp_path)
    assert isinstance(copy_, DiskBaseCopy) and copy_.path.is_file()
    with torch.no_grad():
        for p in ffn.values():
            p.mul_(3.0)
    first = next(iter(ffn))
    torch.testing.assert_close(copy_.delta(first, ffn[first]), 2 * before[first])
    copy_.restore(ffn)
    assert all(torch.equal(p, before[n]) for n, p in ffn.items())
    copy_.close()
    assert not copy_.path.exists()
    assert type(make_base_copy(ffn, "auto", tmp_path)) is BaseCopy  # small: kept in memory
    with pytest.raises(LangmoeError, match="base_copy must be"):
        make_base_copy(ffn, "cloud", tmp_path)


def test_bf16_model_gradient_probe_accumulates_in_float32_and_update_kinds_refuse():
    model, blocks = tiny_llama(), synthetic_blocks()
    ref = measure_deviation(model, blocks, {**BASE, "kind": "gradient", "steps": 2, "grad_accum": 2}, langs=["en"])
    low = copy.deepcopy(model).to(torch.bfloat16)
    res = measure_deviation(low, blocks, {**BASE, "kind": "gradient", "steps": 2, "grad_accum": 2}, langs=["en"])
    assert res.vectors["en"].dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(res.vectors["en"], ref.vectors["en"], dim=0)
    assert float(cos) > 0.97  # bf16 forward and backward, float32 sum
    assert all(p.grad is None for p in low.parameters())
    with pytest.raises(LangmoeError, match="load the model in float32"):
        measure_deviation(low, blocks, {**BASE, "kind": "sgd"}, langs=["en"])


def test_bf16_autocast_stays_close_to_float32():
    model, blocks = tiny_llama(), synthetic_blocks()
    cfg = {**BASE, "kind": "gradient", "steps": 1, "grad_accum": 2}
    a = measure_deviation(model, blocks, cfg, langs=["en"])
    b = measure_deviation(model, blocks, {**cfg, "mixed_precision": "bf16"}, langs=["en"])
    assert float(torch.nn.functional.cosine_similarity(a.vectors["en"], b.vectors["en"], dim=0)) > 0.97
    assert b.dev_ffn["en"] == pytest.approx(a.dev_ffn["en"], rel=0.05)


def test_light_adamw_keeps_bf16_moments_and_follows_torch_adamw():
    from langmoe.methods.dmoe.probe import LightAdamW

    torch.manual_seed(0)
    w0 = torch.randn(16, 8)
    grads = [torch.randn(16, 8) * (i + 1) for i in range(3)]
    a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    ref = torch.optim.AdamW([a], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    light = LightAdamW([b], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for g in grads:
        a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        light.step()
    assert light.state[b]["exp_avg"].dtype == torch.bfloat16 and light.state[b]["step"] == 3
    torch.testing.assert_close(b - w0, a - w0, rtol=2e-2, atol=2e-4)
    model, blocks = tiny_llama(), synthetic_blocks()
    cfg = {**BASE, "kind": "adamw", "lr": 1e-3, "steps": 2}
    full = measure_deviation(model, blocks, cfg)
    half = measure_deviation(model, blocks, {**cfg, "optimizer_state": "bfloat16"})
    np.testing.assert_allclose(half.similarity, full.similarity, atol=0.02)
    with pytest.raises(LangmoeError, match="optimizer_state applies to the adamw probe"):
        measure_deviation(model, blocks, {**cfg, "kind": "sgd", "optimizer_state": "bfloat16"})


@pytest.mark.parametrize("kind", ["gradient", "sgd", "adamw"])
def test_every_kind_is_deterministic(kind):
    model, blocks = tiny_llama(), synthetic_blocks()
    cfg = {**BASE, "kind": kind, "steps": 2, "grad_accum": 2}
    a, b = (measure_deviation(model, blocks, cfg) for _ in range(2))
    assert a.dev_ffn == b.dev_ffn and a.similarity == b.similarity
    assert all(torch.equal(a.vectors[x], b.vectors[x]) for x in a.langs)
    other = measure_deviation(model, blocks, {**cfg, "seed": 1})
    assert other.dev_ffn != a.dev_ffn  # the seed (data order) matters


def test_every_kind_finds_the_related_languages():
    """en and fr follow the same rule, de another: centred or not, en~fr is the most similar pair."""
    model, blocks = tiny_llama(), synthetic_blocks()
    for kind in ("gradient", "sgd", "adamw"):
        for center in (False, True):
            s = np.asarray(measure_deviation(model, blocks, {**BASE, "kind": kind, "steps": 2, "center": center,
                                                             "lr": 1e-3 if kind == "adamw" else None}).similarity)
            assert s[0, 1] > max(s[0, 2], s[1, 2]) + 0.2, (kind, center, s)


def test_centred_similarity_by_hand():
    """Three vectors sharing a direction c: raw cosines are all high; centred (unit vectors minus their mean),
    what is left is what sets each apart (computed by hand); a language's scale does not matter."""
    c = torch.tensor([10.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    e = lambda *x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    v = [c + e(0.0, 1.0, 0.0, 0.0), c + e(0.0, 1.0, 0.2, 0.0), c + e(0.0, 0.0, 0.0, 1.0)]
    raw = similarity_matrix(v, center=False)
    assert raw[0, 2] > 0.98
    units = [x / x.norm() for x in v]
    m = torch.stack(units).mean(0)
    u = [x - m for x in units]
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    cen = similarity_matrix(v, center=True)
    for i in range(3):
        for j in range(3):
            assert cen[i, j] == pytest.approx(1.0 if i == j else cos(u[i], u[j]), abs=1e-9)
    assert cen[0, 1] > 0 > cen[0, 2]
    np.testing.assert_allclose(similarity_matrix([v[0], 5 * v[1], 0.1 * v[2]], center=True), cen, atol=1e-12)
    mean_raw = torch.stack(v).mean(0)
    raw_centred = [x - mean_raw for x in v]
    assert similarity_matrix(v, center="unnormalised")[0, 2] == pytest.approx(cos(raw_centred[0], raw_centred[2]))
    assert np.allclose(similarity_matrix(v[:2], center=True), similarity_matrix(v[:2], center=False))
