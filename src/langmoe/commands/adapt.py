"""`langmoe adapt`: expert-level adaptation of a child language through its parent (SEFT/SSFT/AEFT) or a baseline."""

from __future__ import annotations

import sys

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.commands._options import add_precision_options
from langmoe.commands._token_store_arg import add_token_store_option
from langmoe.errors import LangmoeError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "adapt", help="adapt an MoE model to a low-resource child language via its parent's experts",
        description="Fine-tune the parent's language-specific experts (seft), plus shared experts (ssft), all "
                    "experts (aeft) of the last N MoE layers, or a baseline at equal tokens (lastn: complete last "
                    "N layers, full, lora). Frozen experts stay bit-identical. Writes the adapted model and "
                    "adapt.json (trainable share, child/parent perplexity before and after).",
    )
    p.add_argument("--model", required=True, help="MoE model folder")
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' or a corpus folder (default builtin)" + MIX_HELP)
    p.add_argument("--child", required=True, help="low-resource language to adapt to")
    p.add_argument("--parent", required=True, help="related high-resource language whose experts are used")
    p.add_argument("--mode", choices=["seft", "ssft", "aeft", "lastn", "full", "lora"], default="ssft")
    p.add_argument("--last-n", type=int, default=None,
                   help="adapt the last N MoE layers (default 2 as the paper, or 1 if the model has one)")
    p.add_argument("--alpha", type=float, default=None, help="share gap for specific experts (default 0.64/E)")
    p.add_argument("--n-shared", type=int, default=2, help="shared experts added by ssft (default 2)")
    p.add_argument("--counts", default=None, help="routing_counts.json from `langmoe routing` (reference languages)")
    p.add_argument("--langs", nargs="+", default=None,
                   help="candidate reference languages (default en es ru fi ar hi zh): the parent plus the first of "
                        "every other family form the pool that specific and shared experts are selected over "
                        "(the child's family contributes nobody else); counts are collected for it unless --counts")
    p.add_argument("--counts-split", default="train",
                   help="split of the pool languages routed for the counts (default train: what the model learnt to "
                        "route, and enough text for equal budgets; the child is never in the pool)")
    p.add_argument("--tokens-per-lang", type=int, default=20_000, help="routing token budget per language")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps (default 50)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1, as the paper)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--block-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank for --mode lora (default 8)")
    p.add_argument("--eval-chars", type=int, default=20_000, help="characters scored per language (0 = all)")
    p.add_argument("--out", required=True, help="output folder (adapted model in model/, adapt.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing --out folder that langmoe did not write")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_precision_options(p, record="adapt.json")
    p.set_defaults(func=run)
    add_token_store_option(p)


def run(args) -> int:
    from langmoe.io import check_output

    check_output(args.out, "adapt", inputs=[args.model], overwrite=args.overwrite)  # never an input, never a folder langmoe did not write
    from pathlib import Path

    from langmoe.commands.eval import set_threads, split_langs
    from langmoe.data.corpus import open_corpus
    from langmoe.io import write_json
    from langmoe.methods.routing.adapt import AdaptConfig, prepare_adaptation, run_adaptation
    from langmoe.methods.routing.collect import RoutingCounts, collect_routing
    from langmoe.methods.routing.routers import require_moe
    from langmoe.methods.routing.selection import DEFAULT_POOL, reference_pool
    from langmoe.models.moe_io import (
        MAX_SHARD_SIZE,
        load_model_any,
        save_moe_pretrained,
        write_folder_atomically,
    )
    from langmoe.pretrain import build_config

    set_threads(args.threads)
    cfg = build_config(AdaptConfig, mode=args.mode, child=args.child, parent=args.parent, last_n=args.last_n,
                       alpha=args.alpha, n_shared=args.n_shared, steps=args.steps, lr=args.lr,
                       weight_decay=args.weight_decay, batch_size=args.batch_size, block_len=args.block_len,
                       seed=args.seed, lora_r=args.lora_r, eval_chars=args.eval_chars,
                       pool=split_langs(args.langs) if args.langs else None)
    corpus = open_corpus(args.corpus)
    have = set(corpus.languages())
    for lang in (cfg.child, cfg.parent):
        if lang not in have:
            raise LangmoeError(f"language {lang!r} is not in the corpus (it has: {', '.join(sorted(have))})")
    model, tok = load_model_any(args.model)
    layers = require_moe(model, "`langmoe adapt`")
    if cfg.last_n is not None and cfg.last_n > len(layers):
        raise LangmoeError(f"--last-n {cfg.last_n} is larger than the number of MoE layers ({len(layers)}): "
                           f"use 1..{len(layers)}")
    if tok is None:
        raise LangmoeError(f"{args.model} has no tokenizer files: save the tokenizer into the model folder")
    counts = None
    if cfg.mode in ("seft", "ssft"):
        if args.counts:
            counts = RoutingCounts.load(args.counts)
        else:
            langs = reference_pool(cfg.parent, cfg.child, cfg.pool or [x for x in DEFAULT_POOL if x in have])
            counts = collect_routing(model, tok, corpus, langs, split=args.counts_split,
                                     tokens_per_lang=args.tokens_per_lang,
                                     window=min(cfg.block_len, model.config.max_position_embeddings))
            for w in counts.warnings:
                print(f"langmoe adapt: warning: {w}", file=sys.stderr)
    plan = prepare_adaptation(model, cfg, counts)  # every input error is raised before anything is written
    print(f"mode {cfg.mode}: training {plan.trainable:,} of {plan.total:,} parameters ({100 * plan.share:.2f}%) "
          f"in decoder layers {plan.layers}" + (f", experts {plan.experts}" if plan.experts else ""))
    box: dict = {}

    def writer(tmp: Path) -> None:
        adapted, result = run_adaptation(model, tok, corpus, cfg, counts, tmp, plan=plan)
        if getattr(getattr(adapted, "config", None), "langmoe", None):
            save_moe_pretrained(adapted, tok, tmp / "model")
        else:
            adapted.save_pretrained(tmp / "model", max_shard_size=MAX_SHARD_SIZE)
            tok.save_pretrained(tmp / "model")
        if counts is not None:
            counts.save(tmp / "routing_counts.json")
        write_json(tmp / "adapt.json", result)
        box.update(result)

    write_folder_atomically(args.out, writer)
    r = box
    print(f"{'':8} {'ppl before':>11} {'ppl after':>10} {'change':>8}")
    for lang in (cfg.child, cfg.parent):
        b, a = r["before"][lang]["ppl"], r["after"][lang]["ppl"]
        print(f"{lang:8} {b:>11.3f} {a:>10.3f} {100 * (a / b - 1):>7.2f}%")
    print(f"trainable share {100 * r['trainable_share']:.3f}%; wrote {args.out}/model and adapt.json")
    return 0
