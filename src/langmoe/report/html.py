"""`build_report(run_dir)`: one self-contained `report.html` from the JSON results of a run folder.

Run folder layout read here (every part optional; a missing or unreadable part is skipped with a note, except a
damaged `summary.json`, which is refused with one line: `langmoe.report.summary`):

    config.yaml            resolved recipe (shown verbatim)
    summary.json           {"systems": {name: {mean_ppl, mean_bpb, params_total, params_active, tokens_seen}},
                            "budget_tokens", "note", "languages"}
    eval/<system>.json     {"system", "langs": {lang: {"ppl", "bits_per_byte", ...}}, "mean", "params", "tokens_seen"}
    deviation.json         DeviationResult: langs, dev_ffn[lang][layer], dev_attn, similarity, config
    groups.json            Grouping: groups, method, diameters, agreement {"genus"|"family"|"random": {ari, nmi}}
    groups_random.json     {"groups"} of the random-grouping ablation
    layers.json            LayerSelection: selected, epsilon, normalised, mean_deviation
    routing.json           {"accuracy": {layer: acc}, "counts": {lang: {layer: [tokens per expert]}}}
    routing_<system>.json  the same for other MoE systems (accuracy drawn beside the main one)
    new_language.json      new-language expansion results (shown as a table of its fields)

Figures are written to `plots/*.png` and embedded as base64, so the HTML file can be mailed on its own.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from langmoe import registry
from langmoe.errors import LangmoeError
from langmoe.io import read_json, write_text
from langmoe.report import plots
from langmoe.report.summary import load_summary

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}caption{text-align:left;font-weight:bold;padding:.2em 0}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}td.best{font-weight:bold;background:#e6f4e6}
.note{color:#8a6d3b;background:#fcf8e3;border:1px solid #faebcc;padding:.4em .8em;margin:.5em 0}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
.muted{color:#777;font-size:.85em}
"""


class _Report:
    """The page being written, and what a method's report section (`Method.report_sections`) reads and calls:
    `run_dir`, `evals` (`eval/<system>.json` by system), `label(name)` / `order(names)` (the registry's display),
    `pct(v, signed)`, and the writers `h2`, `p`, `table`, `image`, `note`."""

    def __init__(self, run_dir: Path, evals: Mapping[str, Mapping] | None = None,
                 display: Mapping[str, Mapping[str, Any]] | None = None):
        self.run_dir = run_dir
        self.plot_dir = run_dir / "plots"
        self.evals = dict(evals or {})
        self.display = dict(display or {})
        self.parts: list[str] = []
        self.notes: list[str] = []
        self.sections: list[tuple[str, str]] = []

    def label(self, name: str) -> str:
        return _label(name, self.display)

    def order(self, names: list[str]) -> list[str]:
        return _system_order(names, self.display)

    @staticmethod
    def pct(v: Any, signed: bool = False) -> Pct | None:
        return pct(v, signed)

    def h2(self, text: str) -> None:
        anchor = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
        self.sections.append((anchor, text))
        self.parts.append(f'<h2 id="{anchor}">{html.escape(text)}</h2>')

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def p(self, text: str, raw: bool = False) -> None:
        self.parts.append(f"<p>{text if raw else html.escape(text)}</p>")

    def image(self, path: Path, alt: str) -> None:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')

    def table(self, header: list[str], rows: list[list[Any]], best: set[tuple[int, int]] | None = None,
              left_cols: int = 1, caption: str | None = None) -> None:
        """A table; every header names its column, numbers are rounded by `_fmt` (shares: `Pct`)."""
        best = best or set()

        def cls(*names: str) -> str:
            names = tuple(n for n in names if n)
            return f' class="{" ".join(names)}"' if names else ""

        out = ["<table>"]
        if caption:
            out.append(f"<caption>{html.escape(caption)}</caption>")
        out.append("<thead><tr>")
        out += [f'<th{cls("l" if j < left_cols else "")}>{html.escape(str(h))}</th>' for j, h in enumerate(header)]
        out.append("</tr></thead><tbody>")
        for i, row in enumerate(rows):
            cells = [f'<td{cls("l" if j < left_cols else "", "best" if (i, j) in best else "")}>'
                     f'{html.escape(_fmt(v))}</td>' for j, v in enumerate(row)]
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        self.parts.append("".join(out))

    def section(self, title: str, fn: Callable[[], None]) -> None:
        """Run one part; a malformed input becomes a note instead of a crash."""
        self.h2(title)
        try:
            fn()
        except (KeyError, ValueError, TypeError, IndexError, LangmoeError, json.JSONDecodeError) as e:
            self.note(f"{title}: skipped, the input is not in the expected form ({type(e).__name__}: {e})")


class Pct(float):
    """A share in [0, 1] shown as a percentage with one decimal, as the CLI prints it (60.8%)."""


class Change(Pct):
    """A relative change shown with its sign (+18.9%), as the CLI prints it."""


def pct(v: Any, signed: bool = False) -> Pct | None:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return None
    return Change(v) if signed else Pct(v)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, Pct):
        if not math.isfinite(v):
            return str(float(v))
        return f"{float(v):+.1%}" if isinstance(v, Change) else f"{float(v):.1%}"
    if isinstance(v, int):
        return _human(v) if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.2f}"
        if abs(v) >= 0.001:
            return f"{v:.3f}"
        return f"{v:.3g}"
    if isinstance(v, Mapping):  # a small nested record (settings): key=value pairs, numbers as written
        return ", ".join(f"{k}={x:.4g}" if isinstance(x, float) else f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, list | tuple):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _human(n: float) -> str:
    """Counts as the CLI prints them (2.10M, 204.80K)."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _read(path: Path) -> Any | None:
    return read_json(path) if path.is_file() else None


def _load_evals(run_dir: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    d = run_dir / "eval"
    if d.is_dir():
        for f in sorted(d.glob("*.json")):
            try:
                obj = read_json(f)
            except (json.JSONDecodeError, OSError):
                continue
            if isinstance(obj, dict) and isinstance(obj.get("langs"), dict):
                out[str(obj.get("system", f.stem))] = obj
    return out


def _display(summary: Mapping | None) -> dict[str, dict[str, Any]]:
    """Row label and order: from summary.json's `display` (written from the method registry at run time), else
    from the registry itself."""
    shown = dict((summary or {}).get("display") or {}) if isinstance(summary, Mapping) else {}
    return {k: v for k, v in shown.items() if isinstance(v, Mapping)}


def _system_order(names: list[str], display: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    display = display or {}

    def key(n: str):
        d = display.get(n) or registry.row_display(n)
        return (float(d.get("order", 1e9)), n)

    return sorted(names, key=key)


def _label(name: str, display: Mapping[str, Mapping[str, Any]]) -> str:
    d = display.get(name) or registry.row_display(name)
    label = str(d.get("label") or name)
    return name if label == name else f"{name} — {label}"


def build_report(run_dir: str | Path, out: str | Path | None = None, title: str | None = None) -> Path:
    """Write `run_dir/report.html` (or `out`) from whatever results the run folder holds; return its path."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise LangmoeError(f"{run_dir} is a file: give the run folder (as written by `langmoe run`)")
    if not run_dir.is_dir():
        raise LangmoeError(f"run folder {run_dir} does not exist")
    evals = _load_evals(run_dir)
    rep = _Report(run_dir, evals)
    summary = load_summary(run_dir / "summary.json")  # damaged: one line, no report (the table would be wrong)
    deviation = _safe_read(rep, run_dir / "deviation.json")
    groups = _safe_read(rep, run_dir / "groups.json")
    layers = _safe_read(rep, run_dir / "layers.json")
    routing = _safe_read(rep, run_dir / "routing.json")

    display = rep.display = _display(summary)
    rep.section("Systems", lambda: _systems(rep, summary, evals, display))
    rep.section("Per-language scores", lambda: _per_language(rep, evals, display))
    rep.section("Parameter deviation and MoE layers", lambda: _deviation(rep, deviation, layers))
    rep.section("Language groups", lambda: _groups(rep, groups, deviation, run_dir))
    rep.section("Routing", lambda: _routing(rep, routing, run_dir))
    shown: set = set()
    for method in registry.list_methods():  # each method's own part, where the run holds its results
        for title, shows, write in method.report_sections:
            if write not in shown and shows(rep):  # a section methods share (expansion) is written once
                shown.add(write)
                rep.section(title, lambda write=write: write(rep))
    nl = _safe_read(rep, run_dir / "new_language.json")
    if nl is not None:
        rep.section("New language", lambda: _new_language(rep, nl))
    rep.section("Configuration", lambda: _config(rep, run_dir))

    name = title or f"langmoe run: {run_dir.resolve().name}"
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = " · ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in rep.sections)
    doc = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>{html.escape(name)}</title><style>{_CSS}</style></head><body><h1>{html.escape(name)}</h1>"
           f'<p class="muted">{html.escape(str(run_dir.resolve()))} · generated {stamp}</p>'
           f'<nav class="muted">{nav}</nav>\n'
           + "\n".join(rep.parts) + "\n</body></html>\n")
    dest = Path(out) if out is not None else run_dir / "report.html"
    write_text(dest, doc)
    return dest


def _safe_read(rep: _Report, path: Path) -> Any | None:
    try:
        return _read(path)
    except (json.JSONDecodeError, OSError) as e:
        rep.note(f"{path.name} unreadable, skipped: {e}")
        return None


# ---- sections --------------------------------------------------------------------------------------------------


def _systems(rep: _Report, summary: Mapping | None, evals: Mapping[str, Mapping],
             display: Mapping[str, Mapping[str, Any]]) -> None:
    rows_src: dict[str, dict[str, Any]] = {}
    if summary and isinstance(summary.get("systems"), Mapping):
        rows_src = {k: dict(v) for k, v in summary["systems"].items()}
    for name, e in evals.items():  # systems evaluated but not (yet) in the summary
        if name not in rows_src:
            rows_src[name] = {"mean_ppl": e["mean"]["ppl"], "mean_bpb": e["mean"]["bits_per_byte"],
                              "params_total": e.get("params", {}).get("total"),
                              "params_active": e.get("params", {}).get("active"),
                              "tokens_seen": e.get("tokens_seen")}
    if not rows_src:
        rep.note("no summary.json and no eval/*.json: nothing evaluated yet")
        return
    names = _system_order(list(rows_src), display)
    header = ["system", "mean perplexity", "mean bits/byte", "params total", "params active", "tokens seen",
              "routing accuracy (mean over MoE layers)"]
    rows = []
    for n in names:
        r = rows_src[n]
        acc = r.get("routing_accuracy")
        if isinstance(acc, Mapping):
            acc = sum(acc.values()) / len(acc) if acc else None
        acc = pct(acc)
        rows.append([_label(n, display), r.get("mean_ppl"), r.get("mean_bpb"), r.get("params_total"), r.get("params_active"),
                     r.get("tokens_seen"), acc])
    best = set()
    for col in (1, 2):
        vals = [(row[col], i) for i, row in enumerate(rows) if isinstance(row[col], int | float)]
        if vals:
            best.add((min(vals)[1], col))
    rep.table(header, rows, best)
    if summary:
        bits = []
        if summary.get("budget_tokens") is not None:
            bits.append(f"token budget per system: {_fmt(int(summary['budget_tokens']))}")
        if summary.get("note"):
            bits.append(str(summary["note"]))
        if bits:
            rep.p(" · ".join(bits))
    else:
        rep.note("summary.json missing: rows come from eval/*.json")


def _per_language(rep: _Report, evals: Mapping[str, Mapping], display: Mapping[str, Mapping[str, Any]]) -> None:
    if not evals:
        rep.note("no eval/*.json: per-language scores skipped")
        return
    names = _system_order(list(evals), display)
    langs: list[str] = []
    for n in names:
        langs += [x for x in evals[n]["langs"] if x not in langs]
    for metric, label in (("ppl", "perplexity"), ("bits_per_byte", "bits per byte")):
        rows, best = [], set()
        for n in names:
            rows.append([n] + [evals[n]["langs"].get(x, {}).get(metric) for x in langs]
                        + [evals[n].get("mean", {}).get(metric)])
        for j in range(1, len(langs) + 2):
            vals = [(row[j], i) for i, row in enumerate(rows) if isinstance(row[j], int | float)]
            if vals:
                best.add((min(vals)[1], j))
        rep.p(f"<b>{label}</b> (lower is better; best per column in bold)", raw=True)
        rep.table(["system", *langs, "mean"], rows, best)
    ppl = {n: {x: float(v["ppl"]) for x, v in evals[n]["langs"].items()} for n in names}
    rep.image(plots.plot_perplexity(ppl, rep.plot_dir / "perplexity.png"), "per-language perplexity")


def _mean_per_layer(per_lang: Any) -> list[float] | None:
    if not isinstance(per_lang, Mapping) or not per_lang:
        return None
    rows = [list(map(float, v)) for v in per_lang.values()]
    return [sum(col) / len(col) for col in zip(*rows, strict=False)]


def _deviation(rep: _Report, dev: Mapping | None, layers: Mapping | None) -> None:
    attn = None
    if dev is None:
        rep.note("deviation.json missing: the run used fixed groups and layers, or the probe has not run")
    else:
        ffn = dev.get("dev_ffn") or dev.get("ffn")
        attn = dev.get("dev_attn") or dev.get("attn")
        if not ffn:
            rep.note("deviation.json has no per-layer FFN deviation")
        else:
            cfg = dev.get("config") or {}
            if cfg:
                rep.p("probe settings: " + _fmt({k: v for k, v in cfg.items() if k != "progress"}))
            path = plots.plot_deviation(ffn, rep.plot_dir / "deviation.png",
                                        epsilon=(layers or {}).get("epsilon"),
                                        selected=(layers or {}).get("selected"))
            rep.image(path, "deviation per layer")
    if layers is None:
        rep.note("layers.json missing: MoE layers unknown")
        return
    sel = layers.get("selected", [])
    how = (f"ε = {layers['epsilon']:g}" if layers.get("epsilon") is not None
           else f"top {layers['top_n']}" if layers.get("top_n") else str(layers.get("method", "")))
    rep.p(f"MoE layers ({how}): <b>{html.escape(', '.join(map(str, sel)) or 'none')}</b>", raw=True)
    if layers.get("normalised"):
        norm = layers["normalised"]
        mean = list(layers.get("mean_deviation") or [None] * len(norm))
        att = _mean_per_layer(attn) or []
        rows = [[i, None if m is None else f"{float(m):.4f}", f"{float(d):.3f}",
                 f"{att[i]:.4f}" if i < len(att) else None, "MoE" if i in sel else "dense"]
                for i, (m, d) in enumerate(zip(mean, norm, strict=False))]
        rep.table(["layer", "mean FFN deviation", "normalised d̂_l", "mean attention deviation", "layer kind"], rows)
    if layers.get("note"):
        rep.note(str(layers["note"]))


def _groups(rep: _Report, groups: Mapping | None, dev: Mapping | None, run_dir: Path) -> None:
    if groups is None:
        rep.note("groups.json missing: grouping skipped")
        return
    gl = [list(g) for g in groups["groups"]]
    rep.p(f"method: {groups.get('method', '?')}")
    diam = groups.get("diameters") or [None] * len(gl)
    rep.table(["group", "languages", "diameter (max 1 − cos)"],
              [[i, " ".join(g), d] for i, (g, d) in enumerate(zip(gl, diam, strict=False))], left_cols=2)
    _agreement(rep, groups, run_dir)
    if dev is not None and dev.get("similarity") and dev.get("langs"):
        rep.image(plots.plot_similarity(dev["langs"], dev["similarity"], rep.plot_dir / "similarity.png",
                                        groups=gl), "similarity heatmap")
        if len(dev["langs"]) >= 2:
            try:
                rep.image(plots.plot_dendrogram(dev["langs"], dev["similarity"], rep.plot_dir / "dendrogram.png",
                                                groups=gl),
                          "dendrogram")
            except LangmoeError as e:  # scipy is an extra: the report still renders without it
                rep.note(f"no dendrogram: {e}")
    else:
        rep.note("no similarity matrix (deviation.json missing): heatmap and dendrogram skipped")


def _single_value_references(langs: list[str]) -> dict[str, str]:
    """Reference groupings (genus / family) that put every language in one group: agreement with them is 0 by
    construction and says nothing, so their rows are dropped. {reference: its one value}."""
    from langmoe.data.languages import get_language

    out = {}
    for by in ("genus", "family"):
        try:
            values = {getattr(get_language(x), by) for x in langs}
        except (LangmoeError, AttributeError):
            continue
        if len(values) == 1:
            out[by] = str(next(iter(values)))
    return out


def _agreement(rep: _Report, groups: Mapping, run_dir: Path) -> None:
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
    rnd = _safe_read(rep, run_dir / "groups_random.json")
    if isinstance(rnd, Mapping):
        for k, v in dict(rnd.get("agreement") or {}).items():
            if isinstance(v, Mapping) and k not in dropped:
                rows.append([f"run's random grouping vs {k}", v.get("ari"), v.get("nmi"), None, None])
    if rows:
        rep.p("Agreement with reference groupings (ARI: 1 = identical, ~0 = chance, can be negative; NMI in [0, 1]). "
              "The chance columns score a random balanced grouping with the same group sizes against the same "
              "reference.")
        rep.table(["reference grouping", "ARI", "NMI", "ARI, random grouping (chance)",
                   "NMI, random grouping (chance)"], rows)
    for by, value in dropped.items():
        rep.p(f"No {by} row: every language is {value}, so agreement with {by} is 0 by construction.")


def _routing(rep: _Report, routing: Mapping | None, run_dir: Path) -> None:
    others: dict[str, Mapping] = {}
    for f in sorted(run_dir.glob("routing_*.json")):  # e.g. routing_dmoe_random.json of the ablation
        try:
            obj = read_json(f)
        except (json.JSONDecodeError, OSError):
            rep.note(f"{f.name} unreadable, skipped")
            continue
        if isinstance(obj, Mapping) and obj.get("accuracy"):
            others[str(obj.get("system", f.stem.removeprefix("routing_")))] = obj
    if routing is None and not others:
        rep.note("routing.json missing: no learned-routing statistics")
        return
    series: dict[str, Mapping] = {}
    if routing is not None and routing.get("accuracy"):
        series[str(routing.get("system", "dmoe"))] = routing["accuracy"]
    series.update({k: v["accuracy"] for k, v in others.items()})
    if series:
        layers = sorted({int(k) for acc in series.values() for k in acc})
        rep.p("Routing accuracy: share of held-out tokens whose top-1 expert is their language group's expert.")
        rep.table(["system", *[f"layer {la}" for la in layers]],
                  [[name, *[pct(acc.get(str(la))) for la in layers]] for name, acc in series.items()])
        if len(layers) > 1 or len(series) > 1:  # one system at one layer: the table says it all
            rep.image(plots.plot_routing_accuracy(series, rep.plot_dir / "routing_accuracy.png"), "routing accuracy")
    counts = (routing or {}).get("counts") or {}
    layer_ids = sorted({int(k) for per in counts.values() for k in per}) if counts else []
    experts = _expert_labels((routing or {}).get("group_of"))
    for layer in layer_ids[-4:]:  # the last MoE layers: where languages separate most
        rows = {lang: per[str(layer)] for lang, per in counts.items() if str(layer) in per}
        if rows:
            n_exp = len(next(iter(rows.values())))
            labels = [experts.get(e, str(e)) for e in range(n_exp)] if experts else None
            rep.image(plots.plot_routing_heatmap(rows, rep.plot_dir / f"routing_layer{layer}.png",
                                                 title=f"Top-1 routing share, layer {layer}", expert_labels=labels),
                      f"routing heatmap layer {layer}")
    if len(layer_ids) > 4:
        rep.p(f"(heatmaps of the last 4 of {len(layer_ids)} MoE layers)")


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


def _new_language(rep: _Report, nl: Any) -> None:
    """The new-language expansion (docs/methods.md §1 G): the new language before/after, how each existing expert scored
    it, and what happened to the old languages."""
    if not isinstance(nl, Mapping) or "lang" not in nl:
        _generic(rep, nl)
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
        bits.append(f"trained on {_fmt(int(nl['tokens_seen']))} tokens" + (f" ({steps} steps)" if steps else ""))
    rep.p("; ".join(bits) + ".", raw=True)
    before, after = nl.get("before") or {}, nl.get("after") or {}
    if before or after:
        b, a = _ppl(before), _ppl(after)
        base, hard = _ppl(nl.get("base") or {}), _ppl(nl.get("after_hard") or {})

        def change(x):
            ok = isinstance(x, float | int) and isinstance(b, float | int) and b
            return pct((x - b) / b, signed=True) if ok else None

        rows = [[f"{lang}, learned routing", base, b, a, change(a), _ppl(before, "bits_per_byte"),
                 _ppl(after, "bits_per_byte"), pct(nl.get("old_mean_ppl_change"), signed=True)]]
        if hard is not None:
            rows.append([f"{lang}, hard routing by language", base, b, hard, change(hard),
                         _ppl(before, "bits_per_byte"), _ppl(nl.get("after_hard") or {}, "bits_per_byte"),
                         pct(nl.get("old_mean_ppl_change_hard"), signed=True)])
        rep.table(["language", "perplexity under the dense base", "perplexity before", "perplexity after", "change",
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
            rows.append([layer, pct(g.get("new_recall")), f"{worst[0]} {worst[1]:.1%}" if worst else None,
                         pct((g.get("fit") or {}).get("train_accuracy")) if isinstance(g.get("fit"), Mapping)
                         else None])
        rep.table(["MoE layer", f"{lang} tokens sent to the new expert", "old language with the most tokens sent",
                   "gate fit accuracy"], rows,
                  caption="The language gate (measured on training text it was not fitted on)")
    per_expert = nl.get("per_expert_ppl")
    if isinstance(per_expert, list) and per_expert:
        rep.table(["expert", "perplexity of " + lang, "chosen as the source"],
                  [[i, v, "yes" if i == src else ""] for i, v in enumerate(per_expert)],
                  caption=f"Each existing expert on {lang} before training (the lowest is copied)")
    ob, oa, ch = nl.get("old_before") or {}, nl.get("old_after") or {}, nl.get("old_ppl_change") or {}
    old_langs = [x for x in ob if isinstance(ob.get(x), Mapping)] or list(ch)
    if old_langs:
        rows = [[x, _ppl(ob.get(x)), _ppl(oa.get(x)), pct(ch.get(x), signed=True)] for x in old_langs]
        if nl.get("old_mean_ppl_change") is not None:
            rows.append(["mean change", None, None, pct(nl["old_mean_ppl_change"], signed=True)])
        rep.table(["old language", "perplexity before", "perplexity after", "change"], rows,
                  caption="The old languages (forgetting)")
    extra = {k: v for k, v in nl.items() if k in ("train", "params", "replay_rows_per_micro_batch")}
    if extra:
        rep.table(["setting", "value"], [[k, v] for k, v in extra.items()], left_cols=2)


def _generic(rep: _Report, obj: Any) -> None:
    """Any other JSON record: a field/value table, nested records as rounded key=value lists."""
    if isinstance(obj, Mapping):
        rep.table(["field", "value"], [[k, v] for k, v in obj.items()], left_cols=2)
    else:
        rep.parts.append(f"<pre>{html.escape(json.dumps(obj, indent=2, ensure_ascii=False))}</pre>")


def _config(rep: _Report, run_dir: Path) -> None:
    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        rep.note("config.yaml missing")
        return
    rep.parts.append(f"<pre>{html.escape(cfg.read_text(encoding='utf-8'))}</pre>")
