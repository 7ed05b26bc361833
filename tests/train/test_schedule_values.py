"""The learning rate the trainer actually used at each step (its log), against hand-computed warmup + cosine values."""

import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.train.schedule import WarmupCosine, warmup_cosine_scheduler
from langmoe.train.trainer import TrainConfig, train


class OneBatch:
    def get(self, step, micro, rank=0, world=1):
        ids = (torch.arange(2 * 8).reshape(2, 8) + step) % 20
        return {"input_ids": ids, "labels": ids.clone()}


def hand_multiplier(s, total, warmup, floor):
    if s < warmup:
        return (s + 1) / warmup
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup - 1)))


def test_warmup_cosine_hand_values():
    f = WarmupCosine(total_steps=10, warmup_steps=3, min_lr_ratio=0.2)
    expected = {0: 1 / 3, 1: 2 / 3, 2: 1.0, 3: 1.0, 6: 0.6, 9: 0.2,
                4: 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 6)), 8: 0.2 + 0.8 * 0.5 * (1 + math.cos(5 * math.pi / 6))}
    for s, v in expected.items():
        assert f(s) == pytest.approx(v, abs=1e-12), s
    g = WarmupCosine(total_steps=7, warmup_steps=0, min_lr_ratio=0.0)
    assert [g(s) for s in range(7)] == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(7)])
    assert g(3) == pytest.approx(0.5)


@pytest.mark.parametrize(("ratio", "warmup"), [(0.25, 2), (0.3, 2), (0.35, 3)])
def test_warmup_length_is_the_rounded_ratio(ratio, warmup):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine_scheduler(opt, total_steps=8, warmup_ratio=ratio, min_lr_ratio=0.1)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([hand_multiplier(s, 8, warmup, 0.1) for s in range(8)])


def test_trainer_logs_the_scheduled_lr_of_every_step(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8))
    cfg = TrainConfig(steps=10, lr=0.01, warmup_ratio=0.3, min_lr_ratio=0.2, micro_batch_size=2, log_every=1,
                      progress=False, save_every=0)
    train(model, OneBatch(), cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    hand = [0.01 / 3, 0.02 / 3, 0.01, 0.01, None, None, 0.006, None, None, 0.002]
    assert len(lrs) == 10
    for s, v in enumerate(hand):
        if v is not None:
            assert lrs[s] == pytest.approx(v, rel=1e-9), s
        assert lrs[s] == pytest.approx(0.01 * hand_multiplier(s, 10, 3, 0.2), rel=1e-9), s
