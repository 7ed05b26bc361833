"""`langmoe expand`: add language experts to a model without forgetting the old languages (MoE-LPR / LayerMoE)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.commands._options import add_precision_options
from langmoe.commands._token_store_arg import add_token_store_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "expand", help="expand a model to new languages (MoE-LPR or LayerMoE), old languages kept",
        description="Turn each FFN into frozen expert 0 plus new experts trained on the new languages (stage 1), then "
                    "train the routers on new text + a small old-language replay (stage 2). Writes a native MoE "
                    "folder and expansion.json (similarity, allocation, routing, Old/New ppl before/after). "
                    "Give a model written by `langmoe expand` to expand it again (lifelong).",
    )
    p.add_argument("--method", required=True,
                   help="a method registered for expansion: moe_lpr, layermoe (langmoe.registry)")
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
    p.add_argument("--cls-share", type=float, default=None,
                   help="layermoe: share of layers with a classifier when --top-k-cls is not given (7/24)")
    p.add_argument("--classifier-mode", default=None, choices=("token", "sequence"), help="layermoe")
    p.add_argument("--protect", default=None, choices=("none", "gate"),
                   help="gate: a calibrated language gate keeps old-language tokens on the frozen FFN (native "
                        "folders only: export refuses it)")
    p.add_argument("--max-intrusion", type=float, default=None,
                   help="gate: share of each old language's tokens allowed past the gate per layer (0.01)")
    p.add_argument("--gate-mode", default=None, choices=("sum", "prefix", "token"),
                   help="gate: classify the running sum of the layer input (default), its running mean, or the token")
    p.add_argument("--train-new-embeddings", action="store_true",
                   help="stage 1 also trains the embedding rows of tokens found in the new languages' text and not "
                        "in the old languages' (a departure from the papers, for an unseen script)")
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
    p.add_argument("--work-dir", default=None,
                   help="keep the run folder here (stages, checkpoints, logs): a rerun resumes; default: OUT.work "
                        "next to --out, removed once OUT is written (a killed run's rerun with the same --out "
                        "resumes it)")
    p.add_argument("--save-every", type=int, default=None,
                   help="checkpoint every N steps of a stage (0: only at the end; default 20): a killed run resumes "
                        "from the last checkpoint with the same result")
    add_precision_options(p, record="expansion.json")
    p.set_defaults(func=run)
    add_token_store_option(p)


# method settings with a flag of their own; which of them a method takes is read from its config class
METHOD_FLAGS = {"variant": "variant", "num_experts": "experts", "budget": "budget",
                "budget_fraction": "budget_fraction", "uniform_experts": "uniform_experts", "delta": "delta",
                "allocation": "allocation", "top_k_cls": "top_k_cls", "cls_share": "cls_share",
                "classifier_mode": "classifier_mode"}


def config_from_args(args, config_cls: type) -> dict[str, Any]:
    """The method's flat config from the flags; a method-specific flag the method does not take is one line."""
    from langmoe.errors import LangmoeError

    cfg: dict[str, Any] = {"model": args.model, "new": args.new, "old": args.old, "corpus": args.corpus}
    flat = {
        "block_len": args.block_len, "micro_batch_size": args.micro_batch_size,
        "max_train_tokens_per_lang": args.max_train_tokens, "replay_share": args.replay_share, "seed": args.seed,
        "threads": args.threads, "work_dir": args.work_dir, "save_every": args.save_every, "protect": args.protect,
        "max_intrusion": args.max_intrusion, "gate_mode": args.gate_mode,
    }
    cfg.update({k: v for k, v in flat.items() if v is not None})
    for stage, steps, lr in (("stage1", args.stage1_steps, args.lr), ("stage2", args.stage2_steps, args.stage2_lr)):
        s = {k: v for k, v in (("steps", steps), ("lr", lr)) if v is not None}
        if s:
            cfg[stage] = s
    if args.no_eval:
        cfg["evaluate"] = False
    if args.train_new_embeddings:
        cfg["train_new_embeddings"] = True
    ev = {"window": args.eval_window, "stride": args.eval_stride, "max_chars_per_lang": args.eval_max_chars}
    if any(v is not None for v in ev.values()):
        cfg["eval"] = {k: v for k, v in ev.items() if v is not None}
    given = {field: getattr(args, flag) for field, flag in METHOD_FLAGS.items() if getattr(args, flag) is not None}
    wrong = [f for f in given if f not in config_cls.model_fields]
    if wrong:
        raise LangmoeError(f"--{METHOD_FLAGS[wrong[0]].replace('_', '-')} does not apply to --method {args.method}")
    if args.budget is not None and args.budget_fraction is not None:
        raise LangmoeError("give --budget or --budget-fraction, not both")
    cfg.update(given)
    return cfg


def default_work_dir(out: str) -> Path:
    """The run folder when --work-dir is not given: OUT.work beside --out (not the temp directory, where a killed
    run's folder would stay forever): the rerun with the same --out resumes it, and it is removed once OUT is
    written."""
    out_path = Path(out).expanduser()
    return out_path.with_name(out_path.name + ".work")


def run(args) -> int:
    from langmoe.io import check_output

    check_output(args.out, "expand", inputs=[args.model], overwrite=args.overwrite)  # never an input, never a folder langmoe did not write
    if args.save_every is not None and args.save_every < 0:
        from langmoe.errors import LangmoeError

        raise LangmoeError(f"--save-every must be >= 0 (0: checkpoint only at the end), not {args.save_every}")
    temporary = args.work_dir is None
    if temporary:
        args.work_dir = str(default_work_dir(args.out))
    # the run folder: one langmoe fills (stages, checkpoints), never an input
    check_output(args.work_dir, "expand", inputs=[args.model, args.corpus, args.out],
                 overwrite=args.overwrite and not temporary, flag="--work-dir")
    from langmoe import registry
    from langmoe.console import console as Console
    from langmoe.errors import LangmoeError

    methods = {m.name: m for m in registry.expanding_methods()}
    if args.method not in methods:
        raise LangmoeError(f"--method {args.method!r} cannot expand a model: choose {', '.join(methods)}")
    method = methods[args.method]
    cfg = config_from_args(args, method.expand_config_cls)
    from langmoe.io import output_folder

    console = Console()
    work = Path(args.work_dir)
    created = temporary and not work.exists()
    if temporary and not created:
        console.print(f"resuming the earlier run kept in {work}")
    # one process per run folder (a rerun resumes it); bad input leaves no folder
    try:
        with output_folder(work, "expand", lock=True):
            res = method.expand(cfg, args.out)
    except LangmoeError:  # refused input: a default run folder this call made, with no training to resume, goes
        if created and not any(work.rglob("checkpoints")) and not any(work.rglob("model/config.json")):
            shutil.rmtree(work, ignore_errors=True)
        raise
    if temporary:  # OUT is written: the default run folder has served
        shutil.rmtree(args.work_dir, ignore_errors=True)
    rec = res.record
    before, after = rec.get("before"), rec.get("after")
    if before and after:
        console.print(f"Old ppl {before['old_mean']:.3f} -> {after['old_mean']:.3f}   "
                      f"New ppl {before['new_mean']:.3f} -> {after['new_mean']:.3f}")
    ways = rec.get("old_ways") or {}
    if ways.get("expert0", {}).get("mean", {}).get("ppl") is not None:
        console.print("Old ppl as trained / top-1 / old tokens on expert 0 alone (= the base): " + " / ".join(
            f"{ways[w]['mean']['ppl']:.3f}" for w in ("trained", "top1", "expert0")))
    gate = (rec.get("protect") or {}).get("layers")
    if gate:
        worst = max(v for layer in gate.values() for v in layer["old_intrusion"].values())
        console.print(f"gate: worst old-language intrusion {worst:.2%} per layer (bound {rec['protect']['max_intrusion']:.2%})")
    if "new_experts_total" in rec:
        console.print(f"new experts: {rec['new_experts_total']} {rec['new_experts']}")
    console.print(f"wrote {args.out}")
    return 0
