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

__all__ = ["RoutingCounts", "collect_routing", "min_stable_tokens"]


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
) -> RoutingCounts:
    """Route up to `tokens_per_lang` tokens of each language's `split` and count the experts used.

    A language with fewer tokens than `min_tokens` (default: `min_stable_tokens`) gets a warning with its count;
    one with none is an error (nothing is returned).
    """
    layers = require_moe(model, "routing statistics")
    langs = list(dict.fromkeys(langs))
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
    choose_languages(corpus, langs)
    E_max = max(r.num_experts for r in layers)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    device = _model_device(model)
    counts = np.zeros((len(langs), len(layers), E_max), dtype=np.float64)
    tokens: dict[str, int] = {}
    token_ids: dict[str, list[int]] = {}
    notes: list[str] = []
    for li, lang in enumerate(langs):
        try:
            blocks = pack_corpus(corpus, tokenizer, [lang], split, window, max_tokens_per_lang=tokens_per_lang)
        except LangmoeError as e:
            raise LangmoeError(f"language {lang!r}: {e}") from None
        acc = torch.zeros(len(layers), E_max, dtype=torch.float64, device=device)
        seen: set[int] = set()
        for batch, valid, outs in iter_routing(model, blocks, batch_size):
            seen.update(batch["input_ids"].reshape(-1)[valid].unique().tolist())
            valid = valid.to(device)
            got = _by_layer(outs, layers)
            for j, r in enumerate(layers):
                logits, idx = got[r.layer]
                if soft:
                    p = route_scores(r, logits.reshape(-1, logits.shape[-1]))[valid]
                    acc[j, : r.num_experts] += p.sum(0).double()
                else:
                    sel = idx.reshape(valid.numel(), -1)[valid].reshape(-1)
                    acc[j, : r.num_experts] += torch.bincount(sel, minlength=r.num_experts).double()
        counts[li] = acc.cpu().numpy()
        n = int(blocks.lengths.sum())
        tokens[lang] = n
        token_ids[lang] = [t for t in sorted(seen) if t not in special]  # read from the batches (blocks may be mapped)
        need = min_tokens if min_tokens is not None else max(min_stable_tokens(r.num_experts, r.top_k)
                                                             for r in layers)
        if n < need:
            msg = (f"language {lang!r} has only {n} {split} tokens (< {need} for stable statistics over "
                   f"{E_max} experts): its routing statistics are noisy")
            notes.append(msg)
            warnings.warn(msg, stacklevel=2)
    return RoutingCounts(
        model_type=str(getattr(getattr(model, "config", None), "model_type", "")),
        kind="soft" if soft else "topk",
        split=split,
        langs=langs,
        layers=[r.layer for r in layers],
        num_experts=[r.num_experts for r in layers],
        top_k=[r.top_k for r in layers],
        counts=counts.tolist(),
        tokens=tokens,
        token_ids=token_ids,
        warnings=notes,
    )
