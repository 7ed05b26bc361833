"""Adding a new language to a trained DMoE (METHODS.md §1 G).

1. Score the new language with hard routing of every token to expert e, for each existing expert e.
2. Copy the expert with the lowest perplexity (and its router row) into a new expert in every MoE layer.
3. Train with every new-language token hard-routed to the new expert and the router classification loss
   pulling the router towards it; only experts and routers are trainable (attention, embeddings, norms and dense
   FFNs are frozen). Hard routing sends no token to the old experts, so they receive no gradient; weight decay
   is 0 here so that AdamW does not shrink them either (with fused expert tensors it would).

Old languages can still change through the router (its new row competes for their tokens): the pipeline reports
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


def train_new_language(model, blocks, lang: str, new_expert: int, train_config: Mapping[str, Any], out_dir: Path,
                       alpha: float = 1.28, fail_at: int | None = None):
    """Hard-route `lang` to `new_expert`, loss `L_CLM + alpha · L_RC`, experts + routers trainable. Resumes."""
    from langmoe.data.samplers import TemperatureSampler
    from langmoe.methods.dmoe.stages import FailAfter, hard_routing, stage1_terms
    from langmoe.train.trainer import train

    source = TemperatureSampler(blocks, train_config["micro_batch_size"], tau=1.0, seed=train_config.get("seed", 0),
                                group_of={c: int(new_expert) for c in blocks.index.codes})
    if fail_at is not None:
        source = FailAfter(source, fail_at)
    cfg = {**dict(train_config), "weight_decay": 0.0}
    return train(model, source, cfg, out_dir, loss_terms=stage1_terms(alpha), forward_context=hard_routing,
                 trainable=is_expert_or_router)
