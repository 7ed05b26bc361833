"""Per-layer cross-lingual similarity of FFN inputs (LayerMoE, docs/methods.md §3).

`S^i(a, b)` is the mean cosine over all token pairs (one token of language a, one of b) of the FFN inputs of layer
i (after attention and the post-attention norm: a forward pre-hook on the layer's MLP). The mean over all pairs
factorises: `mean_{s,t} <x_s/|x_s|, y_t/|y_t|> = <mean_s x_s/|x_s|, mean_t y_t/|y_t|>`, so one mean unit vector per
language and layer gives every pair's similarity exactly, in O(tokens) instead of O(tokens^2).
`S^i = (mean over new-old pairs + mean over distinct new-new pairs) / 2` (new-old only with one new language).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import torch

from langmoe.errors import LangmoeError


def mean_unit(x: torch.Tensor) -> torch.Tensor:
    """Mean of the L2-normalised rows of `x [N, D]`."""
    x = x.reshape(-1, x.shape[-1]).double()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).mean(0)


def mean_pair_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cosine over all pairs (row of x, row of y), via the mean unit vectors."""
    return float(mean_unit(x) @ mean_unit(y))


@torch.no_grad()
def ffn_input_mean_units(model, blocks, batch_size: int = 8) -> dict[str, torch.Tensor]:
    """`{lang: [layers, D]}`: each language's mean unit FFN-input vector per decoder layer (padding excluded).

    Works on dense and MoE models alike (the hook sits on whatever the layer's MLP is)."""
    from langmoe.models.adapters import get_adapter

    adapter = get_adapter(model)
    layers = adapter.layers(model)
    n_layers = len(layers)
    codes = blocks.index.codes
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, torch.Tensor] = {}
    current: dict[str, torch.Tensor] = {}

    def hook_for(i):
        def hook(_module, args):
            h = args[0].reshape(-1, args[0].shape[-1]).double()
            norm = h.norm(dim=-1, keepdim=True)
            u = h / norm.clamp_min(1e-300)
            # [tokens, langs], zero rows for padding and for exactly-zero inputs (no direction, e.g. a zero
            # padding-token embedding at a document start): those tokens are left out of the mean
            onehot = current["onehot"] * (norm > 0).to(h.dtype)
            s, c = onehot.T @ u, onehot.sum(0)  # [langs, D], [langs]
            sums[i] = sums[i] + s if i in sums else s
            counts[i] = counts[i] + c if i in counts else c

        return hook

    handles = [adapter.get_mlp(layers[i]).register_forward_pre_hook(hook_for(i)) for i in range(n_layers)]
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(blocks), batch_size):
            batch = blocks.batch(list(range(start, min(start + batch_size, len(blocks)))))
            valid = (batch["labels"] != -100).reshape(-1)
            valid[batch["input_ids"].reshape(-1) < 0] = False
            lang = batch["lang_ids"].reshape(-1)
            onehot = torch.zeros(lang.numel(), len(codes), dtype=torch.float64)
            onehot[torch.arange(lang.numel()), lang] = 1.0
            onehot[~valid] = 0.0
            current["onehot"] = onehot.to(device)
            model(input_ids=batch["input_ids"].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    empty = [codes[li] for li in range(len(codes)) if any(float(counts[i][li]) == 0 for i in range(n_layers))]
    if empty:
        raise LangmoeError(f"languages {', '.join(empty)} have no tokens to measure similarity on")
    return {c: torch.stack([(sums[i][li] / counts[i][li]).cpu() for i in range(n_layers)])
            for li, c in enumerate(codes)}


def layer_similarity(means: Mapping[str, torch.Tensor], new: Sequence[str], old: Sequence[str]) -> dict[str, object]:
    """`S^i` per layer plus the pairwise table `pairs[i]["a-b"]` from per-language mean unit vectors."""
    new, old = list(new), list(old)
    missing = [x for x in new + old if x not in means]
    if missing:
        raise LangmoeError(f"no FFN-input statistics for languages {missing}")
    n_layers = next(iter(means.values())).shape[0]
    S, pairs = [], []
    for i in range(n_layers):
        def sim(a, b, i=i):
            return float(means[a][i].double() @ means[b][i].double())

        no = [sim(a, b) for a in new for b in old]
        nn_ = [sim(a, b) for a, b in combinations(new, 2)]
        s = sum(no) / len(no)
        if nn_:
            s = (s + sum(nn_) / len(nn_)) / 2
        S.append(s)
        pairs.append({f"{a}-{b}": sim(a, b) for a in new for b in old} | {f"{a}-{b}": sim(a, b)
                                                                          for a, b in combinations(new, 2)})
    return {"S": S, "pairs": pairs}
