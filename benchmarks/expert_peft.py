"""Expert-level adaptation vs baselines at equal tokens: child perplexity, parent perplexity change, trainable share.

For each seed and mode (seft, ssft, aeft, lastn, full, lora) a fresh copy of the model is adapted to the child
language for the same number of steps x batch x block tokens (`langmoe.methods.routing.adapt.run_adaptation`);
specific and shared experts come from routing counts of the reference languages collected once on the `valid`
split. Perplexities are on the `test` split (evaluation routes freely). The issue's targets: SSFT trains < 5% of
the parameters, reaches the child perplexity of `lastn` within 2%, and raises the parent's perplexity less.

    python benchmarks/expert_peft.py --model PATH/TO/MOE --child gl --parent pt --ref-langs pt es en de ru \
        --seeds 0 1 2 --steps 200 --out benchmarks/results/expert_peft

Works on any MoE folder with tokenizer files (stock transformers MoE or langmoe-upcycled).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch

MODES = ["seft", "ssft", "aeft", "lastn", "full", "lora"]


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(runs: list[dict], child: str, parent: str) -> dict:
    """Per mode: mean ± std over seeds of child ppl after, parent ppl change, trainable share; target checks."""
    by_mode: dict[str, list[dict]] = {}
    for r in runs:
        by_mode.setdefault(r["mode"], []).append(r)
    table = {}
    for mode, rs in by_mode.items():
        cm, cs = _mean_std([r["after"][child]["ppl"] for r in rs])
        pm, ps = _mean_std([r["parent_ppl_change"] for r in rs])
        table[mode] = {"child_ppl": cm, "child_ppl_std": cs, "parent_ppl_change": pm, "parent_ppl_change_std": ps,
                       "trainable_share": rs[0]["trainable_share"], "seeds": len(rs),
                       "child_ppl_before": rs[0]["before"][child]["ppl"], "train_tokens": rs[0]["train_tokens"]}
    targets = {}
    if "ssft" in table:
        s = table["ssft"]
        targets["ssft_share_below_5pct"] = s["trainable_share"] < 0.05
        if "lastn" in table:
            ln = table["lastn"]
            targets["ssft_child_ppl_within_2pct_of_lastn"] = s["child_ppl"] <= 1.02 * ln["child_ppl"]
            targets["ssft_parent_rise_smaller_than_lastn"] = s["parent_ppl_change"] < ln["parent_ppl_change"]
    return {"table": table, "targets": targets}


def write_markdown(path: Path, args, summary: dict) -> None:
    t = summary["table"]
    lines = ["# Expert-level adaptation vs baselines at equal tokens", "", f"Command: `{args.command}`", "",
             f"Child `{args.child}` via parent `{args.parent}`; last {args.last_n} MoE layer(s); "
             f"{len(args.seeds)} seed(s); {next(iter(t.values()))['train_tokens']} training tokens per run.", "",
             "| mode | trainable share | child ppl before | child ppl after (± sd) | parent ppl change (± sd) |",
             "|---|---|---|---|---|"]
    for mode in [m for m in MODES if m in t]:
        r = t[mode]
        lines.append(f"| {mode} | {100 * r['trainable_share']:.3f}% | {r['child_ppl_before']:.3f} | "
                     f"{r['child_ppl']:.3f} ± {r['child_ppl_std']:.3f} | "
                     f"{100 * r['parent_ppl_change']:+.2f}% ± {100 * r['parent_ppl_change_std']:.2f} |")
    lines += ["", "Targets: " + (", ".join(f"{k}: **{'yes' if v else 'no'}**" for k, v in summary["targets"].items())
                                 or "n/a"), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", default="builtin")
    ap.add_argument("--child", default="gl")
    ap.add_argument("--parent", default="pt")
    ap.add_argument("--ref-langs", nargs="+", default=["pt", "es", "en", "de", "ru", "fr"],
                    help="reference languages for specific/shared experts (the parent and others)")
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--last-n", type=int, default=1)
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--n-shared", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--block-len", type=int, default=128)
    ap.add_argument("--tokens-per-lang", type=int, default=20_000)
    ap.add_argument("--eval-chars", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/expert_peft")
    args = ap.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/expert_peft.py", *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(args.threads)

    from langmoe.data.corpus import open_corpus
    from langmoe.io import write_json
    from langmoe.methods.routing.adapt import AdaptConfig, prepare_adaptation, run_adaptation
    from langmoe.methods.routing.collect import collect_routing
    from langmoe.models.moe_io import load_model_any

    corpus = open_corpus(args.corpus)
    model, tok = load_model_any(args.model)
    block = min(args.block_len, getattr(model.config, "max_position_embeddings", args.block_len))
    refs = [x for x in args.ref_langs if x != args.child]
    counts = collect_routing(model, tok, corpus, refs, split="valid", tokens_per_lang=args.tokens_per_lang,
                             window=block)
    runs = []
    for seed in args.seeds:
        for mode in args.modes:
            cfg = AdaptConfig(mode=mode, child=args.child, parent=args.parent, last_n=args.last_n, alpha=args.alpha,
                              n_shared=args.n_shared, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                              block_len=block, seed=seed, eval_chars=args.eval_chars)
            fresh, _ = load_model_any(args.model)
            plan = prepare_adaptation(fresh, cfg, counts)
            with tempfile.TemporaryDirectory(prefix="expert_peft_") as tmp:
                _, res = run_adaptation(fresh, tok, corpus, cfg, counts, tmp, plan=plan)
            runs.append(res)
            print(f"seed {seed} {mode:5}: share {100 * res['trainable_share']:.3f}%  child ppl "
                  f"{res['before'][args.child]['ppl']:.3f} -> {res['after'][args.child]['ppl']:.3f}  parent "
                  f"{100 * res['parent_ppl_change']:+.2f}%", flush=True)
    summary = summarise(runs, args.child, args.parent)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "expert_peft.json", {"args": {k: v for k, v in vars(args).items()}, "summary": summary,
                                          "runs": runs, "counts_langs": counts.langs})
    write_markdown(out / "RESULTS.md", args, summary)
    print((out / "RESULTS.md").read_text(encoding="utf-8"))
    print(json.dumps(summary["targets"]))
    return 0


if __name__ == "__main__":
    from langmoe.errors import LangmoeError

    try:
        raise SystemExit(main())
    except LangmoeError as e:
        print(f"{Path(__file__).name}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
