"""Training on mixed multilingual micro-batches (languages sampled ∝ size^tau): dense continual pre-training, one
branch on a subset of languages, or an MoE with learned routing and load balancing. Every stage resumes from its
checkpoints (the batch source is a pure function of the step)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langmoe.data.samplers import TemperatureSampler
from langmoe.errors import LangmoeError
from langmoe.train.faults import maybe_fail
from langmoe.train.router_losses import load_balance_term
from langmoe.train.trainer import LossTerm, train


def train_mixed(model, blocks, train_config: Mapping[str, Any], out_dir: Path, tau: float = 0.3,
                fail_at: int | None = None, seed_offset: int = 0, group_of: Mapping[str, int] | None = None,
                loss_terms=None, forward_context=None, **train_kwargs):
    """Mixed micro-batches (`TemperatureSampler`, seed = config seed + `seed_offset`), CLM loss plus `loss_terms`,
    all trainable parameters. `group_of` adds per-token group ids to the batches (for routing losses);
    `train_kwargs` go to the trainer (e.g. `init_optimizer_state`)."""

    kw = {"group_of": dict(group_of)} if group_of is not None else {}
    source = TemperatureSampler(blocks, train_config["micro_batch_size"], tau=tau,
                                seed=train_config.get("seed", 0) + seed_offset, **kw)
    extra = dict(train_kwargs)
    if loss_terms:
        extra["loss_terms"] = list(loss_terms)
    if forward_context is not None:
        extra["forward_context"] = forward_context
    return train(model, maybe_fail(source, fail_at), dict(train_config), out_dir, **extra)


def load_balance_terms(lam: float):
    """`[LossTerm("load_balance", lam, ...)]`: Switch-style load balancing over the experts each layer used."""

    return [LossTerm("load_balance", lam, load_balance_term())]


def split_steps(total: int, k: int) -> list[int]:
    """`total` steps over `k` branches: `total // k` each, one more for the first `total % k`."""
    if k <= 0 or total < k:
        raise LangmoeError(f"a budget of {total} steps cannot train {k} branches: raise the steps")
    base, rest = divmod(total, k)
    return [base + (1 if i < rest else 0) for i in range(k)]


def subset_blocks(blocks, langs: Sequence[str]):
    """The blocks of `langs` only (same language index, so ids and group labels stay valid)."""
    out = blocks.only(langs)
    if len(out) == 0:
        raise LangmoeError(f"no training blocks for {', '.join(langs)}: add text for these languages")
    return out
