"""DMoE against its baselines on the built-in corpus: every system, several seeds, mean ± std, equal token budgets.

Runs `langmoe.pipeline.run.run_recipe` once per seed (each seed its own run folder, so an interrupted benchmark
resumes stage by stage), then aggregates per system: mean-over-languages perplexity and bits per byte (mean ± std
over seeds), per-language perplexity (mean over seeds), total/active parameters and tokens seen.

    python benchmarks/dmoe_builtin.py --recipe recipes/dmoe.yaml --seeds 0 1 2 --out runs/bench-dmoe
    python benchmarks/dmoe_builtin.py             # benchmarks/dmoe_builtin.yaml, every system, 3 seeds

Writes `<out>/benchmark.json` and prints a table. Seeds change model-side randomness (router init, data order);
the deviation groups are recomputed per seed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from langmoe.config import load_recipe, parse_recipe
from langmoe.io import write_json
from langmoe.pipeline.run import run_recipe

ALL = ["base", "dmoe", "dmoe_random", "cpt", "xelm", "btx"]


def aggregate(summaries: list[dict]) -> dict:
    """Per system: mean ± std over seeds of the mean ppl/bpb; per-language mean ppl; params; tokens seen."""
    out: dict[str, dict] = {}
    for name in summaries[0]["systems"]:
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=None, help="recipe YAML (default: benchmarks/dmoe_builtin.yaml)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--systems", nargs="+", default=None,
                    help=f"systems to run (default: the recipe's, here {' '.join(ALL)}); each keeps its recipe settings")
    ap.add_argument("--out", default="runs/bench-dmoe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="override the recipe's model (an HF folder)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.recipe or Path(__file__).with_name("dmoe_builtin.yaml")
    summaries = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        over = {"seed": seed, "threads": args.threads}
        if args.model:
            over["model"] = args.model
        recipe = load_recipe(path, over)
        if args.systems:  # a subset of the recipe's entries, with their settings (unknown names: defaults)
            by_name = {e.name: e.dump() for e in recipe.systems}
            data = recipe.model_dump(mode="json")
            recipe = parse_recipe({**data, "systems": [by_name.get(n, n) for n in args.systems]})
        print(f"seed {seed}: {recipe.name} -> {args.out}/seed-{seed}", file=sys.stderr)
        summaries.append(run_recipe(recipe, Path(args.out) / f"seed-{seed}",
                                    log=lambda m: print(f"  {m}", file=sys.stderr)))
    agg = aggregate(summaries)
    result = {"recipe": str(path), "seeds": args.seeds, "note": summaries[0]["note"],
              "budget_tokens": summaries[0]["budget_tokens"], "languages": summaries[0]["languages"],
              "systems": agg, "wall_s": time.perf_counter() - t0}
    write_json(Path(args.out) / "benchmark.json", result)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{Path(str(path)).name}: {len(args.seeds)} seeds, budget {result['budget_tokens']:,} tokens",
              caption=result["note"])
    for col in ("system", "mean ppl", "mean bpb", "params total", "params active", "tokens seen"):
        t.add_column(col, justify="left" if col == "system" else "right")
    for name, a in agg.items():
        t.add_row(name, f"{a['mean_ppl']:.2f} ± {a['std_ppl']:.2f}", f"{a['mean_bpb']:.4f} ± {a['std_bpb']:.4f}",
                  f"{a['params_total']:,}", f"{a['params_active']:,}", f"{a['tokens_seen']:,}")
    Console().print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
