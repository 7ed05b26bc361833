"""What an expansion reports: held-out perplexity Old / New, and per MoE layer how the old languages are routed
(share whose first choice is the frozen expert 0, the weight they give it, the classifier's accuracy); the old
languages scored three ways (as trained, top-1, hard-routed to expert 0: the last is the base's function exactly),
which splits forgetting into misrouting and residual weight; the evaluation stage `eval/<name>` that writes them;
the report's "Expansion to new languages" section."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from langmoe.eval.perplexity import evaluate_languages
from langmoe.io import read_json, write_json
from langmoe.methods.expansion.inputs import EXPANSION_FILE
from langmoe.models.moe import moe_blocks
from langmoe.models.routing import iter_routing, routing
from langmoe.pipeline.models import load_moe, moe_params
from langmoe.pipeline.stages import eval_stage

__all__ = ["routing_report", "old_new_means", "evaluate_expansion", "old_three_ways", "top1_routing", "WAYS"]

# how the old languages are scored: the routing as trained, its top-1 expert alone (weight 1), expert 0 alone
WAYS = ("trained", "top1", "expert0")


def _macro(values: Mapping[str, float], langs: Sequence[str]) -> float | None:
    got = [values[x] for x in langs if x in values]
    return float(np.mean(got)) if got else None


def old_new_means(ppl: Mapping[str, float], old: Sequence[str], new: Sequence[str],
                  bpb: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Per-language ppl (and bits per byte) and the Old / New means: macro over the languages that were scored,
    so every language counts once whatever its ppl's scale."""
    out = {"ppl": dict(ppl), "old_mean": _macro(ppl, old), "new_mean": _macro(ppl, new)}
    if bpb is not None:
        out.update(bpb=dict(bpb), old_bpb=_macro(bpb, old), new_bpb=_macro(bpb, new))
    return out


class _RoutingTally:
    """Per MoE layer: top-1-is-expert-0 counts per language, expert-0 weight of the expert-0 languages' tokens,
    and the classifier's hits (class 0 = an expert-0 language)."""

    def __init__(self, codes: Sequence[str], expert0_langs: Sequence[str]):
        self.codes, self.expert0_langs = list(codes), list(expert0_langs)
        self.e0 = torch.tensor([c in expert0_langs for c in codes])
        self.top1: dict[int, dict[str, list[int]]] = {}
        self.w0: dict[int, list[float]] = {}
        self.cls_ok: dict[int, list[int]] = {}

    def add(self, batch: Mapping[str, torch.Tensor], valid: torch.Tensor, o) -> None:
        lang = batch["lang_ids"].reshape(-1)
        is_e0 = self.e0[lang]
        L = int(o.layer)
        first = o.topk_idx[:, 0] == 0
        wt = torch.where(o.topk_idx == 0, o.topk_weight.float(), 0.0).sum(-1)
        per = self.top1.setdefault(L, {c: [0, 0] for c in self.codes})
        for li in lang[valid].unique().tolist():
            m = valid & (lang == li)
            per[self.codes[li]][0] += int(first[m].sum())
            per[self.codes[li]][1] += int(m.sum())
        acc = self.w0.setdefault(L, [0.0, 0.0])
        acc[0] += float(wt[valid & is_e0].sum())
        acc[1] += float((valid & is_e0).sum())
        logits = o.override_logits_of("classifier")
        if logits is not None:
            pred_old = logits.argmax(-1) == 0
            c = self.cls_ok.setdefault(L, [0, 0])
            if pred_old.numel() == valid.numel():
                c[0] += int((pred_old == is_e0)[valid].sum())
                c[1] += int(valid.sum())
            else:  # sequence mode: one decision per row
                row_e0 = is_e0.reshape(pred_old.shape[0], -1)[:, 0]
                c[0] += int((pred_old == row_e0).sum())
                c[1] += int(pred_old.numel())

    def layers(self) -> dict[str, Any]:
        out = {}
        for L in sorted(self.top1):
            shares = {c: (a / n if n else None) for c, (a, n) in self.top1[L].items()}
            olds = [shares[c] for c in self.expert0_langs if shares.get(c) is not None]
            ok = self.cls_ok.get(L)
            out[str(L)] = {
                "expert0_top1_share": shares,
                "old_to_expert0": float(np.mean(olds)) if olds else None,
                "old_expert0_weight": self.w0[L][0] / self.w0[L][1] if self.w0[L][1] else None,
                "classifier_accuracy": ok[0] / ok[1] if ok and ok[1] else None,
            }
        return out


@torch.no_grad()
def routing_report(model, blocks, expert0_langs: Sequence[str], batch_size: int = 8) -> dict[str, Any]:
    """On held-out `blocks`, per MoE layer: share of each language's tokens whose top-1 expert is expert 0, the
    mean over expert-0 languages (`old_to_expert0`), the mean combine weight they put on expert 0, and the old/new
    classifier accuracy (class 0 = an expert-0 language) where the layer has a classifier."""
    tally = _RoutingTally(blocks.index.codes, expert0_langs)
    for batch, valid, outs in iter_routing(model, blocks, batch_size):
        for o in outs:
            tally.add(batch, valid, o)
    return {"layers": tally.layers()}


@contextmanager
def top1_routing(model) -> Iterator[None]:
    """Every MoE router keeps only its first choice (weight 1 after renormalisation) inside the `with`."""
    routers = [b.router for b in moe_blocks(model)]
    before = [r.top_k for r in routers]
    try:
        for r in routers:
            r.top_k = 1
        yield
    finally:
        for r, k in zip(routers, before, strict=True):
            r.top_k = k


def _expert0_only(model, batch) -> Any:
    return routing(model, route_labels=torch.zeros_like(batch["input_ids"]))


def _way_scores(scores: Mapping[str, Any]) -> dict[str, Any]:
    per = {k: {"ppl": v.ppl, "bits_per_byte": v.bits_per_byte} for k, v in scores.items()}
    mean = {m: float(np.mean([x[m] for x in per.values()])) if per else None for m in ("ppl", "bits_per_byte")}
    return {"langs": per, "mean": mean}


def old_three_ways(run, model, old: Sequence[str], expert0_langs: Sequence[str],
                   trained: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The old languages' held-out ppl / bpb three ways: `trained` (the routing as learned: the scores already
    computed), `top1` (every layer's first choice alone) and `expert0` (expert-0 languages' tokens hard-routed to
    the frozen FFN: the input model's dense function exactly, so any gap to the base is a bug). Misrouting is
    `top1` vs `expert0`; the residual weight of the second expert is `trained` vs `top1`."""
    e = run.recipe.eval
    kw = dict(split=e.split, window=e.window, stride=e.stride, max_chars_per_lang=e.max_chars_per_lang,
              batch_size=e.batch_size, per_document=e.per_document, skip_empty=True, token_store=run.store)
    langs = [x for x in old if x in trained]
    e0 = [x for x in langs if x in expert0_langs]
    top1 = evaluate_languages(model, run.tokenizer, run.corpus, langs,
                              forward_context=lambda m, _b: top1_routing(m), **kw) if langs else {}
    zero = evaluate_languages(model, run.tokenizer, run.corpus, e0, forward_context=_expert0_only, **kw) if e0 else {}
    as_trained = {k: {"ppl": trained[k]["ppl"], "bits_per_byte": trained[k]["bits_per_byte"]} for k in langs}
    mean = {m: float(np.mean([x[m] for x in as_trained.values()])) if langs else None
            for m in ("ppl", "bits_per_byte")}
    return {"trained": {"langs": as_trained, "mean": mean}, "top1": _way_scores(top1), "expert0": _way_scores(zero)}


def evaluate_expansion(flow, stage: str, tokens: int) -> dict[str, Any]:
    """The cached evaluation `eval/<name>` of an expansion's last stage: scores on the run's languages, plus what
    the report shows per layer (experts, the plan's similarity, how old-language tokens are routed)."""
    run, cfg = flow.run, flow.cfg

    def fn():
        model = load_moe(run.model_dir(stage))
        model.eval()
        langs = run.recipe.languages
        rec = read_json(run.model_dir(stage) / EXPANSION_FILE)
        held_out = run.blocks(langs, run.recipe.eval.split)
        routing = routing_report(model, held_out, rec["expert0_langs"], run.recipe.eval.batch_size)
        extra = {"expansion": {
            "new": [x for x in cfg.new if x in langs], "old": [x for x in langs if x not in cfg.new],
            "experts_per_layer": rec["experts_per_layer"], "new_experts": rec["new_experts"],
            "new_experts_total": rec["new_experts_total"], "classifier_layers": rec["classifier_layers"],
            "similarity": (rec.get("similarity") or {}).get("S"), "routing": routing["layers"]}}
        result = run.evaluate(model, flow.name, moe_params(model), tokens, extra=extra)
        old = [x for x in langs if x not in cfg.new]
        result["expansion"]["old_ways"] = old_three_ways(run, model, old, rec["expert0_langs"], result["langs"])
        write_json(run.run_dir / "eval" / f"{flow.name}.json", result)
        return result

    # "old_ways": evaluations cached before the three-way scores existed are recomputed
    return eval_stage(run, f"eval/{flow.name}", {"old_ways": 1}, [stage], fn)


# ---- the report's section (a registry hook of both expansion methods) ----------------------------------------


def shows_expansion(page) -> bool:
    """The run evaluated an expansion system."""
    return any(isinstance(e.get("expansion"), Mapping) for e in page.evals.values())


def _mean(e: Mapping, langs: list[str]) -> float | None:
    vals = [e["langs"][x]["ppl"] for x in langs if x in e.get("langs", {})]
    return sum(vals) / len(vals) if vals else None


def expansion_section(page) -> None:
    """MoE-LPR / LayerMoE systems: Old/New means against the base, then per layer the experts, the plan's
    similarity S, the old-language share routed first to the frozen expert 0 and the classifier accuracy."""
    evals = page.evals
    systems = {n: e["expansion"] for n, e in evals.items() if isinstance(e.get("expansion"), Mapping)}
    first = next(iter(systems.values()))
    old, new = list(first.get("old", [])), list(first.get("new", []))
    base = evals.get("base")
    bo, bw = (_mean(base, old), _mean(base, new)) if base else (None, None)
    rows = []
    for n in page.order(list(evals)):
        o, w = _mean(evals[n], old), _mean(evals[n], new)
        rows.append([page.label(n), o, page.pct(o / bo - 1, signed=True) if o and bo else None, w,
                     page.pct(w / bw - 1, signed=True) if w and bw else None,
                     systems[n].get("new_experts_total") if n in systems else None])
    page.p(f"Old languages: {', '.join(old)} · new languages: {', '.join(new)} · no forgetting = Old within +1% "
           "of the base")
    page.table(["system", "Old mean ppl", "Old vs base", "New mean ppl", "New vs base", "new experts"], rows)
    for n, x in systems.items():
        ways = x.get("old_ways") or {}
        if ways:
            page.p(f"{page.label(n)}, Old mean ppl as trained / top-1 / old tokens hard-routed to expert 0 (= the "
                   "base): " + " / ".join(page.fmt((ways.get(w) or {}).get("mean", {}).get("ppl")) for w in WAYS))
        page.p(f"{page.label(n)}, per layer:")
        sim = x.get("similarity") or []
        routing = x.get("routing") or {}
        layer_rows = []
        for layer, experts in sorted(x.get("experts_per_layer", {}).items(), key=lambda kv: int(kv[0])):
            r = routing.get(str(layer), {})
            i = int(layer)
            layer_rows.append([layer, experts, x.get("new_experts", {}).get(str(layer), 0),
                               sim[i] if i < len(sim) else None, page.pct(r.get("old_to_expert0")),
                               page.pct(r.get("old_expert0_weight")), page.pct(r.get("classifier_accuracy"))])
        page.table(["layer", "experts", "new experts", "similarity S", "old tokens to expert 0 (top-1)",
                    "expert 0's weight on old tokens", "classifier accuracy"], layer_rows)


REPORT_SECTIONS = (("Expansion to new languages", shows_expansion, expansion_section),)
