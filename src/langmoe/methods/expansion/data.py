"""The text of an expansion: new-language blocks (stage 1), a replay of the old languages of `replay_share` x the
stage-1 tokens, and both together (stage 2, `data.samplers.ReplayMixSource`). Packed through the run's cache."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langmoe.data.packing import PackedBlocks
from langmoe.data.samplers import ReplayMixSource
from langmoe.errors import LangmoeError
from langmoe.methods.expansion.config import replay_tokens, stage_tokens

__all__ = ["ExpansionData", "build_data", "merge_blocks", "replay_source", "stage2_old_share"]


@dataclass
class ExpansionData:
    """Packed train blocks: `new` (stage 1), `old` (the replay), `merged` (new langs first, then old: stage 2)."""

    new: Any
    old: Any | None
    merged: Any
    codes: list[str]
    expert0_ids: list[int]
    replay_tokens: int


def merge_blocks(a: PackedBlocks, b: PackedBlocks) -> PackedBlocks:
    """One PackedBlocks holding a's blocks then b's (b's language ids shifted past a's)."""
    return PackedBlocks.concat(a, b)


def _check_every_lang(blocks: PackedBlocks, split: str) -> None:
    empty = [c for c, n in blocks.counts().items() if n == 0]
    if empty:
        raise LangmoeError(f"languages {', '.join(empty)} have no {split} text in the corpus: give text for them "
                           "or drop them")


def build_data(run, cfg, expert0_langs: Sequence[str]) -> ExpansionData:
    """Pack the new languages' train text and a replay of the old ones of `replay_share × stage-1 tokens`."""
    new = run.blocks(cfg.new, "train", max_tokens_per_lang=cfg.max_train_tokens_per_lang)
    _check_every_lang(new, "train")
    replay = replay_tokens(cfg.replay_share, cfg.micro_batch_size * cfg.block_len, cfg.stage1.steps)
    old = None
    if replay > 0:
        per_lang = max(cfg.block_len, math.ceil(replay / len(cfg.old)))
        old = run.blocks(cfg.old, "train", max_tokens_per_lang=per_lang)
        _check_every_lang(old, "train")
    merged = merge_blocks(new, old) if old is not None else new
    codes = list(merged.index.codes)
    e0 = [codes.index(c) for c in expert0_langs if c in codes]
    return ExpansionData(new=new, old=old, merged=merged, codes=codes, expert0_ids=e0, replay_tokens=replay)


def stage2_old_share(cfg, data: ExpansionData) -> float:
    """The share of stage-2 rows that are old-language replay."""
    if cfg.stage2.steps == 0 or data.replay_tokens == 0:
        return 0.0
    return data.replay_tokens / stage_tokens(cfg.micro_batch_size * cfg.block_len, cfg.stage2.steps)


def replay_source(cfg, data: ExpansionData) -> ReplayMixSource:
    """Stage 2's micro-batches: new-language rows with the replay spread evenly among them."""
    return ReplayMixSource(data.new, data.old, data.merged, cfg.micro_batch_size, stage2_old_share(cfg, data),
                           tau=cfg.tau, seed=cfg.seed + 1)
