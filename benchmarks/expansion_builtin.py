"""Expansion benchmark (issue 10): MoE-LPR, LayerMoE, their ablations and the dense baselines at equal tokens.

    python benchmarks/expansion_builtin.py --model M [--corpus builtin] [--new el,hu,tr --old en,zh,es]
        [--g2 as,hi,mr] [--seeds 0 1 2] [--stage1-steps 200 --stage2-steps 50] [--systems ...]
        [--work runs/expansion_builtin] [--out benchmarks/results/expansion_builtin.md]

Every system trains the same stage-1 steps on new-language text and the same stage-2 steps on new text + the same
old-language replay, with the same micro-batch and block length: equal token budgets by construction. Scores are
perplexities on the held-out `test` split; each cell is mean ± std over seeds. `--g2` adds the lifelong run
G0 -> G1 -> G2 (LayerMoE and MoE-LPR re-expanding their own G1 models) and reports every group before/after G2.
The model should be a base that never saw the new languages, or the numbers cannot show expansion honestly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from langmoe.methods import layermoe, moe_lpr  # noqa: E402

SYSTEMS = {  # name -> (module, settings on top of the shared ones)
    "full_ft": (moe_lpr, {"variant": "full_ft"}),
    "lora": (moe_lpr, {"variant": "lora"}),
    "moe_lpr": (moe_lpr, {}),
    "layermoe": (layermoe, {}),
    "layermoe_random": (layermoe, {"allocation": "random"}),
    "layermoe_nocls": (layermoe, {"top_k_cls": 0}),
}


def _mean_std(xs: list[float]) -> str:
    if not xs:
        return "-"
    m = statistics.fmean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m:.2f} ± {s:.2f}"


def shared_settings(a) -> dict[str, Any]:
    s: dict[str, Any] = {
        "model": a.model, "corpus": a.corpus, "new": a.new, "old": a.old, "block_len": a.block_len,
        "micro_batch_size": a.micro_batch_size, "max_train_tokens_per_lang": a.max_train_tokens,
        "stage1": {"steps": a.stage1_steps, "lr": a.lr}, "stage2": {"steps": a.stage2_steps, "lr": a.stage2_lr},
        "replay_share": a.replay_share, "threads": a.threads,
        "eval": {"window": a.eval_window, "stride": a.eval_window // 2, "max_chars_per_lang": a.eval_max_chars},
    }
    if a.experts:
        s["_experts"] = a.experts
    return s


def settings_for(name: str, shared: dict[str, Any], seed: int) -> tuple[Any, dict[str, Any]]:
    module, extra = SYSTEMS[name]
    cfg = {k: v for k, v in shared.items() if not k.startswith("_")} | extra | {"seed": seed}
    if "_experts" in shared:
        cfg["num_experts" if module is moe_lpr else "uniform_experts"] = shared["_experts"]
    return module, cfg


def run_benchmark(a) -> dict[str, Any]:
    work = Path(a.work)
    shared = shared_settings(a)
    rows: dict[str, dict[str, list[float]]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    for seed in a.seeds:
        for name in a.systems:
            module, cfg = settings_for(name, shared, seed)
            done = work / f"seed{seed}" / name / "expansion.json"
            # a finished run is read back, so an interrupted benchmark resumes where it stopped
            rec = json.loads(done.read_text()) if done.is_file() else module.run(cfg, done.parent).record
            records.setdefault(name, []).append(rec)
            r = rows.setdefault(name, {"old": [], "new": [], "new_experts": [], "tokens": []})
            r["old"].append(rec["after"]["old_mean"])
            r["new"].append(rec["after"]["new_mean"])
            r["new_experts"].append(float(rec.get("new_experts_total", 0)))
            r["tokens"].append(float(sum(s["tokens_seen"] for s in rec["stages"].values())))
            b = rows.setdefault("base", {"old": [], "new": [], "new_experts": [], "tokens": []})
            if len(b["old"]) < len(rows[name]["old"]):
                b["old"].append(rec["before"]["old_mean"])
                b["new"].append(rec["before"]["new_mean"])
                b["new_experts"].append(0.0)
                b["tokens"].append(0.0)
    out: dict[str, Any] = {"rows": rows, "lifelong": None}
    if a.g2:
        out["lifelong"] = run_lifelong(a, shared, work)
    out["records"] = {k: [{"after": r["after"], "new_experts": r.get("new_experts"),
                           "similarity": r.get("similarity", {}).get("S")} for r in v] for k, v in records.items()}
    return out


def run_lifelong(a, shared: dict[str, Any], work: Path) -> dict[str, Any]:
    g0, g1, g2 = list(a.old.split(",")), list(a.new.split(",")), list(a.g2.split(","))
    table: dict[str, dict[str, list[float]]] = {}
    for seed in a.seeds:
        for name in ("moe_lpr", "layermoe"):
            module, cfg1 = settings_for(name, shared, seed)
            first = work / f"seed{seed}" / name
            if not (first / "expansion.json").is_file():
                module.run(cfg1, first)
            cfg2 = dict(cfg1) | {"model": str(first), "new": g2, "old": g0 + g1}
            done = work / f"seed{seed}" / f"{name}_g2" / "expansion.json"
            rec = json.loads(done.read_text()) if done.is_file() else module.run(cfg2, done.parent).record
            t = table.setdefault(name, {})
            for group, langs in (("G0", g0), ("G1", g1), ("G2", g2)):
                for when in ("before", "after"):
                    vals = [rec[when]["ppl"][x] for x in langs if x in rec[when]["ppl"]]
                    t.setdefault(f"{group} {when}", []).append(statistics.fmean(vals))
            t.setdefault("new experts G1+G2", []).append(
                float(sum(json.loads((first / "expansion.json").read_text())["new_experts"].values())
                      + rec["new_experts_total"]))
    return table


def markdown(a, result: dict[str, Any], argv: list[str]) -> str:
    lines = ["# Expansion benchmark: MoE-LPR and LayerMoE at equal token budgets", "",
             "Reproduce with:", "", "    python benchmarks/expansion_builtin.py " + " ".join(argv), "",
             f"Model `{a.model}`, corpus `{a.corpus}`, old {a.old}, new {a.new}; seeds {a.seeds}; "
             f"{a.stage1_steps} stage-1 + {a.stage2_steps} stage-2 steps of {a.micro_batch_size}x{a.block_len} "
             f"tokens; held-out `test` split perplexity (mean over languages), mean ± std over seeds.", "",
             "| system | Old ppl | New ppl | new experts | tokens |", "| --- | --- | --- | --- | --- |"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {_mean_std(r['old'])} | {_mean_std(r['new'])} | "
                     f"{statistics.fmean(r['new_experts']):.0f} | {statistics.fmean(r['tokens']):.0f} |")
    if result.get("lifelong"):
        lines += ["", f"## Lifelong G0 -> G1 -> G2 (G2 = {a.g2}): mean ppl per group before/after the G2 step", ""]
        cols = list(next(iter(result["lifelong"].values())))
        lines += ["| system | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
        for name, t in result["lifelong"].items():
            lines.append(f"| {name} | " + " | ".join(_mean_std(t[c]) for c in cols) + " |")
    lines += ["", "## Targets (issue 10), read from the numbers above", ""]
    lines += [f"- {t}: **{'met' if ok else 'not met'}** ({why})" for t, ok, why in targets(result)]
    return "\n".join(lines) + "\n"


def targets(result: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Each target of the issue with whether the means meet it and the numbers that decide it."""
    rows = {k: {c: statistics.fmean(v) for c, v in r.items() if v} for k, r in result["rows"].items()}
    out = []
    base = rows.get("base")
    if base:
        for name in ("moe_lpr", "layermoe"):
            if name in rows:
                ch = rows[name]["old"] / base["old"] - 1
                out.append((f"{name}: Old within +1% of the base", ch <= 0.01, f"{ch:+.2%}"))
                out.append((f"{name}: New far below the base", rows[name]["new"] < 0.8 * base["new"],
                            f"{rows[name]['new']:.2f} vs {base['new']:.2f}"))
        if "full_ft" in rows:
            ch = rows["full_ft"]["old"] / base["old"] - 1
            out.append(("full fine-tuning: Old rises", ch > 0.01, f"{ch:+.2%}"))
    if "layermoe" in rows and "moe_lpr" in rows:
        lm, lpr = rows["layermoe"], rows["moe_lpr"]
        fewer = 1 - lm["new_experts"] / lpr["new_experts"]
        out.append(("layermoe: New <= MoE-LPR's with >= 40% fewer new experts",
                    lm["new"] <= lpr["new"] and fewer >= 0.4,
                    f"New {lm['new']:.2f} vs {lpr['new']:.2f}, {fewer:.0%} fewer experts"))
        out.append(("layermoe: Old no worse than MoE-LPR's", lm["old"] <= lpr["old"],
                    f"{lm['old']:.2f} vs {lpr['old']:.2f}"))
        for abl, what in (("layermoe_random", "random allocation"), ("layermoe_nocls", "no classifier")):
            if abl in rows:
                worse = rows[abl]["new"] > lm["new"] or rows[abl]["old"] > lm["old"]
                out.append((f"{what} worse than LayerMoE (Old or New)", worse,
                            f"Old {rows[abl]['old']:.2f} vs {lm['old']:.2f}, New {rows[abl]['new']:.2f} vs "
                            f"{lm['new']:.2f}"))
    for name, t in (result.get("lifelong") or {}).items():
        for g in ("G0", "G1"):
            if f"{g} before" in t:
                ch = statistics.fmean(t[f"{g} after"]) / statistics.fmean(t[f"{g} before"]) - 1
                out.append((f"lifelong {name}: {g} within +1% after adding G2", ch <= 0.01, f"{ch:+.2%}"))
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", default="builtin")
    ap.add_argument("--new", default="el,hu,tr")
    ap.add_argument("--old", default="en,zh,es")
    ap.add_argument("--g2", default=None, help="a second group for the lifelong run, e.g. as,hi,mr")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--experts", type=int, default=None, help="MoE-LPR experts per layer (also LayerMoE's reference)")
    ap.add_argument("--stage1-steps", type=int, default=200)
    ap.add_argument("--stage2-steps", type=int, default=50)
    ap.add_argument("--lr", type=float, default=1e-3, help="stage 1")
    ap.add_argument("--stage2-lr", type=float, default=1e-2)
    ap.add_argument("--replay-share", type=float, default=0.1)
    ap.add_argument("--block-len", type=int, default=128)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--max-train-tokens", type=int, default=400_000)
    ap.add_argument("--eval-window", type=int, default=128)
    ap.add_argument("--eval-max-chars", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="runs/expansion_builtin")
    ap.add_argument("--out", default=None, help="markdown results file")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    result = run_benchmark(a)
    text = markdown(a, result, argv)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text, encoding="utf-8")
        Path(a.out).with_suffix(".json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
