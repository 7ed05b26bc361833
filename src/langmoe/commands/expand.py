"""`langmoe expand`: add language experts to a model without forgetting the old languages (MoE-LPR / LayerMoE)."""

from __future__ import annotations

from typing import Any

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.commands._token_store_arg import add_token_store_option

METHODS = ("moe_lpr", "layermoe")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "expand", help="expand a model to new languages (MoE-LPR or LayerMoE), old languages kept",
        description="Turn each FFN into frozen expert 0 plus new experts trained on the new languages (stage 1), then "
                    "train the routers on new text + a small old-language replay (stage 2). Writes a native MoE "
                    "folder and expansion.json (similarity, allocation, routing, Old/New ppl before/after). "
                    "Give a model written by `langmoe expand` to expand it again (lifelong).",
    )
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--model", required=True, help="dense HF folder, 'builtin', or a folder written by langmoe expand")
    p.add_argument("--new", required=True, help="comma-separated new languages, e.g. el,hu,tr")
    p.add_argument("--old", required=True, help="comma-separated old languages (replay, LPR), e.g. en,zh,es")
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' (default) or a corpus folder" + MIX_HELP)
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing --out folder that langmoe did not write")
    p.add_argument("--variant", default=None,
                   help="moe_lpr: moe_lpr | full_ft | lora (baselines at the same tokens)")
    p.add_argument("--experts", type=int, default=None, help="moe_lpr: experts per layer incl. the frozen FFN")
    p.add_argument("--budget", type=int, default=None, help="layermoe: new experts in total")
    p.add_argument("--budget-fraction", type=float, default=None,
                   help="layermoe: budget as a fraction of MoE-LPR's uniform count (default 0.4)")
    p.add_argument("--uniform-experts", type=int, default=None, help="layermoe: MoE-LPR's experts per layer")
    p.add_argument("--delta", type=float, default=None, help="layermoe: explicit δ instead of a budget")
    p.add_argument("--allocation", default=None, choices=("similarity", "random"), help="layermoe")
    p.add_argument("--top-k-cls", type=int, default=None, help="layermoe: classifiers in the K most similar layers")
    p.add_argument("--classifier-mode", default=None, choices=("token", "sequence"), help="layermoe")
    p.add_argument("--stage1-steps", type=int, default=None)
    p.add_argument("--stage2-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="stage-1 learning rate (default 1e-3)")
    p.add_argument("--stage2-lr", type=float, default=None, help="stage-2 (router) learning rate (default 1e-2)")
    p.add_argument("--replay-share", type=float, default=None, help="old replay tokens / stage-1 tokens (0.1)")
    p.add_argument("--block-len", type=int, default=None)
    p.add_argument("--micro-batch-size", type=int, default=None)
    p.add_argument("--max-train-tokens", type=int, default=None, help="per language")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--eval-window", type=int, default=None, help="perplexity window (default 128)")
    p.add_argument("--eval-stride", type=int, default=None, help="perplexity stride (default 64)")
    p.add_argument("--eval-max-chars", type=int, default=None, help="held-out characters per language")
    p.add_argument("--no-eval", action="store_true", help="skip the before/after perplexity and routing report")
    p.set_defaults(func=run)
    add_token_store_option(p)


def config_from_args(args) -> dict[str, Any]:
    cfg: dict[str, Any] = {"model": args.model, "new": args.new, "old": args.old, "corpus": args.corpus}
    flat = {
        "block_len": args.block_len, "micro_batch_size": args.micro_batch_size,
        "max_train_tokens_per_lang": args.max_train_tokens, "replay_share": args.replay_share, "seed": args.seed,
        "threads": args.threads,
    }
    cfg.update({k: v for k, v in flat.items() if v is not None})
    for stage, steps, lr in (("stage1", args.stage1_steps, args.lr), ("stage2", args.stage2_steps, args.stage2_lr)):
        s: dict[str, Any] = {}
        if steps is not None:
            s["steps"] = steps
        if lr is not None:
            s["lr"] = lr
        if s:
            cfg[stage] = s
    if args.no_eval:
        cfg["evaluate"] = False
    ev = {"window": args.eval_window, "stride": args.eval_stride, "max_chars_per_lang": args.eval_max_chars}
    if any(v is not None for v in ev.values()):
        cfg["eval"] = {k: v for k, v in ev.items() if v is not None}
    lpr_only = {"variant": args.variant, "num_experts": args.experts}
    lm_only = {"budget": args.budget, "budget_fraction": args.budget_fraction, "uniform_experts": args.uniform_experts,
               "delta": args.delta, "allocation": args.allocation, "top_k_cls": args.top_k_cls,
               "classifier_mode": args.classifier_mode}
    own, other = (lpr_only, lm_only) if args.method == "moe_lpr" else (lm_only, lpr_only)
    from langmoe.errors import LangmoeError

    wrong = [k for k, v in other.items() if v is not None]
    if wrong:
        flag = {"num_experts": "experts"}.get(wrong[0], wrong[0]).replace("_", "-")
        raise LangmoeError(f"--{flag} does not apply to --method {args.method}")
    if args.budget is not None and args.budget_fraction is not None:
        raise LangmoeError("give --budget or --budget-fraction, not both")
    cfg.update({k: v for k, v in own.items() if v is not None})
    return cfg


def run(args) -> int:
    from langmoe.io import check_output

    check_output(args.out, "expand", inputs=[args.model], overwrite=args.overwrite)  # never an input, never a folder langmoe did not write
    from langmoe.console import console as Console
    from langmoe.methods import layermoe, moe_lpr

    cfg = config_from_args(args)
    module = moe_lpr if args.method == "moe_lpr" else layermoe
    res = module.run(cfg, args.out)
    rec = res.record
    console = Console()
    before, after = rec.get("before"), rec.get("after")
    if before and after:
        console.print(f"Old ppl {before['old_mean']:.3f} -> {after['old_mean']:.3f}   "
                      f"New ppl {before['new_mean']:.3f} -> {after['new_mean']:.3f}")
    if "new_experts_total" in rec:
        console.print(f"new experts: {rec['new_experts_total']} {rec['new_experts']}")
    console.print(f"wrote {args.out}")
    return 0
