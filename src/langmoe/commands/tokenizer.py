"""`langmoe tokenizer train`: a byte-level BPE on a language-balanced sample of a corpus, saved as an HF folder."""

from __future__ import annotations

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenizer", help="train tokenizers", description="Train tokenizers.")
    sub = p.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)
    t = sub.add_parser(
        "train", help="train a byte-level BPE tokenizer on a corpus",
        description="Train a byte-level BPE (<|endoftext|> = bos/eos/pad) on at most --max-chars-per-lang "
                    "characters of each language (default: the median language size) and save it with "
                    "save_pretrained.",
    )
    t.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' (default) or a folder of <lang>.* files" + MIX_HELP)
    t.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size (default 8192, at least 257)")
    t.add_argument("--langs", nargs="+", default=None, help="language codes (default: all in the corpus)")
    t.add_argument("--max-chars-per-lang", type=int, default=None,
                   help="training characters per language (default: the median language size)")
    t.add_argument("--seed", type=int, default=0, help="seed of the document sample (default 0)")
    t.add_argument("--out", required=True, help="output folder (tokenizer.json + tokenizer_config.json)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder that langmoe did not write (its content is deleted)")
    t.set_defaults(func=run_train)


def run_train(args) -> int:
    from pathlib import Path

    from rich.table import Table

    from langmoe.console import console as Console  # full width when piped
    from langmoe.data.corpus import open_corpus
    from langmoe.data.tokenizer import chars_per_token, train_tokenizer
    from langmoe.diagnostics import corpus_warnings, report_warnings
    from langmoe.errors import LangmoeError
    from langmoe.io import check_output, write_folder_atomically, write_json

    out = Path(args.out)
    if (out / "config.json").exists():
        raise LangmoeError(f"--out {out} holds a model (config.json): write the tokenizer to its own folder; "
                           "langmoe never replaces the tokenizer of a model")
    check_output(out, "tokenizer", inputs=[args.corpus], overwrite=args.overwrite)
    langs = [x for v in args.langs for x in v.split(",") if x] if args.langs else None
    corpus = open_corpus(args.corpus)
    report_warnings(corpus_warnings(corpus, [x for x in langs or [] if x in corpus.languages()] or None))
    stats: dict = {}
    tok = train_tokenizer(corpus, args.vocab_size, langs=langs, max_chars_per_lang=args.max_chars_per_lang,
                          seed=args.seed, stats=stats)
    langs = langs or corpus.languages()
    cpt = chars_per_token(tok, corpus, langs, split="valid")

    def writer(tmp: Path) -> None:  # the whole folder appears at once (or not at all)
        tok.save_pretrained(str(tmp))
        write_json(tmp / "langmoe_tokenizer.json", {
            "corpus": str(args.corpus), "vocab_size": len(tok), "seed": args.seed, "langs": list(langs),
            "cap_chars_per_lang": stats["cap_chars_per_lang"], "chars_used": stats["chars_used"],
            "valid_chars_per_token": cpt,
        })

    write_folder_atomically(out, writer, command="tokenizer")
    table = Table(title=f"tokenizer: {len(tok)} tokens -> {out}")
    for col in ("lang", "train chars used", "valid chars/token"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for lang in langs:
        c = cpt.get(lang)
        table.add_row(lang, f"{stats['chars_used'].get(lang, 0):,}", "-" if c is None else f"{c:.2f}")
    Console().print(table)
    return 0
