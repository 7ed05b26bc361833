"""Routing analysis of an MoE model on the built-in corpus: do the paper's findings hold, and what does it cost?

The paper ("Leveraging Routing Dynamics in MoE Models for Efficient Language Adaptation", docs/methods.md §4) finds
(1) language specialisation is strongest in the final MoE layers, (2) languages share routing in the early and
middle layers, (3) routing JSD between languages tracks their lexical (token) overlap. This script collects
routing counts with `langmoe.methods.routing` at equal token budgets (every language cut to the smallest one's
count), answers each question from the numbers with bootstrap intervals and a permutation (Mantel) test over
languages, compares every layer with the random-router control on the *same backbone* (the model with its routers
re-initialised, `reinit_routers`) as the per-layer excess over it, and measures the cost of collection against a
plain forward pass over the same token blocks (target: <= 1.1x).

Cost is measured in CPU seconds of this process (`time.process_time`, 1 torch thread by default), interleaving
plain and collecting passes and taking medians, so other processes' load barely moves it.

    python benchmarks/routing_builtin.py --model PATH/TO/MOE --out benchmarks/results/routing_builtin

Works on any MoE folder (a stock transformers MoE or a langmoe-upcycled model) with tokenizer files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _script import clear_own_files, command_line, run_main  # noqa: E402

# parents and held-out children of the issue (gl <- pt/es, uk <- ru, nb <- da/sv) plus a few unrelated languages
DEFAULT_LANGS = ["en", "de", "fr", "es", "pt", "gl", "ru", "uk", "da", "sv", "nb", "fi", "ar", "hi", "zh"]


def measure_overhead(model, tokenizer, corpus, langs, window: int, batch_size: int, tokens: int, repeats: int):
    """Median CPU seconds of plain forwards vs forwards with routing capture + counting, same blocks."""
    from langmoe.data.packing import pack_corpus
    from langmoe.methods.routing.routers import require_moe
    from langmoe.models.router_recorder import RouterRecorder

    layers = require_moe(model)
    blocks = pack_corpus(corpus, tokenizer, langs, "test", window, max_tokens_per_lang=tokens)
    batches = [blocks.tokens[i : i + batch_size] for i in range(0, len(blocks), batch_size)]
    model.eval()

    def plain():
        for b in batches:
            model(input_ids=b, use_cache=False)

    def collecting():  # what collect_routing does per batch (langmoe.models.routing.iter_routing)
        with RouterRecorder(model, accumulate=False) as rec:
            for b in batches:
                model(input_ids=b, use_cache=False)
                got = {o.layer: o.topk_idx for o in rec.last_outputs()}
                for r in layers:
                    torch.bincount(got[r.layer].reshape(-1), minlength=r.num_experts)

    times = {"plain": [], "collect": []}
    with torch.no_grad():
        plain()  # warm-up
        for _ in range(repeats):
            for name, fn in (("plain", plain), ("collect", collecting)):
                t0 = time.process_time()
                fn()
                times[name].append(time.process_time() - t0)
    p, c = statistics.median(times["plain"]), statistics.median(times["collect"])
    return {"tokens": int(blocks.lengths.sum()), "plain_cpu_s": p, "collect_cpu_s": c, "ratio": c / p,
            "repeats": repeats}


def findings(m: dict, control: dict | None = None) -> dict:
    """Answer the paper's three questions from the metrics, with the numbers (and intervals) that decide them."""
    spec = np.asarray(m["specialisation"])
    jsd = np.asarray(m["mean_pairwise_jsd"])
    n = len(spec)
    third = max(n // 3, 1)
    last, middle = slice(n - third, n), slice(third, max(n - third, third + 1))
    out = {
        "specialisation_per_layer": dict(zip(map(str, m["layers"]), spec.round(4).tolist(), strict=True)),
        "q1_specialisation_highest_in_final_layers": bool(int(np.argmax(spec)) >= n - third),
        "q1_argmax_layer": m["layers"][int(np.argmax(spec))],
        "q2_mean_jsd_middle": float(jsd[middle].mean()),
        "q2_mean_jsd_final": float(jsd[last].mean()),
        "q2_middle_shares_more_than_final": bool(jsd[middle].mean() < jsd[last].mean()),
        "intervals": m.get("intervals"),
    }
    corr = m.get("overlap_vs_last_layer_jsd") or {}
    out["q3_overlap_vs_jsd"] = corr
    mt = corr.get("mantel") or {}
    out["q3_more_overlap_less_jsd"] = None if mt.get("r") is None else bool(mt["r"] < 0 and mt["p"] < 0.05)
    if control is not None:
        out["control"] = excess_over_control(m, control)
        out["control_overlap_vs_jsd"] = control.get("overlap_vs_last_layer_jsd")
    return out


def excess_over_control(m: dict, c: dict) -> dict:
    """Per layer: trained minus random-router control, and whether the bootstrap intervals are apart."""
    out = {}
    for key in ("specialisation", "mean_pairwise_jsd"):
        rows = []
        for j, layer in enumerate(m["layers"]):
            row = {"layer": layer, "trained": m[key][j], "control": c[key][j], "excess": m[key][j] - c[key][j]}
            if m.get("intervals") and c.get("intervals"):
                t, k = m["intervals"][key][j], c["intervals"][key][j]
                row.update(trained_ci=t, control_ci=k, apart=bool(t[0] > k[1] or t[1] < k[0]))
            rows.append(row)
        out[key] = rows
    return out


def _ci(m: dict, key: str, j: int) -> str:
    iv = (m.get("intervals") or {}).get(key)
    return f" [{iv[j][0]:.4f}, {iv[j][1]:.4f}]" if iv else ""


def _control_lines(f: dict) -> list[str]:
    c = f.get("control")
    if not c:
        return []
    lines = ["", "Random-router control on the same backbone (routers re-initialised, everything else as trained), "
             "same languages, tokens and seed; excess = trained − control; *apart* = the 95% bootstrap intervals "
             "do not overlap:", "",
             "| MoE layer | specialisation trained | control | excess | apart | mean JSD trained | control | excess "
             "| apart |", "|---|---|---|---|---|---|---|---|---|"]
    for s, j in zip(c["specialisation"], c["mean_pairwise_jsd"], strict=True):
        lines.append(f"| {s['layer']} | {s['trained']:.4f} | {s['control']:.4f} | {s['excess']:+.4f} | "
                     f"{s.get('apart', 'n/a')} | {j['trained']:.4f} | {j['control']:.4f} | {j['excess']:+.4f} | "
                     f"{j.get('apart', 'n/a')} |")
    return lines


def write_markdown(path: Path, args, m: dict, f: dict, cost: dict) -> None:
    yes = {True: "yes", False: "no", None: "n/a"}
    corr = f["q3_overlap_vs_jsd"]
    iv = m.get("intervals") or {}
    lines = [
        "# Routing analysis on the built-in corpus",
        "",
        f"Command: `{args.command}`",
        "",
        f"Model layers {m['layers']}, experts {m['num_experts']}, languages {', '.join(m['langs'])}, "
        f"counts: {m['kind']}, log base {m['log_base']}; equal token budgets: "
        f"{min(m['tokens'].values())} `test` tokens per language; intervals: {int(100 * iv.get('level', 0.95))}% "
        f"bootstrap over blocks of text ({iv.get('n_boot', 'n/a')} resamples, seed {iv.get('seed', 'n/a')}).",
        "",
        "| MoE layer | specialisation [95% CI] | mean pairwise JSD [95% CI] |",
        "|---|---|---|",
        *[f"| {layer} | {s:.4f}{_ci(m, 'specialisation', j)} | {d:.4f}{_ci(m, 'mean_pairwise_jsd', j)} |"
          for j, (layer, s, d) in enumerate(zip(m["layers"], m["specialisation"], m["mean_pairwise_jsd"],
                                                strict=True))],
        *_control_lines(f),
        "",
        f"1. Specialisation highest in the final third of the MoE layers: "
        f"**{yes[f['q1_specialisation_highest_in_final_layers']]}** (maximum at layer {f['q1_argmax_layer']}).",
        f"2. Middle layers share routing more than the final ones (mean JSD {f['q2_mean_jsd_middle']:.4f} vs "
        f"{f['q2_mean_jsd_final']:.4f}): **{yes[f['q2_middle_shares_more_than_final']]}**.",
        f"3. More token overlap, lower last-layer JSD (r < 0, Mantel p < 0.05): "
        f"**{yes[f['q3_more_overlap_less_jsd']]}**. {corr.get('sentence', '')} (Pair-wise p-values, which treat "
        f"the pairs as independent: {_corr_text(corr)}.)",
        "",
        *([f"   The random-router control: {f['control_overlap_vs_jsd'].get('sentence', '')}", ""]
          if f.get("control_overlap_vs_jsd") else []),
        f"Collection cost: {cost['collect_cpu_s']:.3f} CPU-s vs {cost['plain_cpu_s']:.3f} CPU-s for a plain forward "
        f"over the same {cost['tokens']} tokens: **{cost['ratio']:.3f}x** (median of {cost['repeats']}; target <= 1.1x).",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def _corr_text(c: dict) -> str:
    """The pair-wise overlap/JSD correlation as a sentence, not a JSON dict."""
    if not c or c.get("pearson_r") is None:
        return "too few language pairs"
    return (f"Pearson r = {c['pearson_r']:.2f}, p = {c['pearson_p']:.1e}; Spearman rho = {c['spearman_rho']:.2f}, "
            f"p = {c['spearman_p']:.1e}; {c['pairs']} language pairs")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="MoE model folder")
    ap.add_argument("--corpus", default="builtin")
    ap.add_argument("--langs", nargs="+", default=DEFAULT_LANGS)
    ap.add_argument("--tokens-per-lang", type=int, default=20_000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--soft", action="store_true")
    ap.add_argument("--overhead-tokens", type=int, default=4_000, help="tokens per language for the cost check")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-control", action="store_true", help="skip the random-router control")
    ap.add_argument("--control-seed", type=int, default=0, help="seed of the re-initialised routers")
    ap.add_argument("--out", default="benchmarks/results/routing_builtin")
    args = ap.parse_args(argv)
    args.command = command_line("routing_builtin.py", argv)
    torch.set_num_threads(args.threads)

    from langmoe.data.corpus import open_corpus
    from langmoe.io import write_json
    from langmoe.methods.routing.pipeline import analyse_routing
    from langmoe.models.moe_io import load_model_any

    model, tok = load_model_any(args.model)
    corpus = open_corpus(args.corpus)
    langs = [x for v in args.langs for x in v.split(",") if x]
    window = min(args.window, getattr(model.config, "max_position_embeddings", args.window))
    out = Path(args.out)
    clear_own_files(out)  # our own files beside langmoe's: else the folder is "foreign"
    m = analyse_routing(model, tok, corpus, langs, out, tokens_per_lang=args.tokens_per_lang, soft=args.soft,
                        window=window, batch_size=args.batch_size)
    control = None
    if not args.no_control:  # the same backbone with fresh routers, written next to the trained one
        from langmoe.methods.routing.routers import reinit_routers

        ctrl, _ = load_model_any(args.model)
        reinit_routers(ctrl, seed=args.control_seed)
        control = analyse_routing(ctrl, tok, corpus, langs, out.with_name(out.name + "_control"),
                                  tokens_per_lang=args.tokens_per_lang, soft=args.soft, window=window,
                                  batch_size=args.batch_size)
    f = findings(m, control)
    cost = measure_overhead(model, tok, corpus, langs[:3], window, args.batch_size, args.overhead_tokens,
                            args.repeats)
    write_json(out / "findings.json", {"findings": f, "cost": cost, "args": vars(args)})
    write_markdown(out / "RESULTS.md", args, m, f, cost)
    print((out / "RESULTS.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    run_main(main, __file__)
