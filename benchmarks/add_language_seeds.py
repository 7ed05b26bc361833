"""`langmoe add-language` over several seeds: the new language and the old languages' change, with their noise.

Runs the documented command itself (`langmoe add-language ...`) once per seed and routing mode on a DMoE model
folder (e.g. the demo's: `langmoe demo --out DIR`, then `DIR/stages/dmoe/stage2/model`), and writes a table of
mean ± std over the seeds: the new language under the untouched base, before, after; the old languages' mean and
worst change; the share of old tokens that reach the new expert.

    python benchmarks/add_language_seeds.py --model DIR/stages/dmoe/stage2/model --lang ga --base builtin \\
        --seeds 0 1 2 --routing gate router --out benchmarks/results/add_language_demo.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def _ms(xs: list[float], fmt: str, unit: str = "") -> str:
    """Mean ± std over seeds (`fmt` for the mean, e.g. "{:+.2f}"; the std never signed)."""
    mean = fmt.format(statistics.fmean(xs)) + unit
    if len(xs) > 1:
        return f"{mean} ± {fmt.replace('+', '').format(statistics.stdev(xs))}{unit}"
    return mean


def main(argv: list[str] | None = None) -> int:
    from langmoe.cli import main as cli

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--lang", required=True)
    ap.add_argument("--base", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--routing", nargs="+", default=["gate", "router"], choices=["gate", "router"])
    ap.add_argument("--steps", default="100")
    ap.add_argument("--lr", default="1e-3")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--work", default="runs/add-language-seeds")
    ap.add_argument("--out", required=True, help="markdown table (a .json with the records goes next to it)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    records: dict[str, list[dict]] = {}
    for routing in args.routing:
        for seed in args.seeds:
            out = work / f"{routing}-seed{seed}"
            if not (out / "add_language.json").is_file():
                cmd = ["add-language", "--model", args.model, "--lang", args.lang, "--out", str(out),
                       "--steps", args.steps, "--lr", args.lr, "--seed", str(seed), "--routing", routing,
                       "--threads", args.threads] + (["--base", args.base] if args.base else [])
                print("langmoe " + " ".join(cmd), file=sys.stderr, flush=True)
                if cli(cmd) != 0:
                    return 1
            records.setdefault(routing, []).append(json.loads((out / "add_language.json").read_text())["results"][0])
    rows = []
    for routing, recs in records.items():
        rows.append("| " + " | ".join([
            routing, str(len(recs)),
            f"{recs[0]['base']['ppl']:.2f}" if recs[0].get("base") else "–",
            f"{recs[0]['before']['ppl']:.2f}",
            _ms([r["after"]["ppl"] for r in recs], "{:.2f}"),
            _ms([100 * r["old_mean_ppl_change"] for r in recs], "{:+.3f}", "%"),
            _ms([100 * max(r["old_ppl_change"].values()) for r in recs], "{:+.3f}", "%"),
            _ms([100 * r["intrusion_end"] for r in recs], "{:.2f}", "%"),
            _ms([r["after_hard"]["ppl"] for r in recs], "{:.2f}"),
        ]) + " |")
    command = "python benchmarks/add_language_seeds.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        f"# `langmoe add-language` over seeds: {args.lang}", "", f"Command: `{command}`", "",
        f"Model: `{args.model}`; seeds {args.seeds}; {args.steps} steps at LR {args.lr}; test split, the CLI's "
        "defaults otherwise (window 128 / stride 64, 6,000 characters per language).", "",
        f"| routing | seeds | {args.lang}: base | before | after (learned) | old mean Δ | old worst Δ | "
        f"old tokens to the new expert | after (hard by language) |",
        "|---|---|---|---|---|---|---|---|---|", *rows, ""])
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    dest.with_suffix(".json").write_text(json.dumps({"command": command, "records": records}, indent=1),
                                         encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
