"""The trainer's precision and memory settings: bf16 autocast is really used, gradient checkpointing recomputes and
gives the same losses and weights, the attention kernel switch is applied and undone, a command's active settings
override the config."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import ToySource, cfg, state, tiny_model

from langmoe.errors import LangmoeError
from langmoe.precision import Precision, use_precision
from langmoe.train.trainer import train


def _dtype_probe(model) -> tuple[list[torch.dtype], list[bool]]:
    """Output dtype of the first layer's MLP down-projection at every call, and whether it ran inside backward."""
    dtypes: list[torch.dtype] = []
    in_backward: list[bool] = []

    lin = model.model.layers[0].mlp.down_proj
    plain = lin.forward

    def forward(x):  # wraps forward itself: a checkpointing recompute skips module hooks, and may stop inside it
        in_backward.append(torch._C._current_graph_task_id() != -1)
        out = plain(x)
        dtypes.append(out.dtype)
        return out

    lin.forward = forward
    return dtypes, in_backward


@pytest.mark.parametrize("mp, want", [("no", torch.float32), ("bf16", torch.bfloat16)])
def test_bf16_autocast_is_used_in_the_training_forward(tmp_path, mp, want):
    model = tiny_model()
    dtypes, _ = _dtype_probe(model)
    train(model, ToySource(4), cfg(steps=2, mixed_precision=mp), tmp_path)
    assert dtypes and set(dtypes) == {want}
    assert next(model.parameters()).dtype == torch.float32  # autocast leaves the weights in fp32


def test_active_command_settings_override_the_config(tmp_path):
    model = tiny_model()
    dtypes, _ = _dtype_probe(model)
    with use_precision(Precision(mixed_precision="bf16", gradient_checkpointing=True)):
        train(model, ToySource(4), cfg(steps=1, mixed_precision="no", save_every=1), tmp_path)
    assert set(dtypes) == {torch.bfloat16}
    saved = json.loads((tmp_path / "checkpoints" / "step-1" / "trainer_state.json").read_text())["config"]
    assert saved["mixed_precision"] == "bf16" and saved["gradient_checkpointing"] is True  # the effective config


def test_gradient_checkpointing_recomputes_and_matches(tmp_path):
    ref_model, ck_model = tiny_model(), tiny_model()
    _, ref_bw = _dtype_probe(ref_model)
    _, ck_bw = _dtype_probe(ck_model)
    ref = train(ref_model, ToySource(4), cfg(steps=4), tmp_path / "ref")
    ck = train(ck_model, ToySource(4), cfg(steps=4, gradient_checkpointing=True), tmp_path / "ck")
    assert not any(ref_bw) and ck_bw.count(True) == ck_bw.count(False) == 4  # each forward recomputed in backward
    assert ck.losses == pytest.approx(ref.losses, rel=1e-6, abs=1e-7)
    a, b = state(ref_model), state(ck_model)
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in ck_model.modules()), "switched off after"


def test_gradient_checkpointing_gives_the_same_gradient():
    torch.manual_seed(0)
    batch = ToySource(4).get(0, 0)
    grads = []
    for on in (False, True):
        model = tiny_model()
        model.train()
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert all(torch.allclose(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-8) for n in grads[0])


def test_attention_kernel_is_switched_for_training_and_restored(tmp_path):
    model = tiny_model()
    assert model.config._attn_implementation == "sdpa"  # transformers' default, which langmoe keeps
    seen = []
    model.model.layers[0].self_attn.register_forward_hook(lambda m, a, o: seen.append(m.config._attn_implementation))
    train(model, ToySource(4), cfg(steps=1, attn_implementation="eager"), tmp_path)
    assert seen and set(seen) == {"eager"}
    assert model.config._attn_implementation == "sdpa"


def test_checkpointing_a_model_that_cannot_is_one_error(tmp_path):
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 2)

    with pytest.raises(LangmoeError, match="does not support gradient checkpointing"):
        train(Plain(), ToySource(4), cfg(steps=1, gradient_checkpointing=True), tmp_path)


def test_checkpointing_may_change_between_a_run_and_its_resume(tmp_path):
    import warnings

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), ToySource(4, fail_at=2), cfg(steps=4, save_every=1), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "changed settings" warning: checkpointing does not change the result
        res = train(tiny_model(), ToySource(4), cfg(steps=4, save_every=1, gradient_checkpointing=True), tmp_path)
    assert res.start_step == 2 and res.final_step == 4
