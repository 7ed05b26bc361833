"""`build_report(run_dir)`: one self-contained `report.html` from the JSON results of a run folder.

Run folder layout read here (every part optional; a missing or unreadable part is skipped with a note, except a
damaged `summary.json`, which is refused with one line: `langmoe.report.summary`):

    config.yaml            resolved recipe (shown verbatim)
    summary.json           {"systems": {name: {mean_ppl, mean_bpb, params_total, params_active, tokens_seen}},
                            "budget_tokens", "note", "languages"}
    eval/<system>.json     {"system", "langs": {lang: {"ppl", "bits_per_byte", ...}}, "mean", "params", "tokens_seen"}
    ...                    a method's own files, read by its report sections (`Method.report_sections` in the
                           registry): DMoE's deviation/groups/layers/routing/new_language .json
                           (`langmoe.methods.dmoe.report`), the expansion record in eval/<system>.json
                           (`langmoe.methods.expansion.report`)

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
    `run_dir`, `plot_dir`, `evals` (`eval/<system>.json` by system), `read(path)`, `label(name)` / `order(names)`
    (the registry's display), `pct(v, signed)`, `fmt(v)`, and the writers `h2`, `p`, `table`, `image`, `note`,
    `generic(obj)`."""

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

    @staticmethod
    def fmt(v: Any) -> str:
        return _fmt(v)

    def read(self, path: Path) -> Any | None:
        """A JSON file of the run (None when missing; a note when unreadable)."""
        return _safe_read(self, path)

    def generic(self, obj: Any) -> None:
        _generic(self, obj)

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

    display = rep.display = _display(summary)
    rep.section("Systems", lambda: _systems(rep, summary, evals, display))
    rep.section("Per-language scores", lambda: _per_language(rep, evals, display))
    shown: set = set()
    for method in registry.list_methods():  # each method's own part, where the run holds its results
        for title, shows, write in method.report_sections:
            if write not in shown and shows(rep):  # a section methods share (expansion) is written once
                shown.add(write)
                rep.section(title, lambda write=write: write(rep))
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
