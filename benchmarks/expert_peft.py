"""Expert-level adaptation vs baselines at equal tokens: child perplexity, parent perplexity change, trainable share.

The paper's set-up (aditi184/moe-routing-adaptation): specific and shared experts are selected over a reference
pool of one high-resource language per family (`langmoe.methods.routing.selection.reference_pool`: the parent plus
the first `--ref-langs` language of every other family; default en es ru fi ar hi zh, the parent replacing its
family's member), routing counts collected once on the pool languages' `train` split (`--counts-split`; equal
budgets, and the built-in `valid` split of hi has under 1,000 tokens; the child is never routed for selection); the last 2 MoE layers are adapted; a mode
whose routing mask would leave the router no choice (allowed experts <= top-k) is refused and reported so.

Per mode (seft, ssft, aeft, lastn, full, lora) the learning rate is swept over `--lrs` (the paper's grid
1e-5 1e-4 4e-4 1e-3 4e-3) with the first seed and the best by child perplexity on the `valid` split is kept; then
every seed is trained at that LR and scored on the `test` split (evaluation routes freely), all at the same
steps x batch x block tokens. The targets: SSFT trains < 5% of the parameters, reaches the child perplexity of
`lastn` (the complete last 2 layers) within 2%, and raises the parent's perplexity less.

    python benchmarks/expert_peft.py --model builtin-moe --child gl --parent pt --seeds 0 1 2 \
        --out benchmarks/results/expert_peft

Works on any MoE folder with tokenizer files (stock transformers MoE or langmoe-upcycled).
`python benchmarks/expert_peft.py --from-json DIR/expert_peft.json` re-reads a recorded run (summary, 95% t
intervals over seeds, each expert mode against last-n and LoRA on the same seeds, each mode's child ppl at
last-n's parent cost along the sweep, RESULTS.md) without training; `--log run.log` fills the sweep's parent
changes from the run's own output where the json predates them.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _script import command_line, run_main  # noqa: E402

MODES = ["seft", "ssft", "aeft", "lastn", "full", "lora"]
PAPER_LRS = [1e-5, 1e-4, 4e-4, 1e-3, 4e-3]


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


EXPERT_MODES = ("seft", "ssft", "aeft")
BASELINES = ("lastn", "lora")


def t_interval(xs, level: float = 0.95):
    """Student-t interval of the mean over seeds ([x, x] for one value, None for none)."""
    from scipy.stats import t

    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return [m, m]
    h = t.ppf((1 + level) / 2, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5
    return [m - h, m + h]


def paired(runs_a: list[dict], runs_b: list[dict], child: str) -> dict | None:
    """Mode a against mode b on the same seeds (same batches): per seed the child ppl ratio a/b - 1 and the parent
    ppl change a - b (percentage points as a fraction); means, t intervals and a verdict on the child. None when
    they share no seed."""
    by_seed = {r["config"].get("seed"): r for r in runs_b}
    pairs = [(r, by_seed[r["config"].get("seed")]) for r in runs_a if r["config"].get("seed") in by_seed]
    if not pairs:
        return None
    ratio = [a["after"][child]["ppl"] / b["after"][child]["ppl"] - 1 for a, b in pairs]
    parent = [a["parent_ppl_change"] - b["parent_ppl_change"] for a, b in pairs]
    ci = t_interval(ratio)
    verdict = "lower" if ci[1] < 0 else "higher" if ci[0] > 0 else "not distinguishable"
    return {"seeds": len(pairs), "child_ppl_ratio_minus_1": statistics.fmean(ratio), "child_ppl_ratio_ci": ci,
            "parent_change_difference": statistics.fmean(parent), "parent_change_difference_ci": t_interval(parent),
            "child_ppl": verdict}


def matched_cost(sweep: dict, lrs, ref: str = "lastn") -> dict | None:
    """Child ppl on `valid` (first seed) of every swept mode at the parent ppl changes `ref` reached in its sweep:
    each mode's sweep points sorted by parent change, linearly interpolated between its two neighbours (None
    outside the mode's range). Compares the modes along their trade-off curve instead of at one LR each."""
    pts = {m: sorted((v["valid_parent_change"][str(lr)], v["valid_ppl"][str(lr)]) for lr in lrs)
           for m, v in sweep.items() if "valid_parent_change" in v}
    if ref not in pts:
        return None

    def at(points, x):
        for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
            if x0 <= x <= x1:
                return y0 if x1 == x0 else y0 + (x - x0) / (x1 - x0) * (y1 - y0)
        return None

    xs = [x for x, _ in pts[ref]]
    return {"ref": ref, "parent_change": xs, "child_ppl": {m: [at(p, x) for x in xs] for m, p in pts.items()}}


def sweep_parent_changes_from_log(sweep: dict, log: Path) -> None:
    """Fill `valid_parent_change` of a sweep recorded before it was stored, from the run's own log lines
    (`valid seed S MODE lr LR: ... parent +X.XX%`, 0.01-point precision)."""
    pat = re.compile(r"^valid seed \d+ (\w+)\s+lr ([0-9.e+-]+): .* parent ([+-][0-9.]+)%$")
    for line in log.read_text(encoding="utf-8").splitlines():
        m = pat.match(line.strip())
        if m and m[1] in sweep and "valid_ppl" in sweep[m[1]]:
            key = next(k for k in sweep[m[1]]["valid_ppl"] if float(k) == float(m[2]))
            sweep[m[1]].setdefault("valid_parent_change", {})[key] = float(m[3]) / 100


def summarise(runs: list[dict], child: str, parent: str, sweep: dict | None = None) -> dict:
    """Per mode: mean ± std and 95% t interval over seeds of child ppl after and parent ppl change, trainable
    share, the LR the sweep chose; refused modes with their reason; each expert mode against last-n and LoRA on
    the same seeds (`paired`); target checks."""
    by_mode: dict[str, list[dict]] = {}
    for r in runs:
        by_mode.setdefault(r["mode"], []).append(r)
    table: dict = {m: {"refused": v["refused"]} for m, v in (sweep or {}).items() if v.get("refused")}
    for mode, rs in by_mode.items():
        cm, cs = _mean_std([r["after"][child]["ppl"] for r in rs])
        pm, ps = _mean_std([r["parent_ppl_change"] for r in rs])
        table[mode] = {"child_ppl": cm, "child_ppl_std": cs, "parent_ppl_change": pm, "parent_ppl_change_std": ps,
                       "child_ppl_ci": t_interval([r["after"][child]["ppl"] for r in rs]),
                       "parent_ppl_change_ci": t_interval([r["parent_ppl_change"] for r in rs]),
                       "trainable_share": rs[0]["trainable_share"], "seeds": len(rs),
                       "child_ppl_before": rs[0]["before"][child]["ppl"], "train_tokens": rs[0]["train_tokens"],
                       "lr": rs[0]["config"]["lr"]}
    versus = {f"{m}_vs_{b}": paired(by_mode[m], by_mode[b], child)
              for m in EXPERT_MODES for b in BASELINES if m in by_mode and b in by_mode}
    targets = {}
    if "ssft" in table and "refused" not in table["ssft"]:
        s = table["ssft"]
        targets["ssft_share_below_5pct"] = s["trainable_share"] < 0.05
        if "lastn" in table and "refused" not in table["lastn"]:
            ln = table["lastn"]
            targets["ssft_child_ppl_within_2pct_of_lastn"] = s["child_ppl"] <= 1.02 * ln["child_ppl"]
            targets["ssft_parent_rise_smaller_than_lastn"] = s["parent_ppl_change"] < ln["parent_ppl_change"]
    return {"table": table, "versus": {k: v for k, v in versus.items() if v}, "targets": targets}


def _pct_ci(ci) -> str:
    return f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "—"


def _table_lines(t: dict) -> list[str]:
    lines = ["| mode | LR | trainable share | child ppl before | child ppl after (± sd) [95% CI] | "
             "parent ppl change (± sd) [95% CI, %] |", "|---|---|---|---|---|---|"]
    for mode in [m for m in MODES if m in t]:
        r = t[mode]
        if "refused" in r:
            lines.append(f"| {mode} | — | — | — | refused: {r['refused']} | — |")
            continue
        ci = r.get("child_ppl_ci")
        lines.append(f"| {mode} | {r['lr']:g} | {100 * r['trainable_share']:.3f}% | {r['child_ppl_before']:.3f} | "
                     f"{r['child_ppl']:.3f} ± {r['child_ppl_std']:.3f}"
                     + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + " | "
                     f"{100 * r['parent_ppl_change']:+.2f}% ± {100 * r['parent_ppl_change_std']:.2f} "
                     f"{_pct_ci(r.get('parent_ppl_change_ci'))} |")
    return lines


def _versus_lines(versus: dict) -> list[str]:
    if not versus:
        return []
    lines = ["", "Each expert mode against the baselines on the same seeds (same batches), 95% t intervals over "
                 "seeds:", "", "| comparison | seeds | child ppl ratio − 1 [95% CI, %] | child ppl | "
                 "parent ppl change difference [95% CI, points] |", "|---|---|---|---|---|"]
    for k, v in versus.items():
        lines.append(f"| {k.replace('_vs_', ' vs ')} | {v['seeds']} | {100 * v['child_ppl_ratio_minus_1']:+.2f} "
                     f"{_pct_ci(v['child_ppl_ratio_ci'])} | {v['child_ppl']} | "
                     f"{100 * v['parent_change_difference']:+.2f} {_pct_ci(v['parent_change_difference_ci'])} |")
    return lines


def write_markdown(path: Path, args, summary: dict, pool: list[str], sweep: dict) -> None:
    t = summary["table"]
    ran = [r for r in t.values() if "refused" not in r]
    tokens = ran[0]["train_tokens"] if ran else 0
    lines = ["# Expert-level adaptation vs baselines at equal tokens (the paper's set-up)", "",
             f"Command: `{args.command}`", ""]
    if getattr(args, "resummarised", None):
        lines += [f"Summary re-read from the recorded runs with `{args.resummarised}` (no training).", ""]
    lines += [f"Child `{args.child}` via parent `{args.parent}`; reference pool {', '.join(pool)} (one language per "
              f"family); last {args.last_n_used} MoE layer(s); LR per mode swept over {args.lrs} (seed "
              f"{args.seeds[0]}, best child ppl on `valid`); {len(args.seeds)} seed(s) at that LR scored on `test`; "
              f"{tokens} training tokens per run. Machine shared with other jobs (1 torch thread).", "",
              *_table_lines(t), *_versus_lines(summary.get("versus", {}))]
    lines += ["", "LR sweep (child ppl on `valid`, first seed):", "",
              "| mode | " + " | ".join(f"{lr:g}" for lr in args.lrs) + " |", "|---|" + "---|" * len(args.lrs)]
    for mode, v in sweep.items():
        if not v.get("refused"):
            lines.append(f"| {mode} | " + " | ".join(f"{v['valid_ppl'][str(lr)]:.3f}" for lr in args.lrs) + " |")
    if any("valid_parent_change" in v for v in sweep.values()):
        lines += ["", "LR sweep (parent ppl change on `valid`, first seed):", "",
                  "| mode | " + " | ".join(f"{lr:g}" for lr in args.lrs) + " |", "|---|" + "---|" * len(args.lrs)]
        lines += [f"| {mode} | " + " | ".join(f"{100 * v['valid_parent_change'][str(lr)]:+.2f}%" for lr in args.lrs)
                  + " |" for mode, v in sweep.items() if "valid_parent_change" in v]
    mc = matched_cost(sweep, args.lrs)
    if mc:
        lines += ["", f"Child ppl on `valid` at the parent cost {mc['ref']} paid in its sweep (first seed, each mode "
                      "interpolated linearly between its two neighbouring sweep points; — outside its range):", "",
                  "| parent ppl change | " + " | ".join(mc["child_ppl"]) + " |", "|---|" + "---|" * len(mc["child_ppl"])]
        lines += [f"| {100 * x:+.2f}% | " + " | ".join("—" if v[i] is None else f"{v[i]:.2f}"
                                                      for v in mc["child_ppl"].values()) + " |"
                  for i, x in enumerate(mc["parent_change"])]
    lines += ["", "Targets: " + (", ".join(f"{k}: **{'yes' if v else 'no'}**" for k, v in summary["targets"].items())
                                 or "n/a"), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def resummarise(path: Path, argv, log: Path | None = None) -> int:
    """Re-read a recorded expert_peft.json: the summary (intervals, paired comparisons) and RESULTS.md again,
    from its runs; nothing is trained. With `log` (the run's own output) the sweep's parent changes are filled
    in where the json predates them."""
    from langmoe.io import read_json, write_json

    rec = read_json(path)
    args = argparse.Namespace(**rec["args"])
    args.resummarised = command_line("expert_peft.py", argv)
    if log is not None:
        sweep_parent_changes_from_log(rec["sweep"], log)
    rec["summary"] = summarise(rec["runs"], args.child, args.parent, rec["sweep"])
    rec["resummarised"] = args.resummarised
    write_json(path, rec)
    write_markdown(path.parent / "RESULTS.md", args, rec["summary"], rec["reference_pool"], rec["sweep"])
    print((path.parent / "RESULTS.md").read_text(encoding="utf-8"))
    return 0


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", default="builtin")
    ap.add_argument("--child", default="gl")
    ap.add_argument("--parent", default="pt")
    ap.add_argument("--ref-langs", nargs="+", default=None,
                    help="candidate reference languages (default en es ru fi ar hi zh); one per family is kept")
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--lrs", nargs="+", type=float, default=PAPER_LRS, help="LR grid swept per mode")
    ap.add_argument("--last-n", type=int, default=None, help="default: the last 2 MoE layers (the paper)")
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--n-shared", type=int, default=3, help="shared experts of ssft (the paper's k in 1, 3, 5)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--block-len", type=int, default=128)
    ap.add_argument("--tokens-per-lang", type=int, default=20_000)
    ap.add_argument("--counts-split", default="train",
                    help="split of the pool languages routed for selection (train: the built-in valid split of hi "
                         "has under 1,000 tokens, and equal budgets would cut every language to that)")
    ap.add_argument("--eval-chars", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/expert_peft")
    args = ap.parse_args(argv)
    args.command = command_line("expert_peft.py", argv)
    return args


def _run(args, tok, corpus, counts, mode: str, lr: float, seed: int, split: str, block: int):
    from langmoe.methods.routing.adapt import AdaptConfig, prepare_adaptation, run_adaptation
    from langmoe.models.moe_io import load_model_any

    cfg = AdaptConfig(mode=mode, child=args.child, parent=args.parent, last_n=args.last_n, alpha=args.alpha,
                      n_shared=args.n_shared, steps=args.steps, lr=lr, batch_size=args.batch_size,
                      block_len=block, seed=seed, eval_chars=args.eval_chars, eval_split=split, pool=args.ref_langs)
    fresh, _ = load_model_any(args.model)
    plan = prepare_adaptation(fresh, cfg, counts)
    with tempfile.TemporaryDirectory(prefix="expert_peft_") as tmp:
        _, res = run_adaptation(fresh, tok, corpus, cfg, counts, tmp, plan=plan)
    print(f"{split} seed {seed} {mode:5} lr {lr:g}: share {100 * res['trainable_share']:.3f}%  child ppl "
          f"{res['before'][args.child]['ppl']:.3f} -> {res['after'][args.child]['ppl']:.3f}  parent "
          f"{100 * res['parent_ppl_change']:+.2f}%", flush=True)
    return res


def _sweep(args, tok, corpus, counts, block: int) -> dict:
    """Per mode: valid child ppl per LR (first seed) and the best LR, or why the mode is refused."""
    from langmoe.errors import LangmoeError

    out: dict = {}
    for mode in args.modes:
        try:
            res = {str(lr): _run(args, tok, corpus, counts, mode, lr, args.seeds[0], "valid", block)
                   for lr in args.lrs}
        except LangmoeError as e:
            out[mode] = {"refused": str(e)}
            print(f"{mode}: refused: {e}", flush=True)
            continue
        ppl = {lr: r["after"][args.child]["ppl"] for lr, r in res.items()}
        best = min(args.lrs, key=lambda lr: ppl[str(lr)])
        out[mode] = {"valid_ppl": ppl, "best_lr": best,
                     "valid_parent_change": {lr: r["parent_ppl_change"] for lr, r in res.items()}}
    return out


def main(argv=None) -> int:
    argv_list = sys.argv[1:] if argv is None else list(argv)
    if argv_list[:1] == ["--from-json"]:
        if len(argv_list) not in (2, 4) or (len(argv_list) == 4 and argv_list[2] != "--log"):
            raise SystemExit("usage: expert_peft.py --from-json PATH/expert_peft.json [--log PATH/run.log]")
        return resummarise(Path(argv_list[1]), argv_list, Path(argv_list[3]) if len(argv_list) == 4 else None)
    args = _parse(argv)
    torch.set_num_threads(args.threads)

    from langmoe.data.corpus import open_corpus
    from langmoe.io import write_json
    from langmoe.methods.routing.collect import collect_routing
    from langmoe.methods.routing.selection import (
        DEFAULT_POOL,
        default_last_n,
        reference_pool,
        selected_experts_json,
    )
    from langmoe.models.moe_io import load_model_any

    corpus = open_corpus(args.corpus)
    model, tok = load_model_any(args.model)
    block = min(args.block_len, getattr(model.config, "max_position_embeddings", args.block_len))
    args.ref_langs = args.ref_langs or [x for x in DEFAULT_POOL if x in corpus.languages()]
    pool = reference_pool(args.parent, args.child, args.ref_langs)
    counts = collect_routing(model, tok, corpus, pool, split=args.counts_split,
                             tokens_per_lang=args.tokens_per_lang, window=block)
    n = len(counts.layers)
    args.last_n_used = args.last_n or default_last_n(n)
    alpha = args.alpha if args.alpha is not None else 0.64 / max(counts.num_experts)
    selected = selected_experts_json(counts.array(), counts.langs, counts.layers, {args.child: args.parent},
                                     list(range(n - args.last_n_used, n)), alpha, pool=pool)
    sweep = _sweep(args, tok, corpus, counts, block)
    runs = [_run(args, tok, corpus, counts, mode, v["best_lr"], seed, "test", block)
            for seed in args.seeds for mode, v in sweep.items() if not v.get("refused")]
    summary = summarise(runs, args.child, args.parent, sweep)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "selected_experts.json", selected)
    write_json(out / "expert_peft.json", {"args": {k: v for k, v in vars(args).items()}, "summary": summary,
                                          "sweep": sweep, "runs": runs, "reference_pool": pool})
    write_markdown(out / "RESULTS.md", args, summary, pool, sweep)
    print((out / "RESULTS.md").read_text(encoding="utf-8"))
    print(json.dumps(summary["targets"]))
    return 0


if __name__ == "__main__":
    run_main(main, __file__)
