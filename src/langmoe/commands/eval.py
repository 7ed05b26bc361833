"""`langmoe eval`: per-language perplexity and bits per byte of an HF model folder on a corpus split."""

from __future__ import annotations

import argparse
from typing import Any

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend
from langmoe.commands._token_store_arg import add_token_store_option
from langmoe.errors import LangmoeError

# `--device-map` of eval and generate: where the weights go (transformers' device_map; docs/base-and-eval.md)
DEVICE_MAPS = ["auto", "balanced", "sequential", "cpu", "cuda"]
DEVICE_MAP_HELP = ("place the model over the GPUs and the CPU (auto/balanced/sequential, as transformers' "
                   "device_map), or all on cpu / cuda; default: the GPU if there is one")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="per-language perplexity and bits per byte of a model",
        description="Score a Hugging Face causal LM per language (sliding window; bits per byte compare "
                    "across tokenizers) and print a table with the macro mean.",
    )
    p.add_argument("--model", required=True, help="HF model folder, or 'builtin' for the shipped tiny base")
    add_eval_arguments(p)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "auto"], default=None,
                   help="dtype the model computes in (default fp32; auto: the folder's own, e.g. a bf16 folder in bf16)")
    p.add_argument("--device-map", choices=DEVICE_MAPS, default=None, help=DEVICE_MAP_HELP)
    p.add_argument("--json", dest="json_out", default=None, help="also write the table as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run)
    add_token_store_option(p)


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' or a corpus folder (default builtin)" + MIX_HELP)
    p.add_argument("--langs", nargs="+", default=None, help="language codes (space or comma separated)")
    p.add_argument("--split", default="test", help="split to score (default test)")
    p.add_argument("--window", type=int, default=256, help="tokens per window (default 256: the block length the "
                   "shipped base was trained on; recipes score at their own block length, 128)")
    p.add_argument("--stride", type=int, default=128, help="new tokens scored per window (default 128)")
    p.add_argument("--max-chars", type=int, default=20_000,
                   help="characters scored per language, 0 = all (default 20000)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward (default 8)")
    p.add_argument("--per-document", action="store_true", help="no context across documents")
    p.add_argument("--no-unigram", action="store_true", help="skip the unigram baseline column")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def split_langs(values: list[str] | None, flag: str = "--langs") -> list[str] | None:
    """Codes (or names) given with spaces and/or commas; None when the option was left out, one line when it was
    given but names nothing (`--tasks ,`)."""
    if not values:
        return None
    out = [x.strip() for v in values for x in v.split(",") if x.strip()]
    if not out:
        raise LangmoeError(f"{flag} {' '.join(values)!r} names nothing: give one or more, comma separated")
    return out


def eval_settings(args) -> Any:
    from langmoe.eval.perplexity import EvalSettings
    from langmoe.pretrain import build_config

    return build_config(
        EvalSettings, split=args.split, window=args.window, stride=args.stride,
        max_chars_per_lang=args.max_chars or None, batch_size=args.batch_size,
        per_document=args.per_document, unigram=not args.no_unigram,
    )


def as_command(verb: str, args) -> str:
    """The full command line that reproduces `args` (every option spelled out, defaults included)."""
    import shlex

    parts = ["langmoe", verb]
    for key, value in vars(args).items():
        if key in ("func", "command") or key.startswith("_") or value is None or value is False:
            continue  # `_...`: an action's bookkeeping (e.g. CorpusAppend's `_corpus_given`), not an option
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif key == "corpus" and isinstance(value, list):  # mixed sources: --corpus is repeated, one per source
            for v in value:
                parts += [flag, str(v)]
        elif isinstance(value, list):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def set_threads(n: int | None) -> None:
    import torch

    if n is not None:
        if n < 1:
            raise LangmoeError(f"--threads must be at least 1, got {n}")
        torch.set_num_threads(n)


def print_eval_table(table: dict[str, Any], title: str) -> None:
    """Rich table: one row per language, then the macro mean."""
    from rich.table import Table

    from langmoe.console import console as wide_console

    uni = any("unigram_bits_per_byte" in r for r in table["langs"].values())
    t = Table(title=title)
    for col in ("lang", "docs", "tokens", "bytes", "ppl", "bits/byte"):
        t.add_column(col, justify="left" if col == "lang" else "right")
    if uni:
        t.add_column("unigram bits/byte", justify="right")
        t.add_column("beats unigram", justify="center")
    for lang, r in table["langs"].items():
        row = [lang, str(r["docs"]), str(r["tokens"]), str(r["bytes"]), f"{r['ppl']:.2f}", f"{r['bits_per_byte']:.4f}"]
        if uni:
            row += [f"{r['unigram_bits_per_byte']:.4f}", "yes" if r["beats_unigram"] else "[red]no[/red]"]
        t.add_row(*row)
    m = table["mean"]
    row = ["mean", "", "", "", f"{m['ppl']:.2f}", f"{m['bits_per_byte']:.4f}"]
    if uni:
        row += [f"{m['unigram_bits_per_byte']:.4f}", "all" if table.get("beats_unigram_all") else "[red]not all[/red]"]
    t.add_row(*row, style="bold")
    console = wide_console()
    console.print(t)
    if table.get("skipped"):
        console.print(f"[yellow]no text to score in this split for: {', '.join(table['skipped'])}[/yellow]")


def run(args) -> int:
    from langmoe.commands._checks import check_corpus, check_model_folder
    from langmoe.diagnostics import eval_warnings, report_warnings
    from langmoe.eval.perplexity import evaluate_folder
    from langmoe.io import check_output, write_json

    if args.json_out:
        check_output(args.json_out, "eval", inputs=[args.model, args.corpus], kind="file", flag="--json",
                     overwrite=args.overwrite)
    check_model_folder(args.model)
    check_corpus(args.corpus, split_langs(args.langs))
    set_threads(args.threads)
    table = evaluate_folder(args.model, args.corpus, split_langs(args.langs), eval_settings(args), dtype=args.dtype,
                            progress="lines", device_map=args.device_map)
    label = " + ".join(args.corpus) if isinstance(args.corpus, list) else args.corpus
    print_eval_table(table, f"{args.model} on {label}/{args.split}")
    table["warnings"] = report_warnings(eval_warnings(table))
    if args.json_out:
        write_json(args.json_out, table)
    return 0
