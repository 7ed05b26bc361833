"""Adding a new language to a trained DMoE (docs/methods.md §1 G).

1. Score the new language with hard routing of every token to expert e, for each existing expert e.
2. Copy the expert with the lowest perplexity (and its router row) into a new expert in every MoE layer.
3. Train with every new-language token hard-routed to the new expert and the router classification loss
   pulling the router towards it; only experts and routers are trainable (attention, embeddings, norms and dense
   FFNs are frozen), weight decay 0, and the old experts' gradient rows are masked to zero, so they stay exact.

Old languages can still change through the routers. A copied router row ties with its source, so every token
whose top-k held the source expert now also reaches the new expert (measured on the demo: old languages +24%
perplexity). Three additions to the paper's recipe keep old languages where they were:

- `init: margin` (default): the new row is the source row minus `v`, where `v` is the least-norm vector that
  lowers the new row's logit on every old layer input's centroid by `margin` (`v = margin · c / |c|²`), so at the
  start old tokens prefer their own experts (`init: copy` = the paper);
- `freeze_old_rows` (default): the old experts' router rows get zero gradient, so an old token's routing changes
  only if the new expert enters its top-k (with top-k renormalised softmax, the weights of the other experts in
  the top-k do not depend on logits outside it): its output is then bit-identical;
- `replay` (default 0.25): that share of each micro-batch is old-language text hard-routed to its group's
  expert; the router CE on it pushes the new row down on old tokens;
- `keep_out` (default 1.0): on those replayed old tokens, `relu(l_new − l_(k) + margin)` keeps the new row
  `margin` below each old token's k-th logit, i.e. out of its top-k (the router CE alone does not: measured on
  the demo, 100 steps let the new expert into 80% of old tokens' top-2, +79% old-language ppl).

With `routing: gate` (default) none of that is needed: the new expert is reached through a `LanguageGate` in
front of each router (see `langmoe.models.moe.LanguageGate`), trained with a cross-entropy on new-language vs
replayed old-language tokens, then calibrated on the old languages' held-out (valid) text so that at most
`max_intrusion` of their tokens go to the new expert. Every other old token keeps its old routing and a
bit-identical output, so the old languages' change is bounded by the intrusion. (At the demo's MoE layer no
router row both reaches the new language and stays out of old tokens' top-k: measured in the gate's docstring.)

`add_language` runs the whole §G for one language and reports the new language's perplexity before and after,
every old language's change and the share of old tokens whose top-k holds the new expert (`intrusion`), under
learned routing and under hard routing by language (each language to its group's expert, the new one to its
own: old outputs are then unchanged by construction); it is used by the pipeline stage and by
`langmoe add-language` (several languages, one after another).
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


def router_weight(block) -> torch.nn.Parameter:
    """The router weight `[E, D]` of one MoE block: the one place that knows where the MoE core keeps it."""
    for attr in ("router", "gate"):
        mod = getattr(block, attr, None)
        w = getattr(mod, "weight", None)
        if isinstance(w, torch.nn.Parameter) and w.dim() == 2 and w.shape[0] == block.num_experts:
            return w
    from langmoe.errors import LangmoeError

    raise LangmoeError(f"cannot find the router weight of MoE layer {block.layer_idx}")


@torch.no_grad()
def router_input_centroids(model, blocks, max_blocks: int = 64, batch_size: int = 8) -> dict[int, torch.Tensor]:
    """Mean input of each MoE layer's router (= the MoE block's input) over the non-padding tokens of `blocks`
    (learned routing), `{layer: [D]}`."""
    from langmoe.models.moe import moe_blocks

    sums: dict[int, torch.Tensor] = {}
    count = 0
    mask_box: list[torch.Tensor] = []

    def hook(mod, args):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
        m = mask_box[0].to(x.device)
        sums[mod.layer_idx] = sums.get(mod.layer_idx, 0) + x[m].sum(0).cpu()

    was = model.training
    model.eval()
    handles = [b.register_forward_pre_hook(hook) for b in moe_blocks(model)]
    device = next(model.parameters()).device
    try:
        n = min(len(blocks), max_blocks)
        for start in range(0, n, batch_size):
            batch = blocks.batch(list(range(start, min(start + batch_size, n))))
            mask_box[:] = [(batch["labels"] != -100).reshape(-1)]  # padding excluded
            count += int(mask_box[0].sum())
            model(input_ids=batch["input_ids"].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {k: (v / max(count, 1)).float() for k, v in sums.items()}


@torch.no_grad()
def init_new_row(model, new_expert: int, centroids: Mapping[int, torch.Tensor], margin: float) -> None:
    """New row -= `margin · c / |c|²` per layer (c = the old languages' router-input centroid): on the centroid
    its logit is `margin` below its source's instead of tied."""
    from langmoe.models.moe import moe_blocks

    for b in moe_blocks(model):
        c = centroids[b.layer_idx].double()
        w = router_weight(b)
        v = margin * c / c.pow(2).sum().clamp_min(1e-12)
        w[new_expert] -= v.to(w.dtype).to(w.device)


def keep_out_term(new_expert: int, top_k: int, margin: float):
    """Loss on old-language tokens (group id < `new_expert`): `relu(l_new − l_(k) + margin)`, l_(k) = the k-th
    largest old-expert logit, mean over tokens, then MoE layers. Zero exactly when the new expert stays `margin`
    below every old token's top-k, the condition under which old outputs do not change (module docstring)."""

    def fn(model, batch, outputs) -> torch.Tensor:
        from langmoe.models.moe import router_outputs

        g = batch["group_ids"].reshape(-1)
        valid = (batch["labels"].reshape(-1) != -100) & (g >= 0) & (g < new_expert)
        losses = []
        for o in router_outputs(model):
            lg = o.logits.reshape(-1, o.logits.shape[-1])
            m = valid.to(lg.device)
            if not bool(m.any()):
                losses.append(lg.sum() * 0.0)
                continue
            kth = lg[m, :new_expert].topk(min(top_k, new_expert), dim=-1).values[:, -1]
            losses.append(torch.relu(lg[m, new_expert] - kth + margin).mean())
        return torch.stack(losses).mean()

    return fn


def is_expert_or_router(name: str, param=None) -> bool:
    """The `trainable` selector of new-language training: expert weights and router weights only."""
    from langmoe.methods.dmoe.build import is_expert_param, is_router_param

    return is_expert_param(name) or is_router_param(name)


def spread(indices, n: int) -> list[int]:
    """At most `n` of `indices`, evenly spaced (blocks are stored language by language: a prefix would see only
    the first languages)."""
    idx = list(indices)
    if len(idx) <= n:
        return idx
    return [idx[round(i * (len(idx) - 1) / (n - 1))] for i in range(n)] if n > 1 else idx[:1]


def _forward_batches(model, blocks, indices, batch_size: int = 8):
    """Eval-mode forwards of `blocks[indices]`, `batch_size` blocks at a time; yields each batch's mask of real
    (non-padding) tokens, flattened, after its forward (hooks and recorders hold the rest)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    indices = list(indices)
    try:
        for start in range(0, len(indices), batch_size):
            batch = blocks.batch(indices[start:start + batch_size])
            model(input_ids=batch["input_ids"].to(device))
            yield (batch["labels"] != -100).reshape(-1)
    finally:
        model.train(was)


@torch.no_grad()
def _gate_inputs(model, blocks, layer: int, indices, batch_size: int = 8) -> torch.Tensor:
    """`[tokens, D]` gate features (`LanguageGate.features`) of MoE layer `layer` on `blocks[indices]`, learned
    routing (earlier layers' gates as they are), padding left out."""
    from langmoe.models.moe import moe_blocks

    block = next(b for b in moe_blocks(model) if b.layer_idx == layer)
    box: list[torch.Tensor] = []
    handle = block.register_forward_pre_hook(lambda mod, args: box.append(block.router.gate.features(args[0])))
    out = []
    try:
        for valid in _forward_batches(model, blocks, indices, batch_size):
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
    from langmoe.models.moe import moe_blocks

    report: dict[int, dict[str, float]] = {}
    for b in moe_blocks(model):
        gate = b.router.gate
        if gate is None:
            continue
        xs, ys = [], []
        for blocks, class_of in sources:
            for i, code in enumerate(blocks.index.codes):
                if code in class_of:
                    x = _gate_inputs(model, blocks, b.layer_idx, _half(blocks.indices_of(i), blocks_per_lang, 0))
                    xs.append(x)
                    ys.append(torch.full((x.shape[0],), int(class_of[code]), dtype=torch.long))
        x, y = torch.cat(xs).double(), torch.cat(ys)
        C = gate.weight.shape[0]
        counts = torch.bincount(y, minlength=C)
        if bool((counts == 0).any()):
            from langmoe.errors import LangmoeError

            raise LangmoeError(f"gate of layer {b.layer_idx}: no text for classes {(counts == 0).nonzero().flatten().tolist()}")
        weight, bias, loss = logistic_fit(x, y, C, l2, iters)
        with torch.no_grad():
            gate.weight.copy_(weight.to(gate.weight.dtype))
            gate.bias.copy_(bias.to(gate.bias.dtype))
        acc = float(((x @ weight.T + bias).argmax(-1) == y).double().mean())
        report[b.layer_idx] = {"loss": loss, "train_accuracy": acc, "tokens": int(y.numel())}
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
    from langmoe.models.moe import router_outputs

    out = []
    for valid in _forward_batches(model, blocks, indices, batch_size):
        for o in router_outputs(model):
            if o.layer == layer:
                gl = o.gate_logits.float().cpu()[valid]
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
    from langmoe.models.moe import moe_blocks

    codes = list(old_blocks.index.codes)
    wanted = set(codes if langs is None else langs)
    report: dict[int, dict[str, Any]] = {}
    for b in moe_blocks(model):
        gate = b.router.gate
        if gate is None:
            continue
        old = {c: _gate_margins(model, old_blocks, b.layer_idx, _half(old_blocks.indices_of(i), blocks_per_lang, 1))
               for i, c in enumerate(codes) if c in wanted}
        old = {c: m for c, m in old.items() if m.numel()}
        if not old:
            from langmoe.errors import LangmoeError

            raise LangmoeError("gate calibration: the old languages have no text to calibrate on")
        shift = max(float(torch.quantile(m.double(), 1.0 - max_intrusion, interpolation="higher")) for m in old.values())
        new = _gate_margins(model, new_blocks, b.layer_idx, _half(range(len(new_blocks)), blocks_per_lang, 1))
        gate.bias[0] += shift
        report[b.layer_idx] = {
            "shift": shift,
            "old_intrusion": {c: float((m > shift).float().mean()) for c, m in old.items()},
            "new_recall": float((new > shift).float().mean()) if new.numel() else float("nan"),
        }
    return report


class MixedSource:
    """Rows of two batch sources side by side (both pure functions of the step, so resume stays exact)."""

    def __init__(self, *sources):
        self.sources = [x for x in sources if x is not None]

    def get(self, step: int, micro: int, rank: int = 0, world: int = 1):
        parts = [x.get(step, micro, rank, world) for x in self.sources]
        return {k: torch.cat([p[k] for p in parts]) for k in ("input_ids", "labels", "group_ids")}


def _freeze_old_experts(model, num_old: int, router_rows: bool = False) -> list:
    """Gradient hooks zeroing the rows of experts < num_old in every fused expert tensor (and, with `router_rows`,
    in every router weight): exact, since with zero gradients and no weight decay AdamW leaves them untouched."""
    from langmoe.methods.dmoe.build import is_expert_param
    from langmoe.models.moe import moe_blocks

    params = [p for name, p in model.named_parameters() if is_expert_param(name)]
    if router_rows:
        params += [router_weight(b) for b in moe_blocks(model)]
    handles = []
    for p in params:
        mask = torch.ones(p.shape[0], *([1] * (p.dim() - 1)), dtype=p.dtype)
        mask[:num_old] = 0
        handles.append(p.register_hook(lambda g, m=mask: g * m.to(g.device, g.dtype)))
    return handles


def train_new_language(model, blocks, lang: str, new_expert: int, train_config: Mapping[str, Any], out_dir: Path,
                       alpha: float = 1.28, fail_at: int | None = None, replay_blocks=None,
                       group_of: Mapping[str, int] | None = None, replay_rows: int = 0,
                       freeze_old_rows: bool = False, keep_out: float = 0.0, margin: float = 1.0,
                       gated: bool = False):
    """Hard-route `lang` to `new_expert`, loss `L_CLM + alpha · L_RC`, experts + routers trainable. Resumes.

    With `replay_blocks` (old languages) and `replay_rows` > 0, that many rows of every micro-batch are old-language
    text hard-routed to its group's expert (`group_of`), so the router CE also teaches the routers to keep old
    tokens on their experts; the old experts' gradients are masked to zero, so only the new expert and the routers
    change. `freeze_old_rows` also masks the old experts' router rows (only the new row learns); `keep_out` > 0
    adds `keep_out · keep_out_term(new_expert, top_k, margin)` on the replayed old tokens. `gated` (the routers
    hold language gates, fitted afterwards by `fit_gates`): the loss is `L_CLM` alone and only the new expert
    trains (replayed old text would train nothing, so none is mixed in).
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
    if gated:
        replay_rows = 0
    seed = train_config.get("seed", 0)
    source = TemperatureSampler(blocks, rows - replay_rows, tau=1.0, seed=seed,
                                group_of={c: int(new_expert) for c in blocks.index.codes})
    if replay_rows:
        old = TemperatureSampler(replay_blocks, replay_rows, tau=0.3, seed=seed + 1, group_of=dict(group_of or {}))
        source = MixedSource(source, old)
    source = maybe_fail(source, fail_at)
    cfg = {**dict(train_config), "weight_decay": 0.0}
    handles = _freeze_old_experts(model, int(new_expert), router_rows=freeze_old_rows and not gated)
    try:
        if gated:
            from langmoe.methods.dmoe.build import is_expert_param

            return train(model, source, cfg, out_dir, loss_terms=[], forward_context=hard_routing,
                         trainable=lambda name, p=None: is_expert_param(name))
        terms = stage1_terms(alpha)
        if keep_out > 0 and replay_rows:
            from langmoe.models.moe import moe_blocks
            from langmoe.train.trainer import LossTerm

            top_k = moe_blocks(model)[0].top_k
            terms.append(LossTerm("keep_out", keep_out, keep_out_term(int(new_expert), top_k, margin)))
        return train(model, source, cfg, out_dir, loss_terms=terms, forward_context=hard_routing,
                     trainable=is_expert_or_router)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def intrusion(model, blocks, new_expert: int, batch_size: int = 8, max_blocks: int = 64) -> float:
    """Share of (token, MoE layer) pairs of `blocks` (old languages) whose learned top-k holds `new_expert`:
    only those can change an old language's output (see the module docstring)."""
    from langmoe.models.moe import router_outputs

    hit = total = 0
    picked = spread(range(len(blocks)), max_blocks)  # across every language, not the first ones only
    for valid in _forward_batches(model, blocks, picked, batch_size):
        for out in router_outputs(model):
            top = out.topk_idx.reshape(valid.numel(), -1).cpu()[valid]
            hit += int((top == new_expert).any(dim=1).sum())
            total += int(valid.sum())
    return hit / total if total else 0.0


def add_language(model, tokenizer, corpus, lang: str, expert_of: Mapping[str, int], settings, train_config:
                 Mapping[str, Any], out_dir: Path, eval_kwargs: Mapping[str, Any], block_len: int,
                 max_train_tokens: int | None = None, base_model=None, old_before: Mapping[str, Any] | None = None,
                 fail_at: int | None = None, log=None) -> dict[str, Any]:
    """§G for one language on `model` (in place): pick the source expert, add the new one (row init per
    `settings.init`), train it, and measure. `expert_of`: each old language's expert (its group). Returns the
    result record (new language before/after and under `base_model`, old languages before/after, intrusion)."""
    from langmoe.data.packing import pack_corpus
    from langmoe.eval.perplexity import evaluate_languages
    from langmoe.methods.dmoe import build
    from langmoe.models.moe import moe_blocks
    from langmoe.pipeline.summary import mean_metrics

    log = log or (lambda _m: None)
    old = list(expert_of)
    k = moe_blocks(model)[0].num_experts
    ekw = dict(eval_kwargs)
    if old_before is None:
        old_before = {x: s.model_dump() for x, s in evaluate_languages(model, tokenizer, corpus, old, **ekw).items()}
    before_new = evaluate_languages(model, tokenizer, corpus, [lang], **ekw)[lang].model_dump()
    base_new = (evaluate_languages(base_model, tokenizer, corpus, [lang], **ekw)[lang].model_dump()
                if base_model is not None else None)
    from langmoe.train.routing_context import hard_routing

    old_before_hard = {x: sc.model_dump() for x, sc in evaluate_languages(
        model, tokenizer, corpus, old, forward_context=hard_routing, group_of=dict(expert_of), **ekw).items()}
    per_expert = expert_perplexities(model, tokenizer, corpus, lang, k, ekw)
    source = min(range(k), key=lambda i: per_expert[i])
    log(f"add-language {lang}: ppl {before_new['ppl']:.2f}; per expert {[round(p, 1) for p in per_expert]}; "
        f"copying expert {source}")
    old_blocks = pack_corpus(corpus, tokenizer, old, "train", block_len, max_tokens_per_lang=max_train_tokens)
    new_blocks = pack_corpus(corpus, tokenizer, [lang], "train", block_len, max_tokens_per_lang=max_train_tokens)
    gated = settings.routing == "gate"
    centroids = router_input_centroids(model, old_blocks) if settings.init == "margin" and not gated else None
    new_expert = build.add_language_expert(model, source, settings.gate_mode if gated else None)
    if centroids is not None:
        init_new_row(model, new_expert, centroids, settings.margin)
    intrusion_start = intrusion(model, old_blocks, new_expert)
    replay_rows = int(round(settings.replay * int(train_config["micro_batch_size"])))
    res = train_new_language(model, new_blocks, lang, new_expert, {**dict(train_config), "lr": settings.lr,
                                                                    "steps": settings.steps},
                             Path(out_dir), alpha=settings.alpha, fail_at=fail_at,
                             replay_blocks=old_blocks if replay_rows else None, group_of=dict(expert_of),
                             replay_rows=replay_rows, freeze_old_rows=settings.freeze_old_rows,
                             keep_out=settings.keep_out, margin=settings.margin,
                             gated=gated)
    gate_report = None
    if gated:  # fitted and thresholded on training text (never test): each old language's intrusion <= max
        first_new = moe_blocks(model)[0].router.gate.first_new
        class_of = {x: (0 if e < first_new else e - first_new + 1) for x, e in expert_of.items()}
        fit = fit_gates(model, [(old_blocks, class_of), (new_blocks, {lang: new_expert - first_new + 1})],
                        blocks_per_lang=64)
        old_codes = [x for x, e in expert_of.items() if e < first_new]
        gate_report = calibrate_gates(model, old_blocks, new_blocks, settings.max_intrusion, langs=old_codes)
        for k, v in fit.items():
            gate_report[k]["fit"] = v
        log(f"add-language {lang}: gate threshold: " + "; ".join(
            f"layer {k}: old tokens to the new expert <= {max(v['old_intrusion'].values()):.2%} per language, "
            f"{lang} tokens {v['new_recall']:.1%}" for k, v in gate_report.items()))
    after = {x: s.model_dump() for x, s in evaluate_languages(model, tokenizer, corpus, [lang, *old], **ekw).items()}
    old_after = {x: after[x] for x in old}
    hard = {x: sc.model_dump() for x, sc in evaluate_languages(
        model, tokenizer, corpus, [lang, *old], forward_context=hard_routing,
        group_of={**dict(expert_of), lang: new_expert}, **ekw).items()}
    out = {
        "lang": lang,
        "per_expert_ppl": per_expert,
        "source_expert": source,
        "source_group": sorted(x for x, e in expert_of.items() if e == source),
        "new_expert": new_expert,
        "base": base_new,
        "before": before_new,
        "after": after[lang],
        "old_before": {x: old_before[x] for x in old},
        "old_after": old_after,
        "old_ppl_change": {x: old_after[x]["ppl"] / old_before[x]["ppl"] - 1 for x in old},
        "old_mean_ppl_change": mean_metrics(old_after)["ppl"] / mean_metrics(dict(old_before))["ppl"] - 1,
        "after_hard": hard[lang],
        "old_ppl_change_hard": {x: hard[x]["ppl"] / old_before_hard[x]["ppl"] - 1 for x in old},
        "old_mean_ppl_change_hard": mean_metrics({x: hard[x] for x in old})["ppl"]
        / mean_metrics(old_before_hard)["ppl"] - 1,
        "intrusion_start": intrusion_start,
        "intrusion_end": intrusion(model, old_blocks, new_expert),
        "gate": gate_report,
        "tokens_seen": int(res.tokens_seen),
        "replay_rows_per_micro_batch": 0 if gated else replay_rows,  # the gated training mixes none in
        "settings": settings.model_dump(),
    }
    log(f"add-language {lang}: ppl {before_new['ppl']:.2f} -> {after[lang]['ppl']:.2f}"
        + (f" (base {base_new['ppl']:.2f})" if base_new else "")
        + f"; old languages' mean ppl {out['old_mean_ppl_change']:+.2%}; with hard routing by language "
        f"{lang} {hard[lang]['ppl']:.2f}, old {out['old_mean_ppl_change_hard']:+.2%}")
    return out
