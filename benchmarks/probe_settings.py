"""The paper's AdamW deviation probe (kind adamw, every parameter, raw cosines) on the shipped base: settings.

Each row probes six languages (es it de nl ru uk: Romance, Germanic, East Slavic) on the shipped `builtin` base
with one (steps, LR, seed) setting and reports the wall time, the correlation of its similarity matrix with the
reference row's, the K = 3 groups, their ARI against genus, the layer spread (max/min mean FFN deviation) and the
layers ε = 0.6 selects. A last row probes twelve languages with the reference setting, K = 4.

    python benchmarks/probe_settings.py --out benchmarks/results/probe_settings.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SIX = ["es", "it", "de", "nl", "ru", "uk"]
TWELVE = ["es", "it", "pt", "de", "nl", "sv", "ru", "uk", "bg", "pl", "cs", "fi"]
REFERENCE = {"steps": 4, "lr": 3e-4, "seed": 0}  # the shipped recipes' probe (grad_accum 4: 4,096 tokens a step)
ROWS = [REFERENCE, {"steps": 4, "lr": 3e-4, "seed": 1}, {"steps": 2, "lr": 3e-4, "seed": 0},
        {"steps": 10, "lr": 3e-4, "seed": 0}, {"steps": 10, "lr": 1e-4, "seed": 0},
        {"steps": 4, "lr": 8e-6, "seed": 0}, {"steps": 4, "lr": 1e-3, "seed": 0}]


def _corr(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    iu = np.triu_indices(a.shape[0], 1)
    return float(np.corrcoef(a[iu], b[iu])[0, 1])


def probe(model_path: str, langs: list[str], setting: dict, k: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langmoe.data.corpus import open_corpus
    from langmoe.methods.dmoe.deviation import PAPER_PROBE, measure_deviation_on_corpus
    from langmoe.methods.dmoe.grouping import agreement, attribute_grouping, group_languages
    from langmoe.methods.dmoe.layer_selection import select_layers

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    t0 = time.perf_counter()
    r = measure_deviation_on_corpus(model, tok, open_corpus("builtin"), langs,
                                    {**PAPER_PROBE, **setting, "stability": False, "max_tokens_per_lang": 50_000})
    wall = time.perf_counter() - t0
    g = group_languages(langs, r.similarity, num_groups=k)
    ari = agreement(g, attribute_grouping(langs, "genus")).ari
    return {"setting": setting, "langs": langs, "k": k, "wall_s": wall, "similarity": r.similarity,
            "groups": [list(x) for x in g.groups], "ari_genus": ari, "layer_spread": r.layer_spread,
            "layers": list(select_layers(r.dev_ffn, 0.6).selected)}


def main(argv: list[str] | None = None) -> int:
    import torch

    from langmoe.models.base import resolve_model_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="markdown file (a .json with the records goes next to it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = str(resolve_model_path(args.model))
    rows = []
    for s in ROWS:
        print(f"probe {s}", file=sys.stderr, flush=True)
        rows.append(probe(path, SIX, s, 3))
    print(f"probe {REFERENCE} on 12 languages", file=sys.stderr, flush=True)
    twelve = probe(path, TWELVE, REFERENCE, 4)
    ref = rows[0]["similarity"]
    lines = [
        "# Deviation probe settings on the shipped base", "",
        f"Command: `python benchmarks/probe_settings.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"({args.threads} thread(s); 8 sequences × 128 tokens × grad_accum 4 = 4,096 tokens a step).", "",
        f"| probe | s / 6 langs | similarity corr. vs {REFERENCE['steps']} steps, LR {REFERENCE['lr']:g}, seed 0 | "
        "K = 3 groups | ARI vs genus | layer spread | layers ε = 0.6 |",
        "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["setting"]
        lines.append(f"| {s['steps']} steps, LR {s['lr']:g}, seed {s['seed']} | {r['wall_s']:.0f} | "
                     f"{_corr(r['similarity'], ref):.3f} | {' '.join('{' + ' '.join(g) + '}' for g in r['groups'])} | "
                     f"{r['ari_genus']:.2f} | {r['layer_spread']:.3f} | {' '.join(map(str, r['layers']))} |")
    lines += ["", f"Twelve languages ({' '.join(TWELVE)}), reference probe, K = 4: "
              f"{' '.join('{' + ' '.join(g) + '}' for g in twelve['groups'])}, ARI vs genus "
              f"{twelve['ari_genus']:.2f}, {twelve['wall_s']:.0f} s.", ""]
    dest = Path(args.out)
    dest.write_text("\n".join(lines), encoding="utf-8")
    dest.with_suffix(".json").write_text(json.dumps({"rows": rows, "twelve": twelve}, indent=1), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
