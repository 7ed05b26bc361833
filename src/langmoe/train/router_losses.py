"""Router losses as pure functions on tensors, plus `LossTerm`-compatible builders that read `router_outputs`.

Every function takes the router (or classifier) logits of one layer `[tokens, E]` or a sequence of layers and
returns a scalar: the mean over (non-ignored) tokens per layer, then the mean over layers. Labels -1 and -100 are
ignored. A loss with no token to score returns a zero that keeps the graph (so `backward` still works).

- router_classification_loss: CE of router logits against per-token expert/group ids (DMoE stage 1).
- load_balancing_loss: Switch `E * sum_e f_e * P_e`; f_e = share of the tokens' top-k assignments that go to
  expert e (counted over all k choices and divided by k, so sum_e f_e = 1 and a uniform router scores 1 for any
  k; transformers' `load_balancing_loss_func` equals k times this), P_e = mean router probability. With
  `global_batch=True` the f and P statistics are summed over data-parallel ranks (torch.distributed, if
  initialised) before the product; the gradient flows through this rank's P only.
- lpr_loss: old-language tokens -> expert 0 (CE on logits; new-language tokens excluded) (MoE-LPR).
- classifier_loss: CE of the old/new classifier (class 0 = old, 1 = new) (LayerMoE).
- z_loss: mean over tokens of logsumexp(logits)^2 (ST-MoE).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from langmoe.models.router_recorder import router_outputs

__all__ = [
    "router_classification_loss",
    "load_balancing_loss",
    "lpr_loss",
    "classifier_loss",
    "z_loss",
    "router_ce_term",
    "load_balance_term",
    "lpr_term",
    "classifier_term",
    "z_loss_term",
    "IGNORE",
]

IGNORE = (-1, -100)

Logits = torch.Tensor | Sequence[torch.Tensor]


def _layers(logits: Logits) -> list[torch.Tensor]:
    out = [logits] if isinstance(logits, torch.Tensor) else list(logits)
    if not out:
        raise ValueError("no router logits given (is the model upcycled, and did a forward run?)")
    return [t.reshape(-1, t.shape[-1]) for t in out]


def _valid(labels: torch.Tensor) -> torch.Tensor:
    valid = torch.ones_like(labels, dtype=torch.bool)
    for v in IGNORE:
        valid &= labels != v
    return valid


def _ce_mean(layers: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    labels = labels.reshape(-1)
    losses = []
    for t in layers:
        if t.shape[0] != labels.numel():
            raise ValueError(f"logits have {t.shape[0]} rows but labels have {labels.numel()} entries")
        lab = labels.to(t.device)
        valid = _valid(lab)
        if not bool(valid.any()):
            losses.append(t.sum() * 0.0)
            continue
        losses.append(F.cross_entropy(t[valid].float(), lab[valid]))
    return torch.stack(losses).mean()


def router_classification_loss(logits: Logits, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of router logits against per-token expert ids; mean over tokens, then over layers."""
    return _ce_mean(_layers(logits), labels)


def lpr_loss(logits: Logits, is_old: torch.Tensor) -> torch.Tensor:
    """Push old-language tokens (is_old True / 1) to expert 0: CE(logits, 0) over old tokens only."""
    is_old = is_old.reshape(-1)
    if is_old.dtype != torch.bool:
        is_old = (is_old == 1)  # 1 = old; 0 (new), -1, -100 excluded
    labels = torch.where(is_old, 0, -100)
    return _ce_mean(_layers(logits), labels)


def classifier_loss(classifier_logits: Logits, old_new: torch.Tensor) -> torch.Tensor:
    """CE of the old/new classifier logits `[tokens, 2]` against labels (0 = old, 1 = new; -1/-100 ignored)."""
    return _ce_mean(_layers(classifier_logits), old_new)


def z_loss(logits: Logits, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Router z-loss: mean over tokens of logsumexp(logits)^2, mean over layers (mask: tokens to count)."""
    layers = _layers(logits)
    losses = []
    for t in layers:
        z = torch.logsumexp(t.float(), dim=-1).pow(2)
        if mask is not None:
            m = mask.reshape(-1).to(t.device)
            z = z[m]
        losses.append(z.mean() if z.numel() else t.sum() * 0.0)
    return torch.stack(losses).mean()


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = t.clone()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def load_balancing_loss(
    logits: Logits,
    top_k: int = 1,
    topk_idx: torch.Tensor | Sequence[torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
    global_batch: bool = False,
) -> torch.Tensor:
    """Switch load balancing `E * sum_e f_e P_e`, mean over layers (see module doc for f with top-k).

    topk_idx: the experts actually used per layer (`RouterOutput.topk_idx`); default: top-k of the logits.
    mask: tokens to count (e.g. not padding). global_batch: all-reduce f and P statistics over ranks.
    """
    layers = _layers(logits)
    idx_list = [None] * len(layers) if topk_idx is None else (
        [topk_idx] if isinstance(topk_idx, torch.Tensor) else list(topk_idx)
    )
    losses = []
    for t, idx in zip(layers, idx_list, strict=True):
        E = t.shape[-1]
        probs = torch.softmax(t.float(), dim=-1)
        if idx is None:
            idx = probs.topk(top_k, dim=-1).indices
        idx = idx.reshape(t.shape[0], -1)
        k = idx.shape[1]
        if mask is not None:
            m = mask.reshape(-1).to(t.device)
            probs, idx = probs[m], idx[m]
        counts = torch.zeros(E, device=t.device, dtype=torch.float32)
        counts.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), device=t.device))
        prob_sum = probs.sum(dim=0)
        n_tok = torch.tensor(float(probs.shape[0]), device=t.device)
        if global_batch:
            stats = _all_reduce_sum(torch.cat([counts, prob_sum.detach(), n_tok.reshape(1)]))
            counts, n_tok = stats[:E], stats[-1]
            prob_sum = prob_sum + (stats[E : 2 * E] - prob_sum.detach())
        if float(n_tok) == 0:
            losses.append(t.sum() * 0.0)
            continue
        f = counts / (n_tok * k)
        P = prob_sum / n_tok
        losses.append(E * (f * P).sum())
    return torch.stack(losses).mean()


# ---------------------------------------------------------------------- LossTerm builders
TermFn = Callable[[torch.nn.Module, dict, object], torch.Tensor]


def _outputs(model):
    outs = router_outputs(model)
    if not outs:
        raise ValueError("router loss term: the model has no MoE layer output (upcycle it first)")
    return outs


def _padding_mask(batch: dict, key: str | None) -> torch.Tensor | None:
    if key is None or key not in batch:
        return None
    return batch[key].reshape(-1) != -100


def router_ce_term(label_key: str = "group_ids", ignore_padding: bool = True) -> TermFn:
    """Router CE against `batch[label_key]` (DMoE stage 1); padding (labels == -100) ignored."""

    def fn(model, batch, outputs):
        labels = batch[label_key].reshape(-1).clone()
        pad = _padding_mask(batch, "labels" if ignore_padding else None)
        if pad is not None:
            labels[~pad.to(labels.device)] = -100
        return router_classification_loss([o.logits for o in _outputs(model)], labels)

    return fn


def load_balance_term(global_batch: bool = False, ignore_padding: bool = True) -> TermFn:
    """Load balancing over the experts each layer actually used in this forward."""

    def fn(model, batch, outputs):
        outs = _outputs(model)
        mask = _padding_mask(batch, "labels" if ignore_padding else None)
        return load_balancing_loss(
            [o.logits for o in outs], topk_idx=[o.topk_idx for o in outs], mask=mask, global_batch=global_batch
        )

    return fn


def _old_labels(batch: dict, old_ids: Iterable[int], lang_key: str) -> torch.Tensor:
    lang = batch[lang_key].reshape(-1)
    old = torch.isin(lang, torch.as_tensor(sorted(set(old_ids)), device=lang.device))
    labels = torch.where(old, 0, 1)
    labels[lang < 0] = -100
    pad = _padding_mask(batch, "labels")
    if pad is not None:
        labels[~pad.to(labels.device)] = -100
    return labels


def lpr_term(old_ids: Iterable[int], lang_key: str = "lang_ids") -> TermFn:
    """MoE-LPR: tokens whose `batch[lang_key]` is in `old_ids` are pushed to expert 0."""
    old_ids = list(old_ids)

    def fn(model, batch, outputs):
        labels = _old_labels(batch, old_ids, lang_key)
        return lpr_loss([o.logits for o in _outputs(model)], labels == 0)

    return fn


def z_loss_term() -> TermFn:
    def fn(model, batch, outputs):
        return z_loss([o.logits for o in _outputs(model)])

    return fn


def classifier_term(old_ids: Iterable[int], lang_key: str = "lang_ids") -> TermFn:
    """LayerMoE classifier CE (class 0 = old language). Sequence-mode layers use each row's first label."""
    old_ids = list(old_ids)

    def fn(model, batch, outputs):
        labels = _old_labels(batch, old_ids, lang_key)
        B = batch[lang_key].shape[0]
        losses = []
        for o in _outputs(model):
            logits = o.override_logits_of("classifier")
            if logits is None:
                continue
            lab = labels
            if logits.shape[0] == B and labels.numel() != B:
                lab = labels.reshape(B, -1)[:, 0]
            losses.append(classifier_loss(logits, lab))
        if not losses:
            raise ValueError("classifier term: no MoE layer has an old/new classifier")
        return torch.stack(losses).mean()

    return fn
