"""How many tokens per step the paper's AdamW deviation probe needs (docs/dmoe-analysis.md, "Probe size").

For each `grad_accum` (tokens per step = micro_batch_size × grad_accum × block_len) probe the same languages twice
(seeds 0 and 1) from the built-in base and report: the correlation of the two similarity matrices (off-diagonal),
of the two per-layer deviation profiles, the layer spread (max/min mean deviation; < 1.1 = flat), and whether the
two seeds give the same K groups. Writes <out>/probe_stability.json and prints a table.

    python benchmarks/dmoe_probe_stability.py --out /tmp/probe --accum 1 2 4 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin")
    p.add_argument("--langs", default="en,de,nl,fr,es,it,ru,uk,pl")
    p.add_argument("--groups", type=int, default=3)
    p.add_argument("--accum", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--block-len", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=150_000)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    import torch

    from langmoe.data.corpus import open_corpus
    from langmoe.data.packing import pack_corpus
    from langmoe.methods.dmoe.deviation import PAPER_PROBE, measure_deviation
    from langmoe.methods.dmoe.grouping import attribute_grouping, group_languages
    from langmoe.models.base import load_model_and_tokenizer

    torch.set_num_threads(2)
    langs = a.langs.split(",")
    model, tok = load_model_and_tokenizer(a.model)
    blocks = pack_corpus(open_corpus("builtin"), tok, langs, "train", a.block_len, max_tokens_per_lang=a.max_tokens,
                         cache_dir=Path(a.out) / "cache")
    genus = sorted(map(sorted, attribute_grouping(langs, "genus").groups))
    rows = []
    for accum in a.accum:
        t0 = time.perf_counter()
        cfg = {**PAPER_PROBE, "steps": a.steps, "lr": a.lr, "micro_batch_size": a.micro_batch_size,
               "grad_accum": accum, "block_len": a.block_len, "stability": True}
        res = measure_deviation(model, blocks, cfg, out_dir=Path(a.out) / f"accum{accum}", langs=langs)
        g1 = group_languages(langs, res.similarity, num_groups=a.groups).groups
        g2 = group_languages(langs, res.stability.similarity, num_groups=a.groups).groups
        row = {"grad_accum": accum, "tokens_per_step": a.micro_batch_size * accum * a.block_len,
               "similarity_corr": res.stability.similarity_corr, "layer_corr": res.stability.layer_corr,
               "layer_spread": res.layer_spread, "same_groups": sorted(map(sorted, g1)) == sorted(map(sorted, g2)),
               "genus_seed0": sorted(map(sorted, g1)) == genus, "genus_seed1": sorted(map(sorted, g2)) == genus,
               "groups_seed0": g1, "groups_seed1": g2, "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("groups")}), flush=True)
    out = Path(a.out) / "probe_stability.json"
    out.write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2))
    print("| accum | tokens/step | sim corr | layer corr | spread | same groups | genus (s0/s1) | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['grad_accum']} | {r['tokens_per_step']} | {r['similarity_corr']:.3f} | "
              f"{r['layer_corr'] if r['layer_corr'] is None else round(r['layer_corr'], 3)} | "
              f"{r['layer_spread'] if r['layer_spread'] is None else round(r['layer_spread'], 3)} | "
              f"{r['same_groups']} | {r['genus_seed0']}/{r['genus_seed1']} | {r['seconds']:.0f} |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
