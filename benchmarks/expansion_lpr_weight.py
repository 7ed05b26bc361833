"""MoE-LPR's forgetting/learning trade-off against the LPR weight (stage 2's `L_NTP + w · L_LPR`), one seed.

Same settings as `benchmarks/expansion_builtin.py` (200 stage-1 + 50 stage-2 steps of 8 x 128 tokens, replay 0.1,
stage-2 LR 1e-2, held-out test split, 20,000 characters per language), only `lpr_weight` varies. Prints per weight
the Old and New mean ppl and, per MoE layer, the share of old-language tokens whose first choice is the frozen
expert 0 and the mean combine weight they give it.

    python benchmarks/expansion_lpr_weight.py --model builtin-g0 --weights 0.1 1 10 --work runs/lpr-weight
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from langmoe.methods import moe_lpr  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin-g0")
    ap.add_argument("--new", default="el,hu,tr")
    ap.add_argument("--old", default="en,zh,es")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="runs/lpr-weight")
    a = ap.parse_args(argv)
    print("| lpr weight | Old ppl (base) | New ppl | old tokens to expert 0 first, per layer | their weight on it |")
    print("|---|---|---|---|---|")
    for w in a.weights:
        cfg = {"model": a.model, "new": a.new, "old": a.old, "seed": a.seed, "threads": a.threads, "lpr_weight": w,
               "stage1": {"steps": 200, "lr": 1e-3}, "stage2": {"steps": 50, "lr": 1e-2}, "replay_share": 0.1,
               "eval": {"window": 128, "stride": 64, "max_chars_per_lang": 20000}}
        rec = moe_lpr.run(cfg, Path(a.work) / f"w{w:g}").record
        layers = rec["routing"]["layers"].values()
        first = ", ".join(f"{x['old_to_expert0']:.2f}" for x in layers)
        weight = ", ".join(f"{x['old_expert0_weight']:.2f}" for x in layers)
        print(f"| {w:g} | {rec['after']['old_mean']:.2f} ({rec['before']['old_mean']:.2f}) | "
              f"{rec['after']['new_mean']:.1f} | {first} | {weight} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
