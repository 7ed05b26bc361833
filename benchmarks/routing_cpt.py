"""The routing paper's central comparison on the built-in model: routing before and after continued pretraining.

The paper continues pretraining an English-centric MoE (OLMoE) on new languages and compares the base with the
continued model per MoE layer: routing entropy (with English alone and the other languages) and mean pairwise JSD
(with and without English). Its reading: continued multilingual pretraining diffuses routing (higher entropy, lower
JSD) in the early and middle layers, and language specialisation stays or grows in the final layers.

Here `builtin-moe` (12 languages) is continued on languages it never saw (default gl uk nb: the held-out children,
uniform mix, every parameter trained, AdamW, warmup + cosine, the project trainer) for `--steps` steps, and both
models are routed on the same `test` text of `--langs` at equal token budgets (`langmoe routing --compare`'s
library call). The answers are read from the numbers, either way.

    python benchmarks/routing_cpt.py --model builtin-moe --out benchmarks/results/routing_cpt

Each per-layer change (continued − base) carries a paired bootstrap interval (the same units of text resampled
for both models); `python benchmarks/routing_cpt.py --from-folder benchmarks/results/routing_cpt` redoes the
reading and RESULTS.md from a written folder's counts without training or routing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _script import clear_own_files, command_line, run_main  # noqa: E402

DEFAULT_LANGS = ["en", "de", "fr", "es", "pt", "gl", "ru", "uk", "da", "sv", "nb", "fi", "ar", "hi", "zh"]


def continue_pretraining(model, tok, corpus, langs, args) -> dict:
    """All parameters, the new languages' `train` split, uniform mix; returns the trainer's summary."""
    from langmoe.data.packing import pack_corpus
    from langmoe.data.samplers import TemperatureSampler
    from langmoe.train.trainer import TrainConfig, train

    need = args.steps * args.batch_size * args.block_len
    blocks = pack_corpus(corpus, tok, langs, "train", args.block_len, max_tokens_per_lang=need)
    sampler = TemperatureSampler(blocks, args.batch_size, seed=args.seed)
    cfg = TrainConfig(steps=args.steps, lr=args.lr, weight_decay=0.1, warmup_ratio=0.05,
                      micro_batch_size=args.batch_size, seed=args.seed, progress=False,
                      log_every=max(args.steps // 10, 1))
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="routing_cpt_") as tmp:
        res = train(model, sampler, cfg, Path(tmp) / "train")
    model.eval()
    return {"tokens": res.tokens_seen, "first_loss": res.losses[0], "last_loss": res.losses[-1]}


def _direction(ent_ci, jsd_ci) -> str:
    """A layer's change read from its intervals: 'diffused' (entropy up and JSD down, both intervals clear of 0),
    'sharpened' (the reverse), else 'unclear'."""
    if ent_ci[0] > 0 and jsd_ci[1] < 0:
        return "diffused"
    if ent_ci[1] < 0 and jsd_ci[0] > 0:
        return "sharpened"
    return "unclear"


def reading(cmp: dict) -> dict:
    """The paper's two claims, answered from the per-layer differences (continued − base); with the paired
    bootstrap intervals (`difference_intervals`) also per layer and as yes / no / partly / not distinguishable."""
    d = cmp["difference"]
    n = len(d["entropy_mean"])
    early = slice(0, max(n - 1, 1))  # every MoE layer but the last
    base_last = cmp["model"]["mean_jsd"][-1]
    out = {
        "early_middle_entropy_change": float(np.mean(d["entropy_mean"][early])),
        "early_middle_jsd_change": float(np.mean(d["mean_jsd"][early])),
        "last_layer_jsd_change": float(d["mean_jsd"][-1]),
        "diffused_early_middle": bool(np.mean(d["entropy_mean"][early]) > 0 and np.mean(d["mean_jsd"][early]) < 0),
        "last_layer_specialisation_kept": bool(d["mean_jsd"][-1] >= -0.1 * abs(base_last)),
    }
    iv = cmp.get("difference_intervals")
    if not iv:
        return out
    layers = cmp["model"]["layers"]
    out["per_layer"] = [{"layer": layers[j], "entropy_change": d["entropy_mean"][j], "entropy_ci": iv["entropy_mean"][j],
                         "jsd_change": d["mean_jsd"][j], "jsd_ci": iv["mean_jsd"][j],
                         "direction": _direction(iv["entropy_mean"][j], iv["mean_jsd"][j])} for j in range(n)]
    dirs = [r["direction"] for r in out["per_layer"][early]]
    out["diffused_early_middle_read"] = ("yes" if all(x == "diffused" for x in dirs) else
                                         "no" if not any(x == "diffused" for x in dirs) else "partly")
    lo, hi = iv["mean_jsd"][-1]
    bound = -0.1 * abs(base_last)
    out["last_layer_kept_read"] = "yes" if lo >= bound else "no" if hi < bound else "not distinguishable"
    out["interval_level"], out["n_boot"] = iv["level"], iv["n_boot"]
    return out


def _interval_lines(r: dict, focus: str | None) -> list[str]:
    if "per_layer" not in r:
        return []
    lines = ["", f"Change continued − base per MoE layer with its {100 * r['interval_level']:.0f}% paired bootstrap "
                 f"interval ({r['n_boot']} draws over the same text's units, both models):", "",
             "| MoE layer | entropy change [95% CI] | mean JSD change [95% CI] | read |", "|---|---|---|---|"]
    for x in r["per_layer"]:
        lines.append(f"| {x['layer']} | {x['entropy_change']:+.4f} [{x['entropy_ci'][0]:+.4f}, {x['entropy_ci'][1]:+.4f}]"
                     f" | {x['jsd_change']:+.4f} [{x['jsd_ci'][0]:+.4f}, {x['jsd_ci'][1]:+.4f}] | {x['direction']} |")
    return lines


def write_markdown(path: Path, args, cmp: dict, cpt: dict, r: dict) -> None:
    yes = {True: "yes", False: "no"}
    a, b, f = cmp["model"], cmp["other"], cmp["focus"]
    lines = ["# Routing before and after continued pretraining (builtin-moe)", "", f"Command: `{args.command}`", ""]
    if getattr(args, "reread", None):
        lines += [f"Reading redone from the folder's counts with `{args.reread}` (no training, no routing).", ""]
    lines += [f"Continued on {', '.join(args.cpt_langs)} ({cpt['tokens']} training tokens, {args.steps} steps, lr "
              f"{args.lr:g}, seed {args.seed}; loss {cpt['first_loss']:.3f} -> {cpt['last_loss']:.3f}); routed on "
              f"{len(cmp['langs'])} languages' `test` text at equal budgets ({min(cmp['tokens']['model'].values())} "
              f"tokens each). Machine shared with other jobs (1 torch thread).", "",
              f"| MoE layer | entropy base | entropy continued | {f} entropy base | {f} continued | mean JSD base | "
              f"continued | JSD without {f} base | continued |", "|---|---|---|---|---|---|---|---|---|"]
    for j, layer in enumerate(a["layers"]):
        lines.append(f"| {layer} | {a['entropy_mean'][j]:.4f} | {b['entropy_mean'][j]:.4f} | "
                     f"{a['entropy_focus'][j]:.4f} | {b['entropy_focus'][j]:.4f} | {a['mean_jsd'][j]:.4f} | "
                     f"{b['mean_jsd'][j]:.4f} | {a['mean_jsd_without_focus'][j]:.4f} | "
                     f"{b['mean_jsd_without_focus'][j]:.4f} |")
    lines += _interval_lines(r, f)
    c1 = r.get("diffused_early_middle_read", yes[r["diffused_early_middle"]])
    c2 = r.get("last_layer_kept_read", yes[r["last_layer_specialisation_kept"]])
    lines += ["", f"1. Continued pretraining diffuses routing in the early and middle MoE layers (mean entropy change "
                  f"{r['early_middle_entropy_change']:+.4f}, mean JSD change {r['early_middle_jsd_change']:+.4f}"
                  + ("; read per layer from the intervals" if "per_layer" in r else "") + f"): **{c1}**.",
              f"2. Language specialisation kept in the last MoE layer (JSD change {r['last_layer_jsd_change']:+.4f}, "
              f"at most a 10% drop counts as kept" + ("; read on its interval" if "per_layer" in r else "")
              + f"): **{c2}**.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def reread(out: Path, argv) -> int:
    """The reading and RESULTS.md again from a written folder (routing_counts.json, compare_counts.json and
    findings.json): the comparison with its paired intervals is recomputed from the counts; nothing is trained."""
    from langmoe.io import read_json, write_json
    from langmoe.methods.routing.collect import RoutingCounts
    from langmoe.methods.routing.compare import compare_routing

    rec = read_json(out / "findings.json")
    args = argparse.Namespace(**rec["args"])
    args.reread = command_line("routing_cpt.py", argv)
    cmp = compare_routing(RoutingCounts.load(out / "routing_counts.json"),
                          RoutingCounts.load(out / "compare_counts.json"), args.focus)
    r = reading(cmp)
    write_json(out / "findings.json", {**rec, "reading": r, "reread": args.reread,
                                       "difference_intervals": cmp.get("difference_intervals")})
    write_markdown(out / "RESULTS.md", args, cmp, rec["cpt"], r)
    print((out / "RESULTS.md").read_text(encoding="utf-8"))
    return 0


def main(argv=None) -> int:
    argv_list = sys.argv[1:] if argv is None else list(argv)
    if argv_list[:1] == ["--from-folder"]:
        if len(argv_list) != 2:
            raise SystemExit("usage: routing_cpt.py --from-folder RESULTS_FOLDER")
        return reread(Path(argv_list[1]), argv_list)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin-moe")
    ap.add_argument("--corpus", default="builtin")
    ap.add_argument("--cpt-langs", nargs="+", default=["gl", "uk", "nb"])
    ap.add_argument("--langs", nargs="+", default=DEFAULT_LANGS)
    ap.add_argument("--focus", default="en")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--block-len", type=int, default=256)
    ap.add_argument("--tokens-per-lang", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/routing_cpt")
    args = ap.parse_args(argv)
    args.command = command_line("routing_cpt.py", argv)
    torch.set_num_threads(args.threads)

    from langmoe.data.corpus import open_corpus
    from langmoe.io import write_json
    from langmoe.methods.routing.pipeline import analyse_routing
    from langmoe.models.moe_io import load_model_any

    corpus = open_corpus(args.corpus)
    base, tok = load_model_any(args.model)
    continued, _ = load_model_any(args.model)
    cpt = continue_pretraining(continued, tok, corpus, args.cpt_langs, args)
    window = min(256, getattr(base.config, "max_position_embeddings", 256))
    out = Path(args.out)
    clear_own_files(out)  # our own files beside langmoe's: else the folder is "foreign"
    m = analyse_routing(base, tok, corpus, args.langs, out, tokens_per_lang=args.tokens_per_lang, window=window,
                        compare_model=continued, compare_focus=args.focus, names=("model", "other"))
    cmp = m["compare"]
    r = reading(cmp)
    write_json(out / "findings.json", {"reading": r, "cpt": cpt, "args": vars(args)})
    write_markdown(out / "RESULTS.md", args, cmp, cpt, r)
    print((out / "RESULTS.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    run_main(main, __file__)
