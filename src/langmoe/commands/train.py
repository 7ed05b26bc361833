"""`langmoe train`: dense continued pre-training of any Hugging Face causal LM on a corpus."""

from __future__ import annotations

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.commands._options import add_precision_options
from langmoe.commands._token_store_arg import add_token_store_option
from langmoe.commands.eval import as_command, print_eval_table, set_threads, split_langs
from langmoe.commands.pretrain import _stage_line, optim_settings


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="continue training an HF model on a corpus (dense CPT)",
        description="Continue training every parameter of a Hugging Face causal LM on a corpus with the "
                    "temperature sampler; writes an HF folder with train.json. Rerun to resume.",
    )
    p.add_argument("--model", required=True,
                   help="HF model folder, hub id (org/name, from your HF cache) or 'builtin' (the shipped tiny base)")
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' or a corpus folder" + MIX_HELP)
    p.add_argument("--langs", nargs="+", default=None, help="language codes (default: all of the corpus)")
    p.add_argument("--out", required=True, help="output folder (HF model folder; training state in OUT/train)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block-len", type=int, default=256)
    p.add_argument("--max-train-tokens", type=int, default=None, help="cap of train tokens per language")
    p.add_argument("--batch-size", type=int, default=16, help="blocks per micro-batch")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-ratio", type=float, default=0.03)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--tau", type=float, default=0.3)
    p.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps (0 = off: only at the end)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing --out that langmoe did not write")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval", action="store_true", help="evaluate per-language test bpb after training")
    p.add_argument("--threads", type=int, default=None)
    add_precision_options(p, record="train.json")
    p.set_defaults(func=run)
    add_token_store_option(p)


def run(args) -> int:
    from langmoe.commands._checks import check_corpus, check_model_folder
    from langmoe.eval.perplexity import EvalSettings
    from langmoe.io import check_output, output_folder
    from langmoe.pretrain import ContinueTrainConfig, build_config, continue_train

    check_output(args.out, "train", inputs=[args.model, args.corpus], overwrite=args.overwrite)
    check_model_folder(args.model)
    check_corpus(args.corpus, split_langs(args.langs))
    set_threads(args.threads)
    optim = optim_settings(args)
    cfg = build_config(
        ContinueTrainConfig, model=args.model, corpus=args.corpus, langs=split_langs(args.langs), out=args.out,
        seed=args.seed, block_len=args.block_len, max_train_tokens_per_lang=args.max_train_tokens, optim=optim,
        eval=EvalSettings() if args.eval else None,
    )
    with output_folder(cfg.out, "train", lock=True):
        record = continue_train(cfg, command=as_command("train", args), log=_stage_line)
    if not record:  # not the main process of a multi-process run: the main process reports
        return 0
    if "eval" in record:
        print_eval_table(record["eval"], f"{args.model} continued in {args.out}")
        from langmoe.diagnostics import eval_warnings, report_warnings

        report_warnings(eval_warnings(record["eval"]))
    else:
        print(f"saved to {args.out}")
    return 0
