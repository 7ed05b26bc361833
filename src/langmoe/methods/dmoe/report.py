"""DMoE's part of the HTML report (`langmoe report`), registered as the method's report sections: parameter
deviation and the MoE layers, the language groups and their agreement with reference groupings, learned-routing
accuracy and heatmaps, and the new language. Each section shows when the run holds DMoE results; a part missing
from such a run is a note."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langmoe.data.languages import get_language
from langmoe.errors import LangmoeError
from langmoe.io import read_json
from langmoe.report import plots

__all__ = ["REPORT_SECTIONS"]

_FILES = ("deviation.json", "groups.json", "layers.json", "routing.json", "new_language.json")


def _is_dmoe_run(page) -> bool:
    """The run evaluated a DMoE system, or holds one of DMoE's files."""
    return (any(n.startswith("dmoe") for n in page.evals) or any((page.run_dir / f).is_file() for f in _FILES)
            or any(page.run_dir.glob("routing_*.json")))


def _mean_per_layer(per_lang: Any) -> list[float] | None:
    if not isinstance(per_lang, Mapping) or not per_lang:
        return None
    rows = [list(map(float, v)) for v in per_lang.values()]
    return [sum(col) / len(col) for col in zip(*rows, strict=False)]


def _deviation(page, dev: Mapping | None, layers: Mapping | None) -> None:
    attn = None
    if dev is None:
        page.note("deviation.json missing: the run used fixed groups and layers, or the probe has not run")
    else:
        ffn = dev.get("dev_ffn") or dev.get("ffn")
        attn = dev.get("dev_attn") or dev.get("attn")
        if not ffn:
            page.note("deviation.json has no per-layer FFN deviation")
        else:
            cfg = dev.get("config") or {}
            if cfg:
                page.p("probe settings: " + page.fmt({k: v for k, v in cfg.items() if k != "progress"}))
            path = plots.plot_deviation(ffn, page.plot_dir / "deviation.png",
                                        epsilon=(layers or {}).get("epsilon"),
                                        selected=(layers or {}).get("selected"))
            page.image(path, "deviation per layer")
    if layers is None:
        page.note("layers.json missing: MoE layers unknown")
        return
    sel = layers.get("selected", [])
    how = (f"ε = {layers['epsilon']:g}" if layers.get("epsilon") is not None
           else f"top {layers['top_n']}" if layers.get("top_n") else str(layers.get("method", "")))
    page.p(f"MoE layers ({how}): <b>{html.escape(', '.join(map(str, sel)) or 'none')}</b>", raw=True)
    if layers.get("normalised"):
        norm = layers["normalised"]
        mean = list(layers.get("mean_deviation") or [None] * len(norm))
        att = _mean_per_layer(attn) or []
        rows = [[i, None if m is None else f"{float(m):.4f}", f"{float(d):.3f}",
                 f"{att[i]:.4f}" if i < len(att) else None, "MoE" if i in sel else "dense"]
                for i, (m, d) in enumerate(zip(mean, norm, strict=False))]
        page.table(["layer", "mean FFN deviation", "normalised d̂_l", "mean attention deviation", "layer kind"], rows)
    if layers.get("note"):
        page.note(str(layers["note"]))


def _groups(page, groups: Mapping | None, dev: Mapping | None, run_dir: Path) -> None:
    if groups is None:
        page.note("groups.json missing: grouping skipped")
        return
    gl = [list(g) for g in groups["groups"]]
    page.p(f"method: {groups.get('method', '?')}")
    diam = groups.get("diameters") or [None] * len(gl)
    page.table(["group", "languages", "diameter (max 1 − cos)"],
              [[i, " ".join(g), d] for i, (g, d) in enumerate(zip(gl, diam, strict=False))], left_cols=2)
    _agreement(page, groups, run_dir)
    if dev is not None and dev.get("similarity") and dev.get("langs"):
        page.image(plots.plot_similarity(dev["langs"], dev["similarity"], page.plot_dir / "similarity.png",
                                        groups=gl), "similarity heatmap")
        if len(dev["langs"]) >= 2:
            try:
                page.image(plots.plot_dendrogram(dev["langs"], dev["similarity"], page.plot_dir / "dendrogram.png",
                                                groups=gl),
                          "dendrogram")
            except LangmoeError as e:  # scipy is an extra: the report still renders without it
                page.note(f"no dendrogram: {e}")
    else:
        page.note("no similarity matrix (deviation.json missing): heatmap and dendrogram skipped")


def _single_value_references(langs: list[str]) -> dict[str, str]:
    """Reference groupings (genus / family) that put every language in one group: agreement with them is 0 by
    construction and says nothing, so their rows are dropped. {reference: its one value}."""
    out = {}
    for by in ("genus", "family"):
        try:
            values = {getattr(get_language(x), by) for x in langs}
        except (LangmoeError, AttributeError):
            continue
        if len(values) == 1:
            out[by] = str(next(iter(values)))
    return out


def _agreement(page, groups: Mapping, run_dir: Path) -> None:
    """One row per reference grouping: ARI/NMI of these groups, and of a random balanced grouping (chance)."""
    agr = {k: v for k, v in dict(groups.get("agreement") or {}).items() if isinstance(v, Mapping)}
    chance = {k.removeprefix("random grouping vs "): agr.pop(k) for k in list(agr)
              if k.startswith("random grouping vs ")}
    dropped = _single_value_references([str(x) for x in groups.get("langs") or []])
    rows = []
    for ref, v in agr.items():
        if ref in dropped:
            continue
        c = chance.get(ref, {})
        label = "a random balanced grouping" if ref == "random" else ref
        rows.append([label, v.get("ari"), v.get("nmi"), c.get("ari"), c.get("nmi")])
    rnd = page.read(run_dir / "groups_random.json")
    if isinstance(rnd, Mapping):
        for k, v in dict(rnd.get("agreement") or {}).items():
            if isinstance(v, Mapping) and k not in dropped:
                rows.append([f"run's random grouping vs {k}", v.get("ari"), v.get("nmi"), None, None])
    if rows:
        page.p("Agreement with reference groupings (ARI: 1 = identical, ~0 = chance, can be negative; NMI in [0, 1]). "
              "The chance columns score a random balanced grouping with the same group sizes against the same "
              "reference.")
        page.table(["reference grouping", "ARI", "NMI", "ARI, random grouping (chance)",
                   "NMI, random grouping (chance)"], rows)
    for by, value in dropped.items():
        page.p(f"No {by} row: every language is {value}, so agreement with {by} is 0 by construction.")


def _routing(page, routing: Mapping | None, run_dir: Path) -> None:
    others: dict[str, Mapping] = {}
    for f in sorted(run_dir.glob("routing_*.json")):  # e.g. routing_dmoe_random.json of the ablation
        try:
            obj = read_json(f)
        except (json.JSONDecodeError, OSError):
            page.note(f"{f.name} unreadable, skipped")
            continue
        if isinstance(obj, Mapping) and obj.get("accuracy"):
            others[str(obj.get("system", f.stem.removeprefix("routing_")))] = obj
    if routing is None and not others:
        page.note("routing.json missing: no learned-routing statistics")
        return
    series: dict[str, Mapping] = {}
    if routing is not None and routing.get("accuracy"):
        series[str(routing.get("system", "dmoe"))] = routing["accuracy"]
    series.update({k: v["accuracy"] for k, v in others.items()})
    if series:
        layers = sorted({int(k) for acc in series.values() for k in acc})
        page.p("Routing accuracy: share of held-out tokens whose top-1 expert is their language group's expert.")
        page.table(["system", *[f"layer {la}" for la in layers]],
                  [[name, *[page.pct(acc.get(str(la))) for la in layers]] for name, acc in series.items()])
        if len(layers) > 1 or len(series) > 1:  # one system at one layer: the table says it all
            page.image(plots.plot_routing_accuracy(series, page.plot_dir / "routing_accuracy.png"), "routing accuracy")
    counts = (routing or {}).get("counts") or {}
    layer_ids = sorted({int(k) for per in counts.values() for k in per}) if counts else []
    experts = _expert_labels((routing or {}).get("group_of"))
    for layer in layer_ids[-4:]:  # the last MoE layers: where languages separate most
        rows = {lang: per[str(layer)] for lang, per in counts.items() if str(layer) in per}
        if rows:
            n_exp = len(next(iter(rows.values())))
            labels = [experts.get(e, str(e)) for e in range(n_exp)] if experts else None
            page.image(plots.plot_routing_heatmap(rows, page.plot_dir / f"routing_layer{layer}.png",
                                                 title=f"Top-1 routing share, layer {layer}", expert_labels=labels),
                      f"routing heatmap layer {layer}")
    if len(layer_ids) > 4:
        page.p(f"(heatmaps of the last 4 of {len(layer_ids)} MoE layers)")


def _expert_labels(group_of: Any) -> dict[int, str]:
    """Expert index -> "0: en de nl" from routing.json's `group_of` (expert e serves group e)."""
    if not isinstance(group_of, Mapping):
        return {}
    members: dict[int, list[str]] = {}
    for lang, g in group_of.items():
        if isinstance(g, int):
            members.setdefault(g, []).append(str(lang))
    return {g: f"{g}: {' '.join(v)}" for g, v in members.items()}


def _ppl(rec: Any, key: str = "ppl") -> float | None:
    return rec.get(key) if isinstance(rec, Mapping) else None


def _new_language(page, nl: Any) -> None:
    """The new-language expansion (docs/methods.md §1 G): the new language before/after, how each existing expert scored
    it, and what happened to the old languages."""
    if not isinstance(nl, Mapping) or "lang" not in nl:
        page.generic(nl)
        return
    lang = str(nl["lang"])
    src = nl.get("source_expert")
    group = nl.get("source_group") or []
    bits = [f"New language <b>{html.escape(lang)}</b>"]
    if src is not None:
        bits.append(f"its expert {html.escape(str(nl.get('new_expert', '?')))} was copied from expert {src}"
                    + (f" ({html.escape(' '.join(map(str, group)))})" if group else ""))
    if nl.get("tokens_seen") is not None:
        steps = (nl.get("train") or {}).get("steps") if isinstance(nl.get("train"), Mapping) else None
        bits.append(f"trained on {page.fmt(int(nl['tokens_seen']))} tokens" + (f" ({steps} steps)" if steps else ""))
    page.p("; ".join(bits) + ".", raw=True)
    before, after = nl.get("before") or {}, nl.get("after") or {}
    if before or after:
        b, a = _ppl(before), _ppl(after)
        base, hard = _ppl(nl.get("base") or {}), _ppl(nl.get("after_hard") or {})

        def change(x):
            ok = isinstance(x, float | int) and isinstance(b, float | int) and b
            return page.pct((x - b) / b, signed=True) if ok else None

        rows = [[f"{lang}, learned routing", base, b, a, change(a), _ppl(before, "bits_per_byte"),
                 _ppl(after, "bits_per_byte"), page.pct(nl.get("old_mean_ppl_change"), signed=True)]]
        if hard is not None:
            rows.append([f"{lang}, hard routing by language", base, b, hard, change(hard),
                         _ppl(before, "bits_per_byte"), _ppl(nl.get("after_hard") or {}, "bits_per_byte"),
                         page.pct(nl.get("old_mean_ppl_change_hard"), signed=True)])
        page.table(["language", "perplexity under the dense base", "perplexity before", "perplexity after", "change",
                   "bits/byte before", "bits/byte after", "old languages' mean change"], rows,
                  caption="The new language under the untouched base, before and after its expert was trained "
                          "(target: below the base, old languages within +1%)")
    gate = nl.get("gate")
    if isinstance(gate, Mapping) and gate:
        rows = []
        for layer, g in gate.items():
            if not isinstance(g, Mapping):
                continue
            intr = g.get("old_intrusion") or {}
            worst = max(intr.items(), key=lambda kv: kv[1]) if isinstance(intr, Mapping) and intr else None
            rows.append([layer, page.pct(g.get("new_recall")), f"{worst[0]} {worst[1]:.1%}" if worst else None,
                         page.pct((g.get("fit") or {}).get("train_accuracy")) if isinstance(g.get("fit"), Mapping)
                         else None])
        page.table(["MoE layer", f"{lang} tokens sent to the new expert", "old language with the most tokens sent",
                   "gate fit accuracy"], rows,
                  caption="The language gate (measured on training text it was not fitted on)")
    per_expert = nl.get("per_expert_ppl")
    if isinstance(per_expert, list) and per_expert:
        page.table(["expert", "perplexity of " + lang, "chosen as the source"],
                  [[i, v, "yes" if i == src else ""] for i, v in enumerate(per_expert)],
                  caption=f"Each existing expert on {lang} before training (the lowest is copied)")
    ob, oa, ch = nl.get("old_before") or {}, nl.get("old_after") or {}, nl.get("old_ppl_change") or {}
    old_langs = [x for x in ob if isinstance(ob.get(x), Mapping)] or list(ch)
    if old_langs:
        rows = [[x, _ppl(ob.get(x)), _ppl(oa.get(x)), page.pct(ch.get(x), signed=True)] for x in old_langs]
        if nl.get("old_mean_ppl_change") is not None:
            rows.append(["mean change", None, None, page.pct(nl["old_mean_ppl_change"], signed=True)])
        page.table(["old language", "perplexity before", "perplexity after", "change"], rows,
                  caption="The old languages (forgetting)")
    extra = {k: v for k, v in nl.items() if k in ("train", "params", "replay_rows_per_micro_batch")}
    if extra:
        page.table(["setting", "value"], [[k, v] for k, v in extra.items()], left_cols=2)


def deviation_section(page) -> None:
    _deviation(page, page.read(page.run_dir / "deviation.json"), page.read(page.run_dir / "layers.json"))


def groups_section(page) -> None:
    _groups(page, page.read(page.run_dir / "groups.json"), page.read(page.run_dir / "deviation.json"), page.run_dir)


def routing_section(page) -> None:
    _routing(page, page.read(page.run_dir / "routing.json"), page.run_dir)


def _has_new_language(page) -> bool:
    return (page.run_dir / "new_language.json").is_file()


def new_language_section(page) -> None:
    _new_language(page, page.read(page.run_dir / "new_language.json"))


REPORT_SECTIONS = (
    ("Parameter deviation and MoE layers", _is_dmoe_run, deviation_section),
    ("Language groups", _is_dmoe_run, groups_section),
    ("Routing", _is_dmoe_run, routing_section),
    ("New language", _has_new_language, new_language_section),
)
