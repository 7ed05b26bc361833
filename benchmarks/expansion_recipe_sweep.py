"""Stage-1 / stage-2 learning-rate sweep of MoE-LPR at the benchmark's budget (issue 22: which official values the
tiny scale can keep). One JSON line per setting: Old / New held-out ppl, Old three ways, old-token routing.

    python benchmarks/expansion_recipe_sweep.py --out runs/expansion_sweep \
        [--grid '{"name": {"stage1": {"steps": 200, "lr": 1e-3}, "stage2": {"steps": 50, "lr": 1e-2}}}']

Settings that share stage 1 (same `_work` folder and stage-1 settings) train it once. Seed 0, builtin-g0, old
en zh es, new hu tr uk, 8 x 128-token micro-batches, held-out test text (20,000 characters per language).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from langmoe.methods import moe_lpr  # noqa: E402

GRID = {  # the sweep recorded in docs/expansion.md
    "s1lr1e-3": {"stage1": {"steps": 200, "lr": 1e-3}, "stage2": {"steps": 50, "lr": 1e-2}, "_work": "s1_1e-3"},
    "s1lr5e-5": {"stage1": {"steps": 200, "lr": 5e-5}, "stage2": {"steps": 50, "lr": 1e-2}, "_work": "s1_5e-5"},
    "s1lr1e-3_s2lr5e-5": {"stage1": {"steps": 200, "lr": 1e-3}, "stage2": {"steps": 50, "lr": 5e-5},
                          "_work": "s1_1e-3"},
    "s1lr1e-3_s2lr1e-3": {"stage1": {"steps": 200, "lr": 1e-3}, "stage2": {"steps": 50, "lr": 1e-3},
                          "_work": "s1_1e-3"},
}
BASE = {"model": "builtin-g0", "corpus": "builtin", "new": "hu,tr,uk", "old": "en,zh,es", "block_len": 128,
        "micro_batch_size": 8, "max_train_tokens_per_lang": 400000, "threads": 1, "seed": 0,
        "eval": {"window": 128, "stride": 64, "max_chars_per_lang": 20000}}


def line_of(name: str, over: dict, rec: dict, seconds: float) -> dict:
    r = rec["routing"]["layers"]
    layers = sorted(r, key=int)
    return {"name": name, "over": over, "s": round(seconds), "old": rec["after"]["old_mean"],
            "new": rec["after"]["new_mean"], "old_base": rec["before"]["old_mean"],
            "new_base": rec["before"]["new_mean"],
            "ways": {w: rec["old_ways"][w]["mean"]["ppl"] for w in rec["old_ways"]},
            "e0_top1": [round(r[k]["old_to_expert0"], 3) for k in layers],
            "e0_weight": [round(r[k]["old_expert0_weight"], 3) for k in layers]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--grid", default=None, help="JSON {name: settings} instead of the recorded grid")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, over in (json.loads(a.grid) if a.grid else GRID).items():
        if (out / name / "expansion.json").is_file():
            continue
        cfg = {**BASE, **{k: v for k, v in over.items() if k != "_work"},
               "work_dir": str(out / "work" / over.get("_work", name))}
        t = time.time()
        line = line_of(name, over, moe_lpr.run(cfg, out / name).record, time.time() - t)
        with open(out / "sweep.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
