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
front of each router (a route override, `langmoe.models.overrides.gate`), trained with a cross-entropy on
new-language vs replayed old-language tokens, then calibrated on the old languages' held-out (valid) text so that at most
`max_intrusion` of their tokens go to the new expert. Every other old token keeps its old routing and a
bit-identical output, so the old languages' change is bounded by the intrusion. (At the demo's MoE layer no
router row both reaches the new language and stays out of old tokens' top-k: measured in docs/dmoe.md.)

`add_language(model, job, out_dir)` runs the whole §G for one language (`NewLanguageJob` holds its inputs) and reports the new language's perplexity before and after,
every old language's change and the share of old tokens whose top-k holds the new expert (`intrusion`), under
learned routing and under hard routing by language (each language to its group's expert, the new one to its
own: old outputs are then unchanged by construction); it is used by the pipeline stage and by
`langmoe add-language` (several languages, one after another).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langmoe.data.packing import pack_corpus
from langmoe.data.samplers import SideBySideSource, TemperatureSampler
from langmoe.errors import LangmoeError
from langmoe.eval.perplexity import evaluate_languages
from langmoe.methods.dmoe import build
from langmoe.methods.dmoe.build import is_expert_param, is_router_param
from langmoe.methods.dmoe.config import NewLanguageSettings
from langmoe.methods.dmoe.stages import stage1_terms
from langmoe.models.moe import moe_blocks
from langmoe.models.router_recorder import router_outputs
from langmoe.models.routers import freeze_expert_rows, router_weight
from langmoe.models.routing import iter_routing, routing
from langmoe.pipeline.summary import mean_metrics
from langmoe.train.faults import maybe_fail
from langmoe.train.gate_fit import (  # noqa: F401  (moved to train/gate_fit.py; re-exported)
    _gate_inputs,
    _gate_margins,
    _gates,
    _half,
    calibrate_gates,
    fit_gates,
    logistic_fit,
    spread,
)
from langmoe.train.routing_context import hard_routing
from langmoe.train.trainer import LossTerm, train


def route_all_to(expert: int):
    """A forward context sending every token to `expert` in every MoE layer."""

    def ctx(model, batch):
        return routing(model, route_labels=torch.full_like(batch["input_ids"], int(expert)))

    return ctx


def expert_perplexities(model, tokenizer, corpus, lang: str, num_experts: int, eval_kwargs: Mapping[str, Any]
                        ) -> list[float]:
    """Perplexity of `lang` with all tokens hard-routed to each expert in turn."""
    out = []
    for e in range(num_experts):
        s = evaluate_languages(model, tokenizer, corpus, [lang], forward_context=route_all_to(e), **eval_kwargs)
        out.append(float(s[lang].ppl))
    return out


@torch.no_grad()
def router_input_centroids(model, blocks, max_blocks: int = 64, batch_size: int = 8) -> dict[int, torch.Tensor]:
    """Mean input of each MoE layer's router (= the MoE block's input) over the non-padding tokens of `blocks`
    (learned routing), `{layer: [D]}`."""
    sums: dict[int, torch.Tensor] = {}
    inputs: dict[int, torch.Tensor] = {}
    count = 0

    def hook(mod, args):
        inputs[mod.layer_idx] = args[0].detach().reshape(-1, args[0].shape[-1]).double()

    handles = [b.register_forward_pre_hook(hook) for b in moe_blocks(model)]
    try:
        for _batch, valid, _outs in iter_routing(model, blocks, batch_size, range(min(len(blocks), max_blocks))):
            count += int(valid.sum())  # padding excluded
            for layer, x in inputs.items():
                sums[layer] = sums.get(layer, 0) + x[valid.to(x.device)].sum(0).cpu()
    finally:
        for h in handles:
            h.remove()
    return {k: (v / max(count, 1)).float() for k, v in sums.items()}


@torch.no_grad()
def init_new_row(model, new_expert: int, centroids: Mapping[int, torch.Tensor], margin: float) -> None:
    """New row -= `margin · c / |c|²` per layer (c = the old languages' router-input centroid): on the centroid
    its logit is `margin` below its source's instead of tied."""
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
    return is_expert_param(name) or is_router_param(name)


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
    rows = int(train_config["micro_batch_size"])
    replay_rows = int(replay_rows) if replay_blocks is not None else 0
    if not 0 <= replay_rows < rows:
        raise LangmoeError(f"replay rows must be in [0, micro_batch_size={rows}), got {replay_rows}")
    if gated:
        replay_rows = 0
    seed = train_config.get("seed", 0)
    source = TemperatureSampler(blocks, rows - replay_rows, tau=1.0, seed=seed,
                                group_of={c: int(new_expert) for c in blocks.index.codes})
    if replay_rows:
        old = TemperatureSampler(replay_blocks, replay_rows, tau=0.3, seed=seed + 1, group_of=dict(group_of or {}))
        source = SideBySideSource(source, old)
    source = maybe_fail(source, fail_at)
    cfg = {**dict(train_config), "weight_decay": 0.0}
    # the old experts' rows (and, with freeze_old_rows, their router rows) get zero gradient: with weight decay 0
    # AdamW leaves them exactly as they were
    handles = freeze_expert_rows(model, int(new_expert), router_rows=freeze_old_rows and not gated)
    try:
        if gated:
            return train(model, source, cfg, out_dir, loss_terms=[], forward_context=hard_routing,
                         trainable=lambda name, p=None: is_expert_param(name))
        terms = stage1_terms(alpha)
        if keep_out > 0 and replay_rows:
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
    hit = total = 0
    picked = spread(range(len(blocks)), max_blocks)  # across every language, not the first ones only
    for _batch, valid, outs in iter_routing(model, blocks, batch_size, picked):
        for out in outs:
            top = out.topk_idx.reshape(valid.numel(), -1).cpu()[valid]
            hit += int((top == new_expert).any(dim=1).sum())
            total += int(valid.sum())
    return hit / total if total else 0.0


@dataclass
class NewLanguageJob:
    """What `add_language` needs besides the model: the text, the language and its settings, and how to train and
    evaluate. `expert_of`: each old language's expert (its group); `base_model` (optional) scores the new language
    as the dense base did; `old_before`: the old languages' scores when already known (else measured)."""

    tokenizer: Any
    corpus: Any
    lang: str
    expert_of: Mapping[str, int]
    settings: NewLanguageSettings
    train_config: Mapping[str, Any]
    eval_kwargs: Mapping[str, Any]
    block_len: int
    max_train_tokens: int | None = None
    base_model: Any = None
    old_before: Mapping[str, Any] | None = None
    fail_at: int | None = None
    log: Callable[[str], None] = field(default=lambda _m: None)

    def scores(self, model, langs, **kw) -> dict[str, dict[str, Any]]:
        """Held-out scores of `langs` under this job's evaluation settings."""
        return {x: s.model_dump() for x, s in evaluate_languages(model, self.tokenizer, self.corpus, list(langs),
                                                                 **dict(self.eval_kwargs), **kw).items()}

    def pack(self, langs) -> Any:
        return pack_corpus(self.corpus, self.tokenizer, list(langs), "train", self.block_len,
                           max_tokens_per_lang=self.max_train_tokens)


def add_language(model, job: NewLanguageJob, out_dir: Path) -> dict[str, Any]:
    """§G for one language on `model` (in place): pick the source expert, add the new one (row init per
    `settings.init`), train it, and measure. Returns the result record (new language before/after and under the
    base model, old languages before/after, intrusion)."""
    before = _measure_before(model, job)
    old_blocks, new_blocks = job.pack(list(job.expert_of)), job.pack([job.lang])
    new_expert = _add_expert(model, job, before["source_expert"], old_blocks)
    intrusion_start = intrusion(model, old_blocks, new_expert)
    res, replay_rows = _train(model, job, new_expert, old_blocks, new_blocks, out_dir)
    gate_report = _fit_gate(model, job, new_expert, old_blocks, new_blocks) if job.settings.routing == "gate" else None
    out = {**before, **_measure_after(model, job, new_expert, before), "intrusion_start": intrusion_start,
           "intrusion_end": intrusion(model, old_blocks, new_expert), "gate": gate_report,
           "tokens_seen": int(res.tokens_seen),
           "replay_rows_per_micro_batch": 0 if gate_report is not None else replay_rows,  # the gated run mixes none
           "settings": job.settings.model_dump()}
    lang, b, a = job.lang, out["before"], out["after"]
    job.log(f"add-language {lang}: ppl {b['ppl']:.2f} -> {a['ppl']:.2f}"
            + (f" (base {out['base']['ppl']:.2f})" if out["base"] else "")
            + f"; old languages' mean ppl {out['old_mean_ppl_change']:+.2%}; with hard routing by language "
            f"{lang} {out['after_hard']['ppl']:.2f}, old {out['old_mean_ppl_change_hard']:+.2%}")
    return _ordered(out)


def _measure_before(model, job: NewLanguageJob) -> dict[str, Any]:
    """The new language's and the old languages' scores before anything changes, and the source expert."""
    old = list(job.expert_of)
    old_before = job.old_before if job.old_before is not None else job.scores(model, old)
    before_new = job.scores(model, [job.lang])[job.lang]
    base_new = job.scores(job.base_model, [job.lang])[job.lang] if job.base_model is not None else None
    old_before_hard = job.scores(model, old, forward_context=hard_routing, group_of=dict(job.expert_of))
    k = moe_blocks(model)[0].num_experts
    per_expert = expert_perplexities(model, job.tokenizer, job.corpus, job.lang, k, job.eval_kwargs)
    source = min(range(k), key=lambda i: per_expert[i])
    job.log(f"add-language {job.lang}: ppl {before_new['ppl']:.2f}; per expert {[round(p, 1) for p in per_expert]}; "
            f"copying expert {source}")
    return {"lang": job.lang, "per_expert_ppl": per_expert, "source_expert": source,
            "source_group": sorted(x for x, e in job.expert_of.items() if e == source), "base": base_new,
            "before": before_new, "old_before": {x: old_before[x] for x in old}, "_old_before_hard": old_before_hard}


def _add_expert(model, job: NewLanguageJob, source: int, old_blocks) -> int:
    """The new expert (a copy of `source`), behind a language gate or as a router row (initialised per
    `settings.init`)."""
    s = job.settings
    gated = s.routing == "gate"
    centroids = router_input_centroids(model, old_blocks) if s.init == "margin" and not gated else None
    new_expert = build.add_language_expert(model, source, s.gate_mode if gated else None)
    if centroids is not None:
        init_new_row(model, new_expert, centroids, s.margin)
    return new_expert


def _train(model, job: NewLanguageJob, new_expert: int, old_blocks, new_blocks, out_dir: Path):
    s = job.settings
    replay_rows = int(round(s.replay * int(job.train_config["micro_batch_size"])))
    res = train_new_language(model, new_blocks, job.lang, new_expert,
                             {**dict(job.train_config), "lr": s.lr, "steps": s.steps}, Path(out_dir),
                             alpha=s.alpha, fail_at=job.fail_at, replay_blocks=old_blocks if replay_rows else None,
                             group_of=dict(job.expert_of), replay_rows=replay_rows,
                             freeze_old_rows=s.freeze_old_rows, keep_out=s.keep_out, margin=s.margin,
                             gated=s.routing == "gate")
    return res, replay_rows


def _fit_gate(model, job: NewLanguageJob, new_expert: int, old_blocks, new_blocks) -> dict[int, Any]:
    """Fit and threshold the gates on training text (never test): each old language's intrusion <= the maximum."""
    first_new = _gates(model)[0][1].first_new
    class_of = {x: (0 if e < first_new else e - first_new + 1) for x, e in job.expert_of.items()}
    fit = fit_gates(model, [(old_blocks, class_of), (new_blocks, {job.lang: new_expert - first_new + 1})],
                    blocks_per_lang=64)
    old_codes = [x for x, e in job.expert_of.items() if e < first_new]
    report = calibrate_gates(model, old_blocks, new_blocks, job.settings.max_intrusion, langs=old_codes)
    for k, v in fit.items():
        report[k]["fit"] = v
    job.log(f"add-language {job.lang}: gate threshold: " + "; ".join(
        f"layer {k}: old tokens to the new expert <= {max(v['old_intrusion'].values()):.2%} per language, "
        f"{job.lang} tokens {v['new_recall']:.1%}" for k, v in report.items()))
    return report


def _measure_after(model, job: NewLanguageJob, new_expert: int, before: Mapping[str, Any]) -> dict[str, Any]:
    """Scores after training, learned routing and hard routing by language, and the old languages' changes."""
    old, lang = list(job.expert_of), job.lang
    after = job.scores(model, [lang, *old])
    old_before, old_after = before["old_before"], {x: after[x] for x in old}
    hard = job.scores(model, [lang, *old], forward_context=hard_routing,
                      group_of={**dict(job.expert_of), lang: new_expert})
    old_before_hard = before["_old_before_hard"]
    return {
        "new_expert": new_expert, "after": after[lang], "old_after": old_after,
        "old_ppl_change": {x: old_after[x]["ppl"] / old_before[x]["ppl"] - 1 for x in old},
        "old_mean_ppl_change": mean_metrics(old_after)["ppl"] / mean_metrics(dict(old_before))["ppl"] - 1,
        "after_hard": hard[lang],
        "old_ppl_change_hard": {x: hard[x]["ppl"] / old_before_hard[x]["ppl"] - 1 for x in old},
        "old_mean_ppl_change_hard": mean_metrics({x: hard[x] for x in old})["ppl"]
        / mean_metrics(old_before_hard)["ppl"] - 1,
    }


_RECORD_ORDER = ("lang", "per_expert_ppl", "source_expert", "source_group", "new_expert", "base", "before", "after",
                 "old_before", "old_after", "old_ppl_change", "old_mean_ppl_change", "after_hard",
                 "old_ppl_change_hard", "old_mean_ppl_change_hard", "intrusion_start", "intrusion_end", "gate",
                 "tokens_seen", "replay_rows_per_micro_batch", "settings")


def _ordered(out: Mapping[str, Any]) -> dict[str, Any]:
    """The record in its documented field order (new_language.json reads top-down)."""
    return {k: out[k] for k in _RECORD_ORDER}
