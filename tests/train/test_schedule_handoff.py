"""One LR schedule and one AdamW state over two `train` calls (DMoE stage 1 -> stage 2): the two calls must
reproduce one uninterrupted call of the same total length, step for step (an independent computation)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.errors import LangmoeError
from langmoe.train.schedule import WarmupCosine
from langmoe.train.trainer import TrainConfig, train

torch.set_num_threads(1)
VOCAB, SEQ = 64, 16


def tiny(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                                        max_position_embeddings=SEQ))


class Counting:
    """Counting sequences, a pure function of (step + shift): `shift` lets a second call continue the data."""

    def __init__(self, shift: int = 0, fail_at: int | None = None):
        self.shift, self.fail_at = shift, fail_at

    def get(self, step, micro, rank=0, world=1):
        if self.fail_at is not None and step >= self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        g = torch.Generator().manual_seed(1009 * (step + self.shift) + micro)
        ids = (torch.randint(0, VOCAB, (4, 1), generator=g) + torch.arange(SEQ)) % VOCAB
        return {"input_ids": ids, "labels": ids.clone()}


def conf(**kw):
    base = dict(lr=3e-3, micro_batch_size=4, log_every=1, progress=False, warmup_ratio=0.25, min_lr_ratio=0.1)
    return {**base, **kw}


def lrs(out):
    import json

    return [json.loads(x)["lr"] for x in (out / "log.jsonl").read_text().splitlines()]


def test_offset_schedule_hand_values():
    f = WarmupCosine(total_steps=11, warmup_steps=2, min_lr_ratio=0.1, offset=6)
    assert f(0) == pytest.approx(0.1 + 0.9 * 0.5)  # global step 6 of 11 (see test_schedule_hand_values)
    assert f(4) == pytest.approx(0.1)
    with pytest.raises(LangmoeError):
        WarmupCosine(total_steps=11, warmup_steps=2, min_lr_ratio=0.1, offset=11)


def test_two_calls_with_handoff_equal_one_call(tmp_path):
    one = tiny()
    train(one, Counting(), conf(steps=10), tmp_path / "one")
    two = tiny()
    r1 = train(two, Counting(), conf(steps=3, schedule_total=10), tmp_path / "a", return_optimizer_state=True)
    assert r1.optimizer_state and all("exp_avg" in v for v in r1.optimizer_state.values())
    train(two, Counting(shift=3), conf(steps=7, schedule_offset=3, schedule_total=10), tmp_path / "b",
          init_optimizer_state=r1.optimizer_state)
    assert lrs(tmp_path / "a") + lrs(tmp_path / "b") == pytest.approx(lrs(tmp_path / "one"), rel=1e-12)
    for (k, a), (_, b) in zip(one.state_dict().items(), two.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_restart_differs_from_one_call(tmp_path):
    """The control: without the hand-off (fresh AdamW, new warmup) the result is not the one-call result."""
    one = tiny()
    train(one, Counting(), conf(steps=10), tmp_path / "one")
    two = tiny()
    train(two, Counting(), conf(steps=3), tmp_path / "a")
    train(two, Counting(shift=3), conf(steps=7), tmp_path / "b")
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(one.parameters(), two.parameters(), strict=True))
    assert diff > 1e-4


def test_handoff_skips_new_or_reshaped_parameters(tmp_path):
    m = tiny()
    r1 = train(m, Counting(), conf(steps=2, schedule_total=4), tmp_path / "a", return_optimizer_state=True)
    state = dict(r1.optimizer_state)
    name = "model.embed_tokens.weight"
    state[name] = {k: (v[:5] if k != "step" else v) for k, v in state[name].items()}  # wrong shape: fresh state
    state.pop("lm_head.weight", None)  # absent: fresh state
    state["not.a.parameter"] = state["model.norm.weight"]
    r2 = train(m, Counting(shift=2), conf(steps=1, schedule_offset=2, schedule_total=4), tmp_path / "b",
               init_optimizer_state=state, return_optimizer_state=True)
    # one step of fresh AdamW: step counter 1; carried parameters: 3
    assert int(r2.optimizer_state[name]["step"]) == 1
    assert int(r2.optimizer_state["model.norm.weight"]["step"]) == 3


def test_resume_after_kill_with_continued_schedule(tmp_path):
    """A stage-2-like call killed after 4 of 7 steps and rerun matches the uninterrupted call exactly."""
    ref, killed = tiny(), tiny()
    r1 = train(ref, Counting(), conf(steps=3, schedule_total=10), tmp_path / "a", return_optimizer_state=True)
    train(killed, Counting(), conf(steps=3, schedule_total=10), tmp_path / "a2")
    c2 = conf(steps=7, schedule_offset=3, schedule_total=10, save_every=2)
    train(ref, Counting(shift=3), c2, tmp_path / "ref", init_optimizer_state=r1.optimizer_state)
    with pytest.raises(KeyboardInterrupt):
        train(killed, Counting(shift=3, fail_at=5), c2, tmp_path / "k", init_optimizer_state=r1.optimizer_state)
    fresh = tiny(seed=1)  # a new process: the model comes back from the checkpoint
    fresh.load_state_dict(killed.state_dict())
    train(fresh, Counting(shift=3), c2, tmp_path / "k", init_optimizer_state=r1.optimizer_state)
    assert lrs(tmp_path / "k") == pytest.approx(lrs(tmp_path / "ref"), rel=1e-12)
    for a, b in zip(ref.parameters(), fresh.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_schedule_span_checked():
    with pytest.raises(ValueError, match="exceeds"):
        TrainConfig(steps=5, schedule_offset=3, schedule_total=6)
