"""`langmoe pretrain`: train a preset base (Llama, or Qwen3-MoE for tiny-moe) from scratch on a corpus (tokenizer, packing, trainer, eval)."""

from __future__ import annotations

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.commands._options import add_precision_options
from langmoe.commands._token_store_arg import add_token_store_option
from langmoe.commands.eval import as_command, print_eval_table, set_threads, split_langs


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="train a tiny/small Llama base from scratch",
        description="Train a tokenizer (or take --tokenizer), pack the train split, train a preset model from "
                    "scratch with the temperature sampler, evaluate per-language test bits per byte against a "
                    "unigram baseline, and write a Hugging Face folder with pretrain.json. Rerun to resume.",
    )
    p.add_argument("--preset", default="tiny", help="tiny (Llama, ~1M non-embedding params), small (Llama, ~5M) or tiny-moe (Qwen3-MoE, 8 experts top-2, tiny's active size)")
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' or a corpus folder" + MIX_HELP)
    p.add_argument("--langs", nargs="+", default=None, help="language codes (default: all of the corpus)")
    p.add_argument("--out", required=True, help="output folder (the HF model folder; training state in OUT/train)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block-len", type=int, default=256, help="tokens per training block (default 256)")
    p.add_argument("--max-positions", type=int, default=1024, help="model max positions (default 1024)")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--tokenizer", default=None, help="use this saved tokenizer folder instead of training one")
    tok.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary (default: tiny 4096, small 8192)")
    p.add_argument("--tokenizer-chars", type=int, default=None,
                   help="characters per language for tokenizer training (default: the median language size)")
    p.add_argument("--max-train-tokens", type=int, default=None, help="cap of train tokens per language")
    p.add_argument("--batch-size", type=int, default=16, help="blocks per micro-batch (default 16)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-ratio", type=float, default=0.02)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max global grad norm, 0 = off (default 1.0)")
    p.add_argument("--tau", type=float, default=0.3, help="language sampling temperature p ∝ size^tau")
    p.add_argument("--save-every", type=int, default=200,
                   help="checkpoint every N steps (default 200; 0 = off: only at the end)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the forward: 1.13-1.18x tokens/s on CPU after a one-off compile (long runs)")
    p.add_argument("--keep-checkpoints", type=int, default=2,
                   help="newest checkpoints kept (default 2: a damaged one falls back to the one before)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing --out that langmoe did not write")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-window", type=int, default=256)
    p.add_argument("--eval-stride", type=int, default=128)
    p.add_argument("--eval-max-chars", type=int, default=20_000, help="test characters per language, 0 = all")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_precision_options(p, record="pretrain.json")
    p.set_defaults(func=run)
    add_token_store_option(p)


def run(args) -> int:
    from langmoe.commands._checks import check_corpus, check_tokenizer_folder
    from langmoe.eval.perplexity import EvalSettings
    from langmoe.io import check_output, output_folder
    from langmoe.pretrain import PretrainConfig, build_config, pretrain

    check_output(args.out, "pretrain", inputs=[args.corpus, args.tokenizer], overwrite=args.overwrite)
    check_tokenizer_folder(args.tokenizer)
    check_corpus(args.corpus, split_langs(args.langs))
    set_threads(args.threads)
    optim = optim_settings(args, keep_checkpoints=args.keep_checkpoints, compile=args.compile)
    ev = build_config(EvalSettings, window=args.eval_window, stride=args.eval_stride,
                      max_chars_per_lang=args.eval_max_chars or None)
    cfg = build_config(
        PretrainConfig, preset=args.preset, corpus=args.corpus, langs=split_langs(args.langs), out=args.out,
        seed=args.seed, block_len=args.block_len, max_positions=args.max_positions, tokenizer=args.tokenizer,
        vocab_size=args.vocab_size, tokenizer_max_chars_per_lang=args.tokenizer_chars,
        max_train_tokens_per_lang=args.max_train_tokens, optim=optim, eval=ev,
    )
    with output_folder(cfg.out, "pretrain", lock=True):
        record = pretrain(cfg, command=as_command("pretrain", args), log=_stage_line)
    if not record:  # not the main process of a multi-process run: the main process reports
        return 0
    print_eval_table(record["eval"], f"{args.preset} base in {args.out}: {cfg.eval.split} split")
    from langmoe.diagnostics import eval_warnings, report_warnings

    report_warnings(eval_warnings(record["eval"]))
    return 0


def optim_settings(args, **extra):
    """The optimiser settings of `train` and `pretrain` from their shared flags (validated once, here)."""
    from langmoe.commands._checks import at_least
    from langmoe.pretrain import OptimSettings, build_config

    at_least("--save-every", args.save_every, 0)
    save_every = args.save_every or max(args.steps, 1)  # 0 = off: the trainer checkpoints only the last step
    return build_config(
        OptimSettings, steps=args.steps, lr=args.lr, warmup_ratio=args.warmup_ratio, min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, micro_batch_size=args.batch_size,
        grad_accum=args.grad_accum, mixed_precision=args.mixed_precision or "no", save_every=save_every,
        log_every=args.log_every, tau=args.tau, **extra,
    )


def _stage_line(msg: str) -> None:
    """A phase line on stdout, like `langmoe run`'s stage lines (stderr holds only the one-line error on failure)."""
    print(msg, flush=True)
