"""DMoE against its baselines: a scaling curve (1x, 2x, 4x, 8x tokens) over several seeds, with a plot.

At every budget multiplier m the recipe's `budget_steps` (and each stage's steps, stage 1 kept at its share) is
multiplied by m; DMoE and dense CPT run at every point, X-ELM, BTX and DMoE with random groups at the largest
(`--full-at`), the untouched base once. Each seed probes the languages once (at the first multiplier); the other
multipliers reuse its groups and MoE layers, so the curve compares training budgets, not probe noise. Every run
has its own folder (`<out>/x<m>/seed-<s>`), so an interrupted benchmark resumes stage by stage.

    python benchmarks/dmoe_builtin.py --model runs/base-strong --seeds 0 1 2 --multipliers 1 2 4 8
    python benchmarks/dmoe_builtin.py --tiny --out /tmp/bench-tiny     # seconds: the logic, not a result

Writes `<out>/benchmark.json` (per multiplier and system: mean ± std over seeds of the mean ppl / bpb, per-language
ppl, parameters, tokens), `<out>/benchmark.md` (tables and the reading against the paper's claims) and
`<out>/scaling.png` (mean ppl vs training tokens).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from langmoe.config import load_recipe, parse_recipe
from langmoe.io import read_json, write_json, write_text

EVERY_POINT = ["dmoe", "cpt"]
LARGEST_ONLY = ["dmoe_random", "xelm", "btx"]


def tiny_overrides() -> dict[str, Any]:
    """A recipe small enough for a CPU test in seconds: 4 languages, K = 2, a handful of steps."""
    probe = {"steps": 1, "lr": 3e-4, "grad_accum": 1, "stability": False}
    dm = {"num_groups": 2, "top_k": 2, "deviation": probe, "stage1": {"steps": 1}, "stage2": {"steps": 3},
          "hard_routing_eval": False}
    return {
        "languages": ["en", "de", "fr", "es"], "budget_steps": 4, "save_every": 0,
        "data": {"block_len": 32, "micro_batch_size": 2, "tau": 0.3, "max_train_tokens_per_lang": 2000},
        "eval": {"window": 32, "stride": 16, "max_chars_per_lang": 300, "routing_tokens_per_lang": 256},
        "systems": ["base", {"name": "dmoe", **dm}, {"name": "dmoe_random", **dm}, "cpt",
                    {"name": "xelm", "ensemble": "posterior"}, {"name": "btx", "moe_steps": 2}],
    }


def scale_recipe(data: dict[str, Any], m: int, systems: list[str], fixed: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe dict at multiplier `m`: budget and every step count × m (stage shares kept), only `systems`,
    and (after the first multiplier) the first one's groups and MoE layers fixed."""
    data = {**data, "budget_steps": data["budget_steps"] * m}
    out_systems = []
    for entry in data["systems"]:
        e = dict(entry) if isinstance(entry, dict) else {"name": entry}
        if e["name"] not in systems:
            continue
        for stage in ("stage1", "stage2"):
            if isinstance(e.get(stage), dict) and "steps" in e[stage]:
                e[stage] = {**e[stage], "steps": e[stage]["steps"] * m}
        if e["name"] == "btx" and e.get("moe_steps"):
            e["moe_steps"] = e["moe_steps"] * m
        if fixed and e["name"] in ("dmoe", "dmoe_random"):
            e.update(fixed)
        out_systems.append(e)
    data["systems"] = out_systems
    return data


def aggregate(summaries: list[dict]) -> dict:
    """Per system: mean ± std over seeds of the mean ppl/bpb; per-language mean ppl; params; tokens seen."""
    out: dict[str, dict] = {}
    names = list(dict.fromkeys(n for s in summaries for n in s["systems"]))  # union: some seeds run fewer
    for name in names:
        rows = [s["systems"][name] for s in summaries if name in s["systems"]]
        ppl = [r["mean_ppl"] for r in rows]
        bpb = [r["mean_bpb"] for r in rows]
        out[name] = {
            "seeds": len(rows),
            "mean_ppl": statistics.fmean(ppl),
            "std_ppl": statistics.stdev(ppl) if len(ppl) > 1 else 0.0,
            "mean_bpb": statistics.fmean(bpb),
            "std_bpb": statistics.stdev(bpb) if len(bpb) > 1 else 0.0,
            "ppl_per_lang": {k: statistics.fmean(r["ppl"][k] for r in rows) for k in rows[0]["ppl"]},
            "params_total": rows[0]["params_total"],
            "params_active": rows[0]["params_active"],
            "tokens_seen": rows[0]["tokens_seen"],
        }
    return out


def reading(curve: dict[str, dict], largest: str) -> list[str]:
    """Plain sentences against the paper's claims (DMoE >= 10% below CPT, below X-ELM with >= 3x fewer parameters,
    below random groups), whichever way they go."""
    lines = []
    for m, systems in curve.items():
        if "dmoe" in systems and "cpt" in systems:
            d, c = systems["dmoe"]["mean_ppl"], systems["cpt"]["mean_ppl"]
            noise = max(systems["dmoe"]["std_ppl"], systems["cpt"]["std_ppl"])
            if min(systems["dmoe"]["seeds"], systems["cpt"]["seeds"]) < 2:
                verdict = ("is below" if d < c else "is above") + " (one seed: no noise estimate)"
            else:
                verdict = "beats" if d < c - noise else "loses to" if d > c + noise else "ties (within one std)"
            lines.append(f"{m}x: DMoE {d:.2f} vs CPT {c:.2f} ({d / c - 1:+.1%}): DMoE {verdict} CPT; "
                         f"the paper's claim is <= -10%.")
    top = curve.get(largest, {})
    if "dmoe" in top:
        d = top["dmoe"]
        for other, what in (("xelm", "X-ELM"), ("dmoe_random", "random groups"), ("btx", "BTX")):
            if other in top:
                o = top[other]
                ratio = o["params_total"] / d["params_total"]
                lines.append(f"{largest}x: DMoE {d['mean_ppl']:.2f} vs {what} {o['mean_ppl']:.2f} "
                             f"({d['mean_ppl'] / o['mean_ppl'] - 1:+.1%}; {what} has {ratio:.2f}x DMoE's parameters)")
    return lines


def plot(curve: dict[str, dict], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, rel) = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted({n for s in curve.values() for n in s})
    for name in names:
        pts = [(s[name]["tokens_seen"], s[name]["mean_ppl"], s[name]["std_ppl"]) for s in curve.values()
               if name in s and s[name]["tokens_seen"] > 0]
        if not pts:
            continue
        x, y, e = zip(*sorted(pts), strict=True)
        color = plt.cm.tab10(names.index(name) % 10)  # the same colour in both panels
        style = {"marker": "o" if len(pts) > 1 else "s", "linestyle": "-" if len(pts) > 1 else "none"}
        ax.errorbar(x, y, yerr=e, capsize=3, label=name, color=color, **style)
        gaps = [(s[name]["tokens_seen"], 100 * (s[name]["mean_ppl"] / s["cpt"]["mean_ppl"] - 1)) for s in curve.values()
                if name in s and "cpt" in s and s[name]["tokens_seen"] > 0]
        if gaps and name != "cpt":
            gx, gy = zip(*sorted(gaps), strict=True)
            rel.plot(gx, gy, label=name, color=color, **style)
    base = [s["base"]["mean_ppl"] for s in curve.values() if "base" in s]
    if base:
        ax.axhline(base[0], color="grey", linestyle=":", label="base")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("mean test perplexity (± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    rel.axhline(0, color="black", linewidth=1, label="dense CPT")
    rel.axhline(-10, color="grey", linestyle="--", linewidth=1, label="paper's claim for DMoE")
    rel.set_xscale("log")
    rel.set_xlabel("training tokens")
    rel.set_ylabel("mean test perplexity vs dense CPT (%)")
    rel.legend(fontsize=8)
    rel.grid(alpha=0.3)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=120)
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = [f"# DMoE scaling curve: {result['recipe']}", "",
             f"Command: `{result['command']}`  ", f"Seeds: {result['seeds']}; model: {result['model']}; "
             f"wall {result['wall_s']:.0f} s", "",
             "| multiplier | system | seeds | tokens | mean ppl | mean bits/byte | params total | params active |",
             "|---|---|---|---|---|---|---|---|"]
    for m, systems in result["curve"].items():
        for name, a in systems.items():
            lines.append(f"| {m}x | {name} | {a['seeds']} | {a['tokens_seen']:,} | {a['mean_ppl']:.2f} ± {a['std_ppl']:.2f} | "
                         f"{a['mean_bpb']:.4f} ± {a['std_bpb']:.4f} | {a['params_total']:,} | "
                         f"{a['params_active']:,} |")
    lines += ["", "Reading:", ""] + [f"- {x}" for x in result["reading"]] + ["", "![scaling](scaling.png)", ""]
    return "\n".join(lines)


def finished_summary(run_dir: Path, systems: list[str]) -> dict:
    """A finished run's summary.json, refused when it misses a system (the run is not finished for this command)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run the benchmark without --from-summaries first")
    summary = read_json(path)
    missing = [x for x in systems if x not in summary.get("systems", {})]
    if missing:
        raise SystemExit(f"{path} has no {', '.join(missing)}: run the benchmark without --from-summaries first")
    return summary


def run_or_read(recipe, run_dir: Path, from_summaries: bool) -> dict:
    """The summary of one recipe run: run (or resume) it into `run_dir`, or read its finished summary."""
    if from_summaries:
        return finished_summary(run_dir, recipe.system_names)
    from langmoe.pipeline.run import run_recipe

    return run_recipe(recipe, run_dir, log=lambda s: print(f"  {s}", file=sys.stderr))


def probed_analysis(run_dir: Path) -> dict[str, Any] | None:
    """The groups and MoE layers a run's probe chose, to fix them in the seed's other runs (None before a probe)."""
    if not (run_dir / "groups.json").is_file():
        return None
    return {"groups": read_json(run_dir / "groups.json")["groups"],
            "moe_layers": read_json(run_dir / "layers.json")["selected"]}


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=None, help="recipe YAML (default: benchmarks/dmoe_builtin.yaml)")
    ap.add_argument("--model", default=None, help="the base to study (an HF folder; default: the recipe's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--multipliers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--full-at", type=int, nargs="+", default=None,
                    help="multipliers that also run X-ELM, BTX and random groups (default: the largest)")
    ap.add_argument("--full-seeds", type=int, nargs="+", default=None,
                    help="seeds that run X-ELM, BTX and random groups at --full-at (default: every seed)")
    ap.add_argument("--largest-seeds", type=int, nargs="+", default=None,
                    help="seeds that run the largest multiplier (default: every seed); the others stop below it")
    ap.add_argument("--from-summaries", action="store_true",
                    help="run nothing: aggregate the finished runs' summary.json files (each must hold every system "
                         "this command would run there)")
    ap.add_argument("--out", default="runs/bench-dmoe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="shrink everything to seconds (tests the logic only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.recipe or Path(__file__).with_name("dmoe_builtin.yaml")
    over: dict[str, Any] = {"threads": args.threads}
    if args.model:
        over["model"] = args.model
    base_data = load_recipe(path, over).model_dump(mode="json", exclude_unset=False)
    raw = __import__("yaml").safe_load(Path(path).read_text(encoding="utf-8"))
    base_data["systems"] = raw["systems"]  # the entries as written (their own settings, steps to scale)
    if args.tiny:
        base_data.update(tiny_overrides())
    mults = sorted(set(args.multipliers))
    full_at = set(args.full_at or [mults[-1]])
    out = Path(args.out)
    t0 = time.perf_counter()
    per_mult: dict[int, list[dict]] = {m: [] for m in mults}
    full_seeds = set(args.seeds if args.full_seeds is None else args.full_seeds)
    largest_seeds = set(args.seeds if args.largest_seeds is None else args.largest_seeds)
    for seed in args.seeds:
        fixed = None
        for m in mults:
            if m == mults[-1] and len(mults) > 1 and seed not in largest_seeds:
                continue
            full = m in full_at and seed in full_seeds
            systems = (["base"] if m == mults[0] else []) + EVERY_POINT + (LARGEST_ONLY if full else [])
            data = scale_recipe({**base_data, "seed": seed}, m, systems, fixed)
            recipe = parse_recipe(data)
            run_dir = out / f"x{m}" / f"seed-{seed}"
            print(f"seed {seed}, {m}x: {recipe.budget_tokens:,} tokens, {', '.join(recipe.system_names)} -> "
                  f"{run_dir}", file=sys.stderr)
            per_mult[m].append(run_or_read(recipe, run_dir, args.from_summaries))
            fixed = fixed or probed_analysis(run_dir)
    curve = {str(m): aggregate(per_mult[m]) for m in mults}
    result = {"recipe": str(path), "model": base_data["model"], "seeds": args.seeds, "multipliers": mults,
              "command": " ".join(["python benchmarks/dmoe_builtin.py", *(argv if argv is not None else sys.argv[1:])]),
              "languages": base_data["languages"], "curve": curve, "reading": reading(curve, str(max(full_at & set(mults), default=mults[-1]))),
              "wall_s": time.perf_counter() - t0}
    write_json(out / "benchmark.json", result)
    plot(curve, out / "scaling.png")
    write_text(out / "benchmark.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
