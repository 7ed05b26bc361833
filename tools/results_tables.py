"""The results tables of README.md and docs/*.md, generated from the committed results files so they cannot drift.

A generated table sits between two markers; everything between them is rewritten from the named results file:

    <!-- results: bases -->
    | ... |
    <!-- /results -->

    python tools/results_tables.py            # rewrite every block in README.md and docs/*.md
    python tools/results_tables.py --check    # exit 1 and name each stale block (run by the test suite)

Each table is produced by one function in `TABLES` from files under `benchmarks/results/` (and the shipped bases'
`pretrain.json`); the command that produced each file is written next to it there. Prose numbers around the
tables are not generated: keep them few and next to their table.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BASES = ROOT / "src" / "langmoe" / "models" / "builtin"
BLOCK = re.compile(r"(<!-- results: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _mean_std(xs: list[float], fmt: str = "{:.2f}") -> str:
    xs = [float(x) for x in xs]
    if len(xs) > 1:
        return f"{fmt.format(statistics.fmean(xs))} ± {fmt.format(statistics.stdev(xs))}"
    return fmt.format(xs[0])


def _millions(n: float) -> str:
    return f"{n / 1e6:.2f}M"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --- the tables ---------------------------------------------------------------------------------------------------

_BASES = [  # (--model, results file, folder, what)
    ("builtin", "base_vs_compressors.json", "tiny-base", "Llama `tiny`"),
    ("builtin-g0", "base_vs_compressors_g0.json", "tiny-base-g0", "Llama `tiny`"),
    ("builtin-moe", "base_vs_compressors_moe.json", "tiny-moe", "stock Qwen3-MoE `tiny-moe`, 8 experts top-2"),
]


def bases() -> str:
    """The shipped bases against bz2 / xz on the held-out test split (base_vs_compressors*.json)."""
    rows = []
    for name, results, folder, what in _BASES:
        r = _read(RESULTS / results)
        pre = _read(BASES / folder / "pretrain.json")
        p = pre["parameters"]
        params = _millions(p["total"]) + (f" ({_millions(p['active'])} active)" if p["active"] != p["total"] else "")
        tokens = pre["train"]["tokens_seen"]
        langs = r["langs"]
        wins = [sum(v["model"] < v[c] for v in langs.values()) for c in ("bz2 -9", "xz -9e")]
        trained = list(pre["train_blocks"]["per_lang"])
        trained_on = " ".join(trained) if len(trained) <= 12 else f"all {len(trained)}"
        rows.append([f"`{name}`", f"{what}, {params} params", trained_on, _millions(tokens),
                     f"**{r['mean']['model']:.3f}**", f"{r['mean']['bz2 -9']:.3f}", f"{r['mean']['xz -9e']:.3f}",
                     f"{wins[0]} / {wins[1]} of {len(langs)}"])
    return _table(["`--model`", "what", "trained on (and tested on)", "training tokens", "mean bits/byte", "`bz2 -9`",
                   "`xz -9e`", "wins vs bz2 / xz"], rows)


_SYSTEMS = {"base": "base", "dmoe": "DMoE (learned top-2)", "dmoe_hard": "DMoE (hard by group)",
            "dmoe_random": "DMoE, random groups", "dmoe_random_hard": "DMoE, random groups, hard",
            "cpt": "dense CPT (same tokens)", "xelm": "X-ELM (language → branch)",
            "xelm_ensemble": "X-ELM (posterior ensemble)", "btx": "BTX"}


def demo() -> str:
    """`langmoe demo`'s summary (demo.json = the run's summary.json)."""
    s = _read(RESULTS / "demo.json")
    rows = [[_SYSTEMS.get(k, k), f"{v['mean_ppl']:.2f}", f"{v['mean_bpb']:.4f}", _millions(v["params_total"]),
             _millions(v["params_active"])] for k, v in s["systems"].items()]
    return _table(["system", "mean ppl", "mean bits/byte", "params total", "params active/token"], rows)


def demo_new_language() -> str:
    """The demo's new language (demo.json `new_language`): the new language under the untouched base, the DMoE
    before and after, and the old languages' change, under learned and hard routing."""
    nl = _read(RESULTS / "demo.json")["new_language"]
    worst = max(nl["old_ppl_change"].items(), key=lambda kv: kv[1])
    gate = nl.get("gate") or {}
    recall = ", ".join(f"{v['new_recall']:.0%}" for v in gate.values()) or "–"
    rows = [
        ["learned top-2" + (" + language gate" if gate else ""), f"{nl['base']['ppl']:.1f}",
         f"{nl['before']['ppl']:.1f}", f"**{nl['after']['ppl']:.1f}**", f"{nl['old_mean_ppl_change']:+.2%}",
         f"{worst[0]} {worst[1]:+.2%}", f"{nl['intrusion_end']:.2%}", recall],
        ["hard by language", f"{nl['base']['ppl']:.1f}", f"{nl['before']['ppl']:.1f}",
         f"{nl['after_hard']['ppl']:.1f}", f"{nl['old_mean_ppl_change_hard']:+.2%}", "–", "–", "–"],
    ]
    return _table(["routing", f"{nl['lang']}: base", "DMoE before", "after", "old mean Δ", "old worst Δ",
                   "old tokens to the new expert", f"{nl['lang']} tokens to it"], rows)


_EXPANSION = {"base": "base (`builtin-g0`)", "full_ft": "full fine-tuning (+ the same replay)", "lora": "LoRA",
              "moe_lpr": "MoE-LPR", "moe_lpr_gate": "MoE-LPR, `--protect gate`", "layermoe": "LayerMoE",
              "layermoe_gate": "LayerMoE, `--protect gate`", "layermoe_random": "LayerMoE, random allocation",
              "layermoe_nocls": "LayerMoE, no classifier"}


def expansion() -> str:
    """MoE-LPR / LayerMoE and their baselines (expansion_builtin.json), mean ± std over seeds: bits per byte with
    the change against the base (issue 22's results), or ppl (results written before it)."""
    data = _read(RESULTS / "expansion_builtin.json")
    if "main" not in data:
        return _expansion_ppl(data["rows"])
    rows_in = data["main"]["rows"]
    base = rows_in.get("base")
    rows = []
    for key, label in _EXPANSION.items():
        if key not in rows_in:
            continue
        r = rows_in[key]
        experts = "–" if not any(r["new_experts"]) else f"{statistics.fmean(r['new_experts']):.0f}"
        rel = [f"{statistics.fmean(r[c]) / statistics.fmean(base[c]) - 1:+.1%}" if base and key != "base" else "–"
               for c in ("old", "new")]
        rows.append([label, _mean_std(r["old"], "{:.3f}"), rel[0], _mean_std(r["new"], "{:.3f}"), rel[1], experts])
    return _table(["system", "Old bits/byte", "Old vs base", "New bits/byte", "New vs base", "new experts"], rows)


def _expansion_ppl(rows_in: dict) -> str:
    rows = []
    for key, label in _EXPANSION.items():
        if key not in rows_in:
            continue
        r = rows_in[key]
        one = key == "base"
        experts = "–" if not any(r["new_experts"]) else f"{statistics.fmean(r['new_experts']):.0f}"
        rows.append([label, f"{r['old'][0]:,.2f}" if one else _mean_std(r["old"]),
                     f"{r['new'][0]:,.0f}" if one else _mean_std(r["new"]), experts])
    return _table(["system", "Old ppl", "New ppl", "new experts"], rows)


def _ppl_cell(a: dict) -> str:
    """A curve entry's mean ppl, with ± its std when more than one seed ran."""
    return f"{a['mean_ppl']:.2f}" + (f" ± {a['std_ppl']:.2f}" if a["seeds"] > 1 else "")


def dmoe_scaling() -> str:
    """The DMoE scaling curve (dmoe_builtin.json): mean ± std over the seeds each row ran."""
    d = _read(RESULTS / "dmoe_builtin.json")
    rows = []
    for m, systems in d["curve"].items():
        for name, a in systems.items():
            rows.append([f"{m}x", _SYSTEMS.get(name, name), str(a["seeds"]), f"{a['tokens_seen']:,}",
                         _ppl_cell(a), f"{a['mean_bpb']:.4f}", _millions(a["params_total"]),
                         _millions(a["params_active"])])
    return _table(["budget", "system", "seeds", "tokens", "mean ppl", "mean bits/byte", "params total",
                   "params active"], rows)


def dmoe_vs_cpt() -> str:
    """DMoE against dense CPT at each budget of the scaling curve (dmoe_builtin.json)."""
    d = _read(RESULTS / "dmoe_builtin.json")
    rows = []
    for m, systems in d["curve"].items():
        if "dmoe" not in systems or "cpt" not in systems:
            continue
        a, c = systems["dmoe"], systems["cpt"]
        rows.append([f"{m}x", f"{a['tokens_seen']:,}", str(min(a["seeds"], c["seeds"])), _ppl_cell(a), _ppl_cell(c),
                     f"{a['mean_ppl'] / c['mean_ppl'] - 1:+.1%}"])
    return _table(["budget", "tokens per system", "seeds", "DMoE", "dense CPT", "DMoE vs CPT"], rows)


def dmoe_baselines() -> str:
    """Every system at each budget that ran the baselines (dmoe_builtin.json), against DMoE; largest first."""
    d = _read(RESULTS / "dmoe_builtin.json")
    points = sorted(((m, s) for m, s in d["curve"].items() if "xelm" in s), key=lambda kv: -int(kv[0]))
    blocks = []
    for m, systems in points:
        ref = systems["dmoe"]
        rows = [[_SYSTEMS.get(k, k), str(v["seeds"]), _ppl_cell(v), f"{v['mean_ppl'] / ref['mean_ppl'] - 1:+.1%}",
                 _millions(v["params_total"]), f"{v['params_total'] / ref['params_total']:.2f}x"]
                for k, v in systems.items()]
        blocks.append(f"At {m}x ({ref['tokens_seen']:,} tokens per system):\n\n" + _table(
            ["system", "seeds", "mean ppl", "vs DMoE", "params total", "params vs DMoE"], rows))
    return "\n".join(blocks)


def probe_settings() -> str:
    """The deviation probe's settings on the shipped base (probe_settings.json)."""
    d = _read(RESULTS / "probe_settings.json")
    ref = d["rows"][0]

    def corr(a, b) -> float:
        n = len(a)
        xs = [a[i][j] for i in range(n) for j in range(i + 1, n)]
        ys = [b[i][j] for i in range(n) for j in range(i + 1, n)]
        return statistics.correlation(xs, ys)

    def groups(gs) -> str:
        return " ".join("{" + " ".join(g) + "}" for g in gs)

    rows = []
    for r in d["rows"]:
        s = r["setting"]
        rows.append([f"{s['steps']} steps, LR {s['lr']:g}, seed {s['seed']}", f"{r['wall_s']:.0f}",
                     f"{corr(r['similarity'], ref['similarity']):.3f}", groups(r["groups"]), f"{r['ari_genus']:.2f}",
                     f"{r['layer_spread']:.3f}", " ".join(map(str, r["layers"])) or "none"])
    s0 = ref["setting"]
    t = d["twelve"]
    return _table(["probe", "s / 6 langs", f"similarity corr. vs {s0['steps']} steps, LR {s0['lr']:g}, seed 0",
                   f"K = {ref['k']} groups", "ARI vs genus", "layer spread (max/min)", "layers ε = 0.6"], rows) + (
        f"\n{len(t['langs'])} languages ({' '.join(t['langs'])}), the first probe, K = {t['k']}: {groups(t['groups'])}, "
        f"ARI vs genus {t['ari_genus']:.2f} ({t['wall_s']:.0f} s).\n")


TABLES: dict[str, Callable[[], str]] = {"probe-settings": probe_settings, "bases": bases, "demo": demo, "demo-new-language": demo_new_language,
                                        "expansion": expansion, "dmoe-scaling": dmoe_scaling,
                                        "dmoe-vs-cpt": dmoe_vs_cpt, "dmoe-baselines": dmoe_baselines}


# --- rewriting ----------------------------------------------------------------------------------------------------


def render(text: str, where: str = "") -> tuple[str, list[str]]:
    """`text` with every results block regenerated, and the names of the blocks whose content changed."""
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise SystemExit(f"{where}: unknown results table {name!r}; known: {', '.join(TABLES)}")
        body = TABLES[name]()
        if body != m.group("body"):
            changed.append(name)
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(sub, text), changed


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(RESULTS.glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report stale blocks (exit 1 if any)")
    args = ap.parse_args(argv)
    stale = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        new, changed = render(text, str(path.relative_to(ROOT)))
        stale += [f"{path.relative_to(ROOT)}: {name}" for name in changed]
        if changed and not args.check:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(new, encoding="utf-8")
            tmp.replace(path)
    if args.check and stale:
        print("stale results tables (run python tools/results_tables.py):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    for s in stale if not args.check else []:
        print(f"rewrote {s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
