"""The expansion's text: a replay of `replay_share` x the stage-1 tokens, spread evenly over stage 2's rows by a
pure function of the step; packed through the run's token store (a second packing reads it back)."""

from __future__ import annotations

import math

import pytest
import torch
from expansion_world import expansion_run

from langmoe.errors import LangmoeError
from langmoe.methods.expansion.config import stage_tokens
from langmoe.methods.expansion.data import build_data, replay_source, stage2_old_share


def test_replay_share_and_mix(tmp_path):
    run, cfg = expansion_run(tmp_path, replay_share=0.01, stage1={"steps": 400}, stage2={"steps": 10})
    data = build_data(run, cfg, cfg.old)
    per_step = cfg.micro_batch_size * cfg.block_len
    assert data.replay_tokens == round(0.01 * stage_tokens(per_step, 400))
    assert data.old.num_tokens() <= data.replay_tokens + cfg.block_len * len(cfg.old)
    share = stage2_old_share(cfg, data)
    assert share == data.replay_tokens / stage_tokens(per_step, 10)
    src = replay_source(cfg, data)
    old_ids = {data.codes.index(c) for c in cfg.old}
    n_old = 0
    for step in range(10):
        b = src.get(step, 0)
        is_old = [int(r[0]) in old_ids for r in b["lang_ids"]]
        n_old += sum(is_old)
    assert n_old == math.floor(10 * cfg.micro_batch_size * share)
    assert torch.equal(src.get(3, 0)["input_ids"], src.get(3, 0)["input_ids"])  # pure function of the step
    assert any(run.store.root.iterdir())  # packed through the run's token store
    again = build_data(run, cfg, cfg.old)
    assert torch.equal(again.merged.tokens, data.merged.tokens)


def test_a_replay_larger_than_stage2_is_refused_at_parse_time(tmp_path):
    from expansion_world import fast_config

    from langmoe.methods.expansion.config import parse_config
    from langmoe.methods.moe_lpr import MoELPRConfig

    with pytest.raises(LangmoeError, match="larger than stage 2"):
        parse_config(MoELPRConfig, fast_config(tmp_path, replay_share=0.9, stage1={"steps": 10}, stage2={"steps": 1}))
