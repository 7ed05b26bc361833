"""`langmoe deviation`: per-language fine-tuning probes from a dense base (DMoE step A)."""

from __future__ import annotations

from pathlib import Path

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.commands._options import add_precision_options
from langmoe.commands._token_store_arg import add_token_store_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "deviation", help="per-language parameter deviation and language similarity (DMoE step A)",
        description="Fine-tune the base on each language alone for a few steps (restoring the base in between), "
                    "record the per-layer FFN/attention deviation and the language vectors, and write "
                    "OUT/deviation.json. Finished languages are cached in OUT/probe/: re-running resumes.",
    )
    p.add_argument("--model", required=True, help="HF model folder, or 'builtin' for the shipped tiny base")
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' or a corpus folder (default builtin)" + MIX_HELP)
    p.add_argument("--langs", nargs="+", required=True, help="language codes (space or comma separated)")
    p.add_argument("--out", required=True, help="output folder (deviation.json, probe cache)")
    p.add_argument("--kind", default=None,
                   help="probe: sgd (plain SGD steps on the FFN; default), gradient (mean FFN gradient at the "
                        "base, no update) or adamw (the paper's probe; with --params all)")
    p.add_argument("--steps", type=int, default=None,
                   help="probe steps per language (default 4; gradient: steps averaged into one gradient)")
    p.add_argument("--lr", type=float, default=None,
                   help="LR of sgd/adamw (default: 3e-4 for adamw, as the DMoE recipes; 0.3 for sgd)")
    p.add_argument("--micro-batch-size", type=int, default=None, help="sequences per micro-batch (default 8)")
    p.add_argument("--grad-accum", type=int, default=None,
                   help="micro-batches per probe step (default 16): tokens per step = micro × accum × block_len")
    p.add_argument("--no-stability", action="store_true",
                   help="skip the second probe (seed + 1) that measures the probe's own stability")
    p.add_argument("--block-len", type=int, default=None, help="tokens per sequence (default 128)")
    p.add_argument("--max-tokens", type=int, default=None, help="packed tokens per language (default 200000)")
    p.add_argument("--last-n-layers", type=int, default=None,
                   help="layers forming the language vector (default 3; 0 = all layers)")
    p.add_argument("--params", default=None,
                   help="weights the probe trains: measured (the FFN matrices, + attention with --attention; "
                        "default) or all (the paper's full fine-tune)")
    p.add_argument("--attention", action="store_true", help="also train and measure attention")
    p.add_argument("--no-attention", action="store_true", help="FFN only (the default)")
    p.add_argument("--no-center", action="store_true",
                   help="cosines of the raw language vectors (the paper) instead of vectors minus their mean")
    p.add_argument("--base-copy", default=None,
                   help="where sgd/adamw keep the weights they restore: auto (default: a file above 256 MiB), "
                        "memory or disk")
    p.add_argument("--optimizer-state", default=None,
                   help="adamw's moments: float32 (default) or bfloat16 (half the optimizer memory)")
    p.add_argument("--sketch-dim", type=int, default=None,
                   help="sketch the language vectors to this dimension (default: exact up to --sketch-above "
                        "numbers, else 65536)")
    p.add_argument("--sketch-method", default=None,
                   help="count sketch (d additions; default) or Gaussian projection (d × k)")
    p.add_argument("--sketch-above", type=int, default=None,
                   help="vectors longer than this are sketched (default 16777216)")
    p.add_argument("--no-gradient-checkpointing", action="store_true",
                   help="never recompute activations in backward (by default the probe does when it keeps every "
                        "trained weight's gradient and those exceed 256 MiB: same results, less memory)")
    p.add_argument("--exact-vectors", action="store_true", help="never sketch the vectors automatically")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--overwrite", action="store_true", help="write into an existing --out that langmoe did not write")
    add_precision_options(p, record="deviation.json")
    p.set_defaults(func=run)
    add_token_store_option(p)


def build_deviation_config(args):
    """The `DeviationConfig` of the command line (unset options keep the library's defaults)."""
    from langmoe.errors import LangmoeError
    from langmoe.methods.dmoe.deviation import DeviationConfig

    if args.attention and args.no_attention:
        raise LangmoeError("--attention and --no-attention contradict each other: give one")
    raw = {"kind": args.kind, "steps": args.steps, "lr": args.lr, "micro_batch_size": args.micro_batch_size,
           "grad_accum": args.grad_accum, "block_len": args.block_len, "max_tokens_per_lang": args.max_tokens,
           "params": args.params, "mixed_precision": args.mixed_precision, "sketch_dim": args.sketch_dim,
           "optimizer_state": args.optimizer_state, "base_copy": args.base_copy,
           "sketch_method": args.sketch_method, "sketch_above": args.sketch_above, "seed": args.seed}
    cfg = {k: v for k, v in raw.items() if v is not None}
    if args.last_n_layers is not None:
        cfg["last_n_layers"] = args.last_n_layers or None
    if args.exact_vectors:
        if args.sketch_dim is not None or args.sketch_above is not None:
            raise LangmoeError("--exact-vectors cannot be combined with --sketch-dim or --sketch-above: drop one")
        cfg["sketch_above"] = None
    if args.gradient_checkpointing and args.no_gradient_checkpointing:
        raise LangmoeError("--gradient-checkpointing and --no-gradient-checkpointing contradict each other: give one")
    if args.gradient_checkpointing or args.no_gradient_checkpointing:
        cfg["checkpointing"] = "on" if args.gradient_checkpointing else "off"
    cfg.update(stability=not args.no_stability, include_attention=args.attention, center=not args.no_center)
    return DeviationConfig.parse(cfg)


def run(args) -> int:
    from rich.table import Table

    from langmoe.commands._checks import check_corpus, check_model_folder
    from langmoe.commands.eval import set_threads, split_langs
    from langmoe.console import console as wide_console
    from langmoe.errors import LangmoeError
    from langmoe.io import check_output, output_folder
    from langmoe.methods.dmoe.deviation import measure_deviation_on_corpus
    from langmoe.models.base import load_model_and_tokenizer

    check_output(args.out, "deviation", inputs=[args.model, args.corpus], overwrite=args.overwrite)
    model_cfg = check_model_folder(args.model)
    layers = getattr(model_cfg, "num_hidden_layers", None)
    if isinstance(layers, int) and args.last_n_layers is not None and not 0 <= args.last_n_layers <= layers:
        raise LangmoeError(f"--last-n-layers {args.last_n_layers}: the model has {layers} layers; give 1..{layers} "
                           "(0 = all layers)")
    set_threads(args.threads)
    config = build_deviation_config(args)
    langs = split_langs(args.langs) or []
    corpus = check_corpus(args.corpus)
    missing = [x for x in langs if x not in corpus.languages()]
    if missing:
        raise LangmoeError(f"languages {', '.join(missing)} are not in corpus {args.corpus!r}")
    model, tokenizer = load_model_and_tokenizer(args.model)
    console = wide_console()
    out = Path(args.out)
    with output_folder(out, "deviation", lock=True):
        res = measure_deviation_on_corpus(model, tokenizer, corpus, langs, config, out_dir=out,
                                          cache_dir=out / "cache", log=console.print)
    c = res.config
    how = f"{c.kind} probe, {c.steps} steps" + (f", lr {c.lr:g}" if c.lr is not None else "")
    t = Table(title=f"FFN deviation per layer ({how}, {c.micro_batch_size * c.grad_accum * c.block_len:,} tokens a "
                    "step)")
    t.add_column("lang")
    for i in range(res.num_layers):
        t.add_column(f"L{i}", justify="right")
    t.add_column("loss", justify="right")
    for x in res.langs:
        pr = res.probe[x]
        loss = f"{pr.first_loss:.3f}→{pr.last_loss:.3f}" if pr.first_loss is not None else ""
        t.add_row(x, *[f"{v:.3g}" for v in res.dev_ffn[x]], loss + (" (cached)" if pr.cached else ""))
    console.print(t)
    vec = f"{res.sketch_method} sketch, dim {res.vector_dim}" if res.sketched else f"dim {res.vector_dim}"
    s = Table(title=f"cosine similarity{' of centred vectors' if c.center else ''} (layers {res.vector_layers}, "
                    f"{vec})")
    s.add_column("")
    for x in res.langs:
        s.add_column(x, justify="right")
    for x, row in zip(res.langs, res.similarity, strict=True):
        s.add_row(x, *[f"{v:.3f}" for v in row])
    console.print(s)
    if res.stability is not None:
        console.print(f"probe stability (seeds {res.stability.seeds}): similarity correlation "
                      f"{res.stability.similarity_corr:.3f}, layer-profile correlation "
                      f"{'n/a' if res.stability.layer_corr is None else f'{res.stability.layer_corr:.3f}'}")
    if res.layer_spread is not None:
        console.print(f"layer spread (max/min mean FFN deviation): {res.layer_spread:.3f}")
    for w in res.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    console.print(f"wrote {out / 'deviation.json'}")
    return 0
