"""Collect routing statistics: per language, MoE layer and expert, how often the model's own top-k picked it.

Hooks sit on the router modules (`langmoe.models.routing.iter_routing` records them), so the counts are the experts the model really
used, with its own top-k rule (group-limited for deepseek_v3, sparsemixer for phimoe, router bias for gpt_oss).
Text streams through `pack_corpus` one language at a time, up to a token budget; only real tokens count (the
padding of a last partial block does not). `soft=True` sums the routers' probabilities instead of top-k hits.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from langmoe.data.corpus import choose_languages
from langmoe.data.packing import pack_corpus
from langmoe.errors import LangmoeError
from langmoe.io import read_json, write_json
from langmoe.methods.routing.routers import RouterLayer, require_moe, route_scores
from langmoe.models.routing import iter_routing

__all__ = ["RoutingCounts", "collect_routing", "min_stable_tokens", "MAX_UNITS"]

MAX_UNITS = 64  # bootstrap units kept per language: consecutive blocks summed into at most this many groups


class RoutingCounts(BaseModel):
    """`counts[lang][moe_layer][expert]` plus what is needed to read it (layers with fewer experts: zero-padded)."""

    model_type: str = ""
    kind: Literal["topk", "soft"] = "topk"
    split: str = "test"
    langs: list[str]
    layers: list[int]  # decoder-layer index of each MoE layer
    num_experts: list[int]  # per MoE layer
    top_k: list[int]  # per MoE layer
    counts: list[list[list[float]]]
    tokens: dict[str, int]  # real tokens routed per language
    token_ids: dict[str, list[int]] = {}  # distinct non-special token ids per language (lexical overlap)
    warnings: list[str] = []
    # per language: counts of consecutive groups of blocks [units][layers][experts] (bootstrap resampling units)
    unit_counts: dict[str, list[list[list[float]]]] = {}
    equal_budget: bool = False  # every language was cut to the smallest language's token count

    def unit_arrays(self) -> list[np.ndarray] | None:
        """Per language [units, layers, experts] (None when the file has no units, e.g. an older one)."""
        if not self.unit_counts or any(x not in self.unit_counts for x in self.langs):
            return None
        return [np.asarray(self.unit_counts[x], dtype=np.float64) for x in self.langs]

    def array(self) -> np.ndarray:
        """counts as float64 [languages, layers, experts]."""
        return np.asarray(self.counts, dtype=np.float64)

    def save(self, path: str | Path) -> None:
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> RoutingCounts:
        try:
            return cls.model_validate(read_json(path))
        except (ValueError, TypeError) as e:
            raise LangmoeError(f"{path} is not a routing_counts.json written by `langmoe routing` ({e})") from None


def min_stable_tokens(num_experts: int, top_k: int, per_expert: int = 20) -> int:
    """Tokens for ~`per_expert` expected top-k hits per expert under uniform routing (fewer: warn)."""
    return math.ceil(per_expert * num_experts / max(top_k, 1))


def _by_layer(outs, layers: Sequence[RouterLayer]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """`{layer: (router logits, chosen experts)}` of one forward; every MoE layer must have run."""
    got = {o.layer: (o.logits, o.topk_idx) for o in outs}
    missing = [r.layer for r in layers if r.layer not in got]
    if missing:
        raise LangmoeError(f"MoE layers {missing} did not run in the forward: unsupported MoE layout")
    bad = [r.name for r in layers if got[r.layer][1] is None or got[r.layer][1].is_floating_point()]
    if bad:
        raise LangmoeError(f"router {bad[0]} does not return (logits, weights, indices): unsupported MoE router")
    return got


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def _pack_all(corpus, tokenizer, langs: Sequence[str], split: str, window: int, tokens_per_lang: int,
              equal_budget: bool) -> tuple[dict, int | None, list[str]]:
    """Blocks of every language and the common token budget (the smallest language's tokens) when `equal_budget`,
    with a warning when that is below half the ask."""
    packed = {}
    for lang in langs:
        try:
            packed[lang] = pack_corpus(corpus, tokenizer, [lang], split, window, max_tokens_per_lang=tokens_per_lang)
        except LangmoeError as e:
            raise LangmoeError(f"language {lang!r}: {e}") from None
    if not equal_budget or len(langs) < 2:
        return packed, None, []
    have = {lang: int(b.lengths.sum()) for lang, b in packed.items()}
    smallest = min(have, key=have.get)
    budget = have[smallest]
    notes = []
    if budget < tokens_per_lang / 2:
        notes.append(f"language {smallest!r} has only {budget} {split} tokens of the {tokens_per_lang} asked: every "
                     f"language is subsampled to {budget} tokens (equal budgets), less than half the ask")
    return packed, budget, notes


def _route_language(model, layers, blocks, batch_size: int, budget: int | None, soft: bool, E_max: int,
                    device) -> tuple[np.ndarray, int, set[int]]:
    """Per-block counts [blocks, layers, experts] of the first `budget` real tokens (all when None), the tokens
    counted and the distinct ids seen."""
    per_block = torch.zeros(len(blocks), len(layers), E_max, dtype=torch.float64, device=device)
    seen: set[int] = set()
    left = budget if budget is not None else int(blocks.lengths.sum())
    start = 0
    for batch, valid, outs in iter_routing(model, blocks, batch_size):
        B = batch["input_ids"].shape[0]
        valid = valid & (valid.long().cumsum(0) <= left)  # the budget cuts mid-block when it must
        left -= int(valid.sum())
        seen.update(batch["input_ids"].reshape(-1)[valid].unique().tolist())
        valid = valid.to(device)
        row = torch.arange(B, device=device).repeat_interleave(valid.numel() // B)[valid]
        got = _by_layer(outs, layers)
        for j, r in enumerate(layers):
            logits, idx = got[r.layer]
            if soft:
                p = route_scores(r, logits.reshape(-1, logits.shape[-1]))[valid].double()
                per_block[start:start + B, j, : r.num_experts].index_add_(0, row, p)
            else:
                sel = idx.reshape(valid.numel(), -1)[valid]
                flat = (row.unsqueeze(1) * r.num_experts + sel).reshape(-1)
                hits = torch.bincount(flat, minlength=B * r.num_experts).double().reshape(B, r.num_experts)
                per_block[start:start + B, j, : r.num_experts] += hits
        start += B
    used = (budget if budget is not None else int(blocks.lengths.sum())) - left
    return per_block.cpu().numpy(), used, seen


def _units(per_block: np.ndarray) -> list:
    """Consecutive blocks summed into at most MAX_UNITS groups (empty groups dropped)."""
    groups = [g.sum(0) for g in np.array_split(per_block, min(MAX_UNITS, max(len(per_block), 1))) if len(g)]
    return [g.tolist() for g in groups if g.sum() > 0]


def collect_routing(
    model: nn.Module,
    tokenizer,
    corpus,
    langs: Sequence[str],
    split: str = "test",
    tokens_per_lang: int = 20_000,
    soft: bool = False,
    window: int = 256,
    batch_size: int = 8,
    min_tokens: int | None = None,
    equal_budget: bool = True,
) -> RoutingCounts:
    """Route up to `tokens_per_lang` tokens of each language's `split` and count the experts used. With
    `equal_budget` (default) every language is cut to the smallest language's token count, so that entropy,
    JSD and specialisation compare like with like (a warning when that is below half the ask).

    A language with fewer tokens than `min_tokens` (default: `min_stable_tokens`) gets a warning with its count;
    one with none is an error (nothing is returned).
    """
    layers = require_moe(model, "routing statistics")
    langs = list(dict.fromkeys(langs))
    _check_inputs(model, tokenizer, langs, tokens_per_lang, window, batch_size)
    choose_languages(corpus, langs)
    E_max = max(r.num_experts for r in layers)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    device = _model_device(model)
    packed, budget, notes = _pack_all(corpus, tokenizer, langs, split, window, tokens_per_lang, equal_budget)
    for msg in notes:
        warnings.warn(msg, stacklevel=2)
    counts = np.zeros((len(langs), len(layers), E_max), dtype=np.float64)
    tokens: dict[str, int] = {}
    token_ids: dict[str, list[int]] = {}
    units: dict[str, list] = {}
    need = min_tokens if min_tokens is not None else max(min_stable_tokens(r.num_experts, r.top_k) for r in layers)
    for li, lang in enumerate(langs):
        per_block, n, seen = _route_language(model, layers, packed[lang], batch_size, budget, soft, E_max, device)
        counts[li] = per_block.sum(0)
        units[lang] = _units(per_block)
        tokens[lang] = n
        token_ids[lang] = [t for t in sorted(seen) if t not in special]  # read from the batches (blocks may be mapped)
        if n < need:
            msg = (f"language {lang!r} has only {n} {split} tokens (< {need} for stable statistics over "
                   f"{E_max} experts): its routing statistics are noisy")
            notes.append(msg)
            warnings.warn(msg, stacklevel=2)
    return RoutingCounts(
        model_type=str(getattr(getattr(model, "config", None), "model_type", "")),
        kind="soft" if soft else "topk", split=split, langs=langs, layers=[r.layer for r in layers],
        num_experts=[r.num_experts for r in layers], top_k=[r.top_k for r in layers], counts=counts.tolist(),
        tokens=tokens, token_ids=token_ids, warnings=notes, unit_counts=units, equal_budget=budget is not None,
    )


def _check_inputs(model, tokenizer, langs, tokens_per_lang: int, window: int, batch_size: int) -> None:
    if not langs:
        raise LangmoeError("no languages given: pass --langs")
    if tokens_per_lang < 1 or window < 2 or batch_size < 1:
        raise LangmoeError("tokens_per_lang and batch_size must be positive and window at least 2")
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos is not None and window > max_pos:
        raise LangmoeError(f"window {window} exceeds the model's max positions {max_pos}: use --window <= {max_pos}")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise LangmoeError(f"the tokenizer has {len(tokenizer)} tokens but the model only {vocab}: wrong tokenizer")
