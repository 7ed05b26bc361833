"""Fitting and calibrating language gates (route overrides that classify a token's language in front of a router):
shared by `add-language` (DMoE's new language, `LanguageGate`) and `--protect gate` of the expansion methods
(`ExpansionGate`, a subclass).

`fit_gates` fits each gate as an exact convex problem (class-balanced logistic regression, L-BFGS) on half of each
language's blocks, layer by layer; `calibrate_gates` shifts the old class's bias on the other half so that at most
`max_intrusion` of every old language's tokens leave the old class.
"""

from __future__ import annotations

from typing import Any

import torch

from langmoe.errors import LangmoeError
from langmoe.models.moe import moe_blocks
from langmoe.models.overrides.gate import LanguageGate
from langmoe.models.routing import iter_routing

__all__ = ["spread", "fit_gates", "logistic_fit", "calibrate_gates"]


def spread(indices, n: int) -> list[int]:
    """At most `n` of `indices`, evenly spaced (blocks are stored language by language: a prefix would see only
    the first languages)."""
    idx = list(indices)
    if len(idx) <= n:
        return idx
    return [idx[round(i * (len(idx) - 1) / (n - 1))] for i in range(n)] if n > 1 else idx[:1]


def _gates(model) -> list[tuple[int, LanguageGate]]:
    """`(layer, gate)` of every MoE layer whose router has a language gate."""
    return [(b.layer_idx, b.override) for b in moe_blocks(model) if isinstance(b.override, LanguageGate)]


@torch.no_grad()
def _gate_inputs(model, blocks, layer: int, indices, batch_size: int = 8) -> torch.Tensor:
    """`[tokens, D]` gate features (`LanguageGate.features`) of MoE layer `layer` on `blocks[indices]`, learned
    routing (earlier layers' gates as they are), padding left out."""
    block = next(b for b in moe_blocks(model) if b.layer_idx == layer)
    box: list[torch.Tensor] = []
    handle = block.register_forward_pre_hook(lambda mod, args: box.append(block.override.features(args[0])))
    out = []
    try:
        for _batch, valid, _outs in iter_routing(model, blocks, batch_size, indices):
            out.append(box.pop().float().cpu()[valid])
    finally:
        handle.remove()
    return torch.cat(out) if out else torch.zeros(0, block.hidden_size)


def fit_gates(model, sources, blocks_per_lang: int = 64, l2: float = 1e-4, iters: int = 200
              ) -> dict[int, dict[str, float]]:
    """Fit every language gate as a class-balanced, L2-regularised logistic regression (full batch, L-BFGS) on
    its features; layers in order, since a gate changes the next layer's input. `sources`: `(blocks, {lang:
    class})` pairs (class 0 = an old language, j = the j-th added expert). The features of a layer do not depend
    on its own gate, so this is an exact convex fit, not a few SGD steps on a loss shared with the LM."""
    report: dict[int, dict[str, float]] = {}
    for layer, gate in _gates(model):
        xs, ys = [], []
        for blocks, class_of in sources:
            for i, code in enumerate(blocks.index.codes):
                if code in class_of:
                    x = _gate_inputs(model, blocks, layer, _half(blocks.indices_of(i), blocks_per_lang, 0))
                    xs.append(x)
                    ys.append(torch.full((x.shape[0],), int(class_of[code]), dtype=torch.long))
        x, y = torch.cat(xs).double(), torch.cat(ys)
        C = gate.weight.shape[0]
        counts = torch.bincount(y, minlength=C)
        if bool((counts == 0).any()):
            raise LangmoeError(f"gate of layer {layer}: no text for classes {(counts == 0).nonzero().flatten().tolist()}")
        weight, bias, loss = logistic_fit(x, y, C, l2, iters)
        with torch.no_grad():
            gate.weight.copy_(weight.to(gate.weight.dtype))
            gate.bias.copy_(bias.to(gate.bias.dtype))
        acc = float(((x @ weight.T + bias).argmax(-1) == y).double().mean())
        report[layer] = {"loss": loss, "train_accuracy": acc, "tokens": int(y.numel())}
    return report


def logistic_fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-4, iters: int = 200
                 ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Class-balanced multinomial logistic regression `(weight [C, D], bias [C], final loss)`, full-batch L-BFGS
    in float64 on standardised features (folded back, so `x @ weight.T + bias` are the logits)."""
    x = x.double()
    counts = torch.bincount(y, minlength=num_classes).double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    class_w = counts.sum() / (num_classes * counts.clamp_min(1))
    w = torch.zeros(num_classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    c = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], max_iter=iters, line_search_fn="strong_wolfe")

    def objective():
        return torch.nn.functional.cross_entropy(z @ w.T + c, y, weight=class_w) + l2 * w.pow(2).sum()

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        loss = float(objective())
    w, c = w.detach(), c.detach()
    return w / sd, c - (w / sd) @ mu, loss


@torch.no_grad()
def _gate_margins(model, blocks, layer: int, indices, batch_size: int = 8) -> torch.Tensor:
    """Per token of `blocks[indices]`: the best added expert's gate logit minus the old class's (learned routing)."""
    gate_kind = next(b.override.kind for b in moe_blocks(model) if b.layer_idx == layer)
    out = []
    for _batch, valid, outs in iter_routing(model, blocks, batch_size, indices):
        for o in outs:
            if o.layer == layer:
                gl = o.override_logits_of(gate_kind).float().cpu()[valid]
                out.append(gl[:, 1:].max(dim=-1).values - gl[:, 0])
    return torch.cat(out) if out else torch.zeros(0)


def _half(indices, n: int, part: int) -> list[int]:
    """One half of a `2n`-block spread of `indices`: part 0 (even positions) fits the gate (`fit_gates`), part 1
    (odd positions) calibrates it (`calibrate_gates`); a language with a single block lends it to both."""
    picked = spread(indices, 2 * n)
    return picked[part::2] or picked


@torch.no_grad()
def calibrate_gates(model, old_blocks, new_blocks, max_intrusion: float, blocks_per_lang: int = 64,
                    langs=None) -> dict[int, dict[str, Any]]:
    """Shift each gate's old-class bias so that in *every* old language of `old_blocks` at most `max_intrusion` of
    the tokens go to an added expert (the largest of the per-language quantiles; one language's look-alike text
    must not hide behind the others' average); layers in order (a gate changes the next layer's input).
    `blocks_per_lang` blocks per language, spread over its text; `langs`: the old languages among `old_blocks`'
    (default all; languages added earlier are not "old" for the gate). Per layer: the shift, each old language's
    intrusion and the share of `new_blocks`' tokens (the new language) sent to an added expert, after the shift."""
    codes = list(old_blocks.index.codes)
    wanted = set(codes if langs is None else langs)
    report: dict[int, dict[str, Any]] = {}
    for layer, gate in _gates(model):
        old = {c: _gate_margins(model, old_blocks, layer, _half(old_blocks.indices_of(i), blocks_per_lang, 1))
               for i, c in enumerate(codes) if c in wanted}
        old = {c: m for c, m in old.items() if m.numel()}
        if not old:
            raise LangmoeError("gate calibration: the old languages have no text to calibrate on")
        shift = max(float(torch.quantile(m.double(), 1.0 - max_intrusion, interpolation="higher")) for m in old.values())
        new = _gate_margins(model, new_blocks, layer, _half(range(len(new_blocks)), blocks_per_lang, 1))
        gate.bias[0] += shift
        report[layer] = {
            "shift": shift,
            "old_intrusion": {c: float((m > shift).float().mean()) for c, m in old.items()},
            "new_recall": float((new > shift).float().mean()) if new.numel() else float("nan"),
        }
    return report
