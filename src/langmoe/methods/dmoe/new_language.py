"""Adding a new language to a trained DMoE (METHODS.md §1 G).

1. Score the new language with hard routing of every token to expert e, for each existing expert e.
2. Copy the expert with the lowest perplexity (and its router row) into a new expert in every MoE layer.
3. Train with every new-language token hard-routed to the new expert and the router classification loss
   pulling the router towards it; only experts and routers are trainable (attention, embeddings, norms and dense
   FFNs are frozen), weight decay 0, and the old experts' gradient rows are masked to zero, so they stay exact.

Old languages can still change through the routers: trained on new-language tokens alone, the router CE drags
every token towards the new row (measured on the demo: old languages +24% perplexity). So by default a share of
each micro-batch is replayed old-language text, hard-routed to its group's expert, and the router CE on it keeps
old tokens on their experts (an addition to the paper's recipe; `replay: 0` turns it off). The pipeline reports
every old language's perplexity before and after.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def route_all_to(expert: int):
    """A forward context sending every token to `expert` in every MoE layer."""
    from langmoe.models.moe import routing

    def ctx(model, batch):
        return routing(model, route_labels=torch.full_like(batch["input_ids"], int(expert)))

    return ctx


def expert_perplexities(model, tokenizer, corpus, lang: str, num_experts: int, eval_kwargs: Mapping[str, Any]
                        ) -> list[float]:
    """Perplexity of `lang` with all tokens hard-routed to each expert in turn."""
    from langmoe.eval.perplexity import evaluate_languages

    out = []
    for e in range(num_experts):
        s = evaluate_languages(model, tokenizer, corpus, [lang], forward_context=route_all_to(e), **eval_kwargs)
        out.append(float(s[lang].ppl))
    return out


def is_expert_or_router(name: str, param=None) -> bool:
    """The `trainable` selector of new-language training: expert weights and router weights only."""
    from langmoe.methods.dmoe.build import is_expert_param, is_router_param

    return is_expert_param(name) or is_router_param(name)


class MixedSource:
    """Rows of two batch sources side by side (both pure functions of the step, so resume stays exact)."""

    def __init__(self, *sources):
        self.sources = [x for x in sources if x is not None]

    def get(self, step: int, micro: int, rank: int = 0, world: int = 1):
        parts = [x.get(step, micro, rank, world) for x in self.sources]
        return {k: torch.cat([p[k] for p in parts]) for k in ("input_ids", "labels", "group_ids")}


def _freeze_old_experts(model, num_old: int) -> list:
    """Gradient hooks zeroing the rows of experts < num_old in every fused expert tensor (exact: with zero
    gradients and no weight decay AdamW leaves them untouched)."""
    from langmoe.methods.dmoe.build import is_expert_param

    handles = []
    for name, p in model.named_parameters():
        if is_expert_param(name):
            mask = torch.ones(p.shape[0], *([1] * (p.dim() - 1)), dtype=p.dtype)
            mask[:num_old] = 0
            handles.append(p.register_hook(lambda g, m=mask: g * m.to(g.device, g.dtype)))
    return handles


def train_new_language(model, blocks, lang: str, new_expert: int, train_config: Mapping[str, Any], out_dir: Path,
                       alpha: float = 1.28, fail_at: int | None = None, replay_blocks=None,
                       group_of: Mapping[str, int] | None = None, replay_rows: int = 0):
    """Hard-route `lang` to `new_expert`, loss `L_CLM + alpha · L_RC`, experts + routers trainable. Resumes.

    With `replay_blocks` (old languages) and `replay_rows` > 0, that many rows of every micro-batch are old-language
    text hard-routed to its group's expert (`group_of`), so the router CE also teaches the routers to keep old
    tokens on their experts; the old experts' gradients are masked to zero, so only the new expert and the routers
    change.
    """
    from langmoe.data.samplers import TemperatureSampler
    from langmoe.methods.dmoe.stages import stage1_terms
    from langmoe.train.faults import maybe_fail
    from langmoe.train.routing_context import hard_routing
    from langmoe.train.trainer import train

    rows = int(train_config["micro_batch_size"])
    replay_rows = int(replay_rows) if replay_blocks is not None else 0
    if not 0 <= replay_rows < rows:
        from langmoe.errors import LangmoeError

        raise LangmoeError(f"replay rows must be in [0, micro_batch_size={rows}), got {replay_rows}")
    seed = train_config.get("seed", 0)
    source = TemperatureSampler(blocks, rows - replay_rows, tau=1.0, seed=seed,
                                group_of={c: int(new_expert) for c in blocks.index.codes})
    if replay_rows:
        old = TemperatureSampler(replay_blocks, replay_rows, tau=0.3, seed=seed + 1, group_of=dict(group_of or {}))
        source = MixedSource(source, old)
    source = maybe_fail(source, fail_at)
    cfg = {**dict(train_config), "weight_decay": 0.0}
    handles = _freeze_old_experts(model, int(new_expert))
    try:
        return train(model, source, cfg, out_dir, loss_terms=stage1_terms(alpha), forward_context=hard_routing,
                     trainable=is_expert_or_router)
    finally:
        for h in handles:
            h.remove()
