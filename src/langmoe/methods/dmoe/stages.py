"""DMoE training (docs/methods.md §1 E) and evaluation (§1 F) of an upcycled model.

Stage 1: every micro-batch holds one group (`HomogeneousSampler(by="group")`, equal budget per group, languages
inside a group sampled ∝ size^tau); every MoE layer hard-routes each token to its group's expert, and the router
is trained to predict the group: `L = L_CLM + alpha · L_RC`. Stage 2: mixed micro-batches
(`TemperatureSampler`), learned top-k routing, `L = L_CLM + lambda · L_LB`. Both train all parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from langmoe.data.samplers import HomogeneousSampler
from langmoe.errors import LangmoeError
from langmoe.io import atomic_path
from langmoe.models.routing import iter_routing
from langmoe.train.faults import maybe_fail
from langmoe.train.mixed import train_mixed
from langmoe.train.router_losses import load_balance_term, router_ce_term
from langmoe.train.routing_context import hard_routing
from langmoe.train.trainer import LossTerm, train

# ---- loss terms -----------------------------------------------------------------------


def router_ce(model, batch, outputs) -> torch.Tensor:
    """L_RC: cross-entropy of each MoE layer's router logits against the token's group (padding ignored),
    mean over tokens, then over MoE layers."""

    return router_ce_term("group_ids")(model, batch, outputs)


def load_balance(model, batch, outputs) -> torch.Tensor:
    """L_LB: Switch-style `E · Σ_e f_e · P_e` over the experts each layer used, mean over MoE layers."""

    return load_balance_term()(model, batch, outputs)


def stage1_terms(alpha: float):

    return [LossTerm("router_ce", alpha, router_ce)]


def stage2_terms(lam: float):

    return [LossTerm("load_balance", lam, load_balance)]


# ---- training -----------------------------------------------------------------------------------------------


def train_stage1(model, blocks, group_of: Mapping[str, int], train_config: Mapping[str, Any], out_dir: Path,
                 alpha: float = 1.28, tau: float = 0.3, fail_at: int | None = None, **train_kwargs):
    """Group-homogeneous micro-batches, hard routing by group, `L_CLM + alpha · L_RC`. Resumes from checkpoints.
    `train_kwargs` go to `langmoe.train.trainer.train` (e.g. `return_optimizer_state` for the hand-off)."""

    source = HomogeneousSampler(blocks, train_config["micro_batch_size"], by="group", group_of=dict(group_of),
                                tau=tau, seed=train_config.get("seed", 0), equal_group_budget=True)
    return train(model, maybe_fail(source, fail_at), dict(train_config), out_dir, loss_terms=stage1_terms(alpha),
                 forward_context=hard_routing, **train_kwargs)


def train_stage2(model, blocks, group_of: Mapping[str, int], train_config: Mapping[str, Any], out_dir: Path,
                 lam: float = 0.02, tau: float = 0.3, fail_at: int | None = None, **train_kwargs):
    """Mixed micro-batches, learned top-k routing, `L_CLM + lambda · L_LB`. Resumes from checkpoints.
    `train_kwargs` go to the trainer (e.g. `init_optimizer_state`: stage 1's AdamW state, by parameter name)."""

    return train_mixed(model, blocks, train_config, out_dir, tau=tau, fail_at=fail_at, seed_offset=1,
                       group_of=group_of, loss_terms=stage2_terms(lam), **train_kwargs)


# ---- one schedule over both stages ---------------------------------------------------------------------------

OPTIMIZER_HANDOFF = "optimizer_final.pt"  # stage 1's AdamW state by parameter name, next to its training log


def schedule_configs(cfg1: dict[str, Any], cfg2: dict[str, Any], schedule: str) -> tuple[dict, dict]:
    """Trainer configs of the two stages. `continuous`: one warmup-cosine over `steps1 + steps2` (stage 2 starts
    at global step `steps1`); `restart`: each stage its own schedule from step 0 (unchanged configs)."""
    if schedule == "restart":
        return dict(cfg1), dict(cfg2)
    total = cfg1["steps"] + cfg2["steps"]
    return ({**cfg1, "schedule_offset": 0, "schedule_total": total},
            {**cfg2, "schedule_offset": cfg1["steps"], "schedule_total": total})


def save_optimizer_handoff(result, out_dir: Path) -> None:
    """Write the trainer's final AdamW state (`TrainResult.optimizer_state`) for the next stage."""

    with atomic_path(Path(out_dir) / OPTIMIZER_HANDOFF) as tmp:
        torch.save(result.optimizer_state or {}, tmp)


def load_optimizer_handoff(out_dir: Path) -> dict[str, dict[str, torch.Tensor]]:

    path = Path(out_dir) / OPTIMIZER_HANDOFF
    if not path.is_file():
        raise LangmoeError(f"{path} is missing (stage 1's optimizer state); delete the stage-1 folder to redo it")
    return torch.load(path, weights_only=True)


# ---- evaluation ---------------------------------------------------------------------------------------------


@torch.no_grad()
def routing_statistics(model, blocks, group_of: Mapping[str, int], batch_size: int = 8) -> dict[str, Any]:
    """Learned-routing statistics on packed held-out blocks (padding excluded).

    Returns `accuracy[layer]` = share of tokens whose top-1 expert is their group's expert, and
    `counts[lang][layer][expert]` = tokens whose top-1 expert is `expert` (the routing table of the report).
    """
    codes = blocks.index.codes
    correct: dict[int, int] = {}
    total: dict[int, int] = {}
    counts: dict[str, dict[int, list[int]]] = {c: {} for c in codes}
    for batch, valid, outs in iter_routing(model, blocks, batch_size, group_of=group_of):
        groups = batch["group_ids"].reshape(-1)[valid]
        langs = batch["lang_ids"].reshape(-1)[valid]
        for out in outs:
            layer = int(out.layer)
            top1 = out.topk_idx[:, 0].reshape(-1).cpu()[valid]
            n_exp = int(out.logits.shape[-1])
            correct[layer] = correct.get(layer, 0) + int((top1 == groups).sum())
            total[layer] = total.get(layer, 0) + int(valid.sum())
            for li in langs.unique().tolist():
                c = torch.bincount(top1[langs == li], minlength=n_exp).tolist()
                row = counts[codes[li]].setdefault(layer, [0] * n_exp)
                counts[codes[li]][layer] = [a + b for a, b in zip(row, c, strict=True)]
    accuracy = {str(k): correct[k] / total[k] for k in sorted(total) if total[k]}
    return {
        "accuracy": accuracy,
        "mean_accuracy": sum(accuracy.values()) / len(accuracy) if accuracy else None,
        "counts": {lang: {str(k): v for k, v in sorted(layers.items())} for lang, layers in counts.items()},
        "group_of": dict(group_of),
    }
