"""Fold a later run of benchmarks/dmoe_builtin.py (new seeds of a multiplier, or systems that had not run there) into
the recorded curve, when the earlier runs' folders are gone and only their aggregate is left.

A recorded row holds mean and std over its seeds, not the seeds' values. With one or two seeds those values are
exact (two values are mean ± std/√2), so the merged mean ± std is the one all seeds' runs would give; a row of three
or more seeds is refused (its values cannot be recovered). Systems the new run has and the recorded curve does not
are added as they are.

    python benchmarks/dmoe_builtin_merge.py --recorded benchmarks/results/dmoe_builtin.json \
        --new runs/bench-eu/benchmark.json --multiplier 8 --note "seed 0 at 8x: ..." \
        --plot benchmarks/results/dmoe_builtin_scaling.png
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from langmoe.io import read_json, write_json


def seed_values(mean: float, std: float, seeds: int) -> list[float]:
    """The values behind a mean ± sample std of one or two seeds."""
    if seeds == 1:
        return [mean]
    if seeds == 2:
        half = std / math.sqrt(2)
        return [mean - half, mean + half]
    raise SystemExit(f"a row of {seeds} seeds cannot be split back into its values: rerun from the run folders")


def merge_row(old: dict, new: dict) -> dict:
    """`old` (recorded, 1-2 seeds) and `new` (other seeds) as one row over all their seeds."""
    out = dict(old)
    for metric in ("ppl", "bpb"):
        values = (seed_values(old[f"mean_{metric}"], old[f"std_{metric}"], old["seeds"])
                  + seed_values(new[f"mean_{metric}"], new[f"std_{metric}"], new["seeds"]))
        out[f"mean_{metric}"] = statistics.fmean(values)
        out[f"std_{metric}"] = statistics.stdev(values)
    n_old, n_new = old["seeds"], new["seeds"]
    out["ppl_per_lang"] = {k: (old["ppl_per_lang"][k] * n_old + new["ppl_per_lang"][k] * n_new) / (n_old + n_new)
                           for k in old["ppl_per_lang"]}
    out["seeds"] = n_old + n_new
    return out


def merge(recorded: dict, new: dict, multiplier: str) -> dict:
    """The recorded curve with the new run's rows at `multiplier` merged in (the new run's seeds must be others)."""
    old_point, new_point = recorded["curve"][multiplier], new["curve"][multiplier]
    for name, row in new_point.items():
        if name not in old_point:
            old_point[name] = row
            continue
        if any(row[k] != old_point[name][k] for k in ("tokens_seen", "params_total")):
            raise SystemExit(f"{name} at {multiplier}x: tokens or parameters differ from the recorded run")
        old_point[name] = merge_row(old_point[name], row)
    return recorded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recorded", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--multiplier", required=True)
    ap.add_argument("--note", required=True, help="what was merged, appended to the recorded note")
    ap.add_argument("--plot", default=None, help="redraw the scaling plot of the merged curve here (a .png)")
    args = ap.parse_args(argv)
    recorded, new = read_json(args.recorded), read_json(args.new)
    merged = merge(recorded, new, args.multiplier)
    merged["note"] = (merged.get("note", "") + " " + args.note).strip()
    merged.setdefault("merged", []).append(
        {"command": " ".join(["python benchmarks/dmoe_builtin_merge.py", *(argv if argv is not None else sys.argv[1:])]),
         "new_command": new["command"], "multiplier": args.multiplier})
    write_json(Path(args.recorded), merged)
    if args.plot:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from dmoe_builtin import plot

        plot(merged["curve"], Path(args.plot))
    for name, row in merged["curve"][args.multiplier].items():
        print(f"{args.multiplier}x {name}: {row['seeds']} seeds, ppl {row['mean_ppl']:.2f} ± {row['std_ppl']:.2f}, "
              f"bpb {row['mean_bpb']:.4f} ± {row['std_bpb']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
