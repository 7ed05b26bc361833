"""Branch-Train-MiX (BTX): K branches trained on their groups, merged into one all-layer MoE, then the router trained.

Merge: every non-FFN weight (embeddings, attention, norms, LM head) is the mean of the branches' weights; in every
decoder layer the FFN becomes K experts, expert k = branch k's FFN, behind a fresh router (N(0, 0.02)). The
merged model is then trained like DMoE stage 2 (mixed data, learned top-k, load balancing), all parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from langmoe.errors import LangmoeError
from langmoe.models.adapters import get_adapter
from langmoe.models.moe import moe_blocks
from langmoe.models.upcycle import upcycle


@torch.no_grad()
def average_weights(models: Sequence[torch.nn.Module]) -> torch.nn.Module:
    """`models[0]` with every floating-point tensor replaced by the mean over `models` (in place)."""
    if not models:
        raise LangmoeError("BTX needs at least one branch")
    states = [m.state_dict() for m in models]
    keys = set(states[0])
    if any(set(s) != keys for s in states[1:]):
        raise LangmoeError("BTX branches must share one architecture (their weights differ in names)")
    avg = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            avg[k] = torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
        else:
            avg[k] = v
    models[0].load_state_dict(avg)
    return models[0]


@torch.no_grad()
def merge_branches(branches: Sequence[torch.nn.Module], top_k: int = 2, seed: int = 0) -> torch.nn.Module:
    """The BTX MoE: averaged shared weights, expert k of every layer = branch k's FFN, fresh routers."""

    branches = list(branches)
    k = len(branches)
    adapter = get_adapter(branches[0])
    ffns = [[adapter.extract(adapter.get_mlp(layer)) for layer in adapter.layers(b)] for b in branches]
    n_layers = len(ffns[0])
    merged = average_weights(branches)  # branches[0], now averaged; its FFNs are replaced just below
    model = upcycle(merged, list(range(n_layers)), k, min(top_k, k), router_init="normal", seed=seed)
    blocks = {b.layer_idx: b for b in moe_blocks(model)}
    for layer in range(n_layers):
        for e in range(k):
            blocks[layer].load_ffn(ffns[e][layer], experts=[e])
    return model
