"""`langmoe tokenizer train`: a byte-level BPE on a language-balanced sample of a corpus, saved as an HF folder."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenizer", help="train tokenizers", description="Train tokenizers.")
    sub = p.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)
    t = sub.add_parser(
        "train", help="train a byte-level BPE tokenizer on a corpus",
        description="Train a byte-level BPE (<|endoftext|> = bos/eos/pad) on at most --max-chars-per-lang "
                    "characters of each language (default: the median language size) and save it with "
                    "save_pretrained.",
    )
    t.add_argument("--corpus", default="builtin", help="'builtin' (default) or a folder of <lang>.* files")
    t.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size (default 8192, at least 257)")
    t.add_argument("--langs", nargs="+", default=None, help="language codes (default: all in the corpus)")
    t.add_argument("--max-chars-per-lang", type=int, default=None,
                   help="training characters per language (default: the median language size)")
    t.add_argument("--seed", type=int, default=0, help="seed of the document sample (default 0)")
    t.add_argument("--out", required=True, help="output folder (tokenizer.json + tokenizer_config.json)")
    t.set_defaults(func=run_train)


def run_train(args) -> int:
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from langmoe.data.corpus import open_corpus
    from langmoe.data.tokenizer import chars_per_token, train_tokenizer
    from langmoe.io import write_json

    corpus = open_corpus(args.corpus)
    langs = [x for v in args.langs for x in v.split(",") if x] if args.langs else None
    stats: dict = {}
    tok = train_tokenizer(corpus, args.vocab_size, langs=langs, max_chars_per_lang=args.max_chars_per_lang,
                          seed=args.seed, stats=stats)
    langs = langs or corpus.languages()
    cpt = chars_per_token(tok, corpus, langs, split="valid")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out))
    try:  # every file appears whole: saved to a temp folder, then renamed into place
        tok.save_pretrained(str(tmp))
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_json(out / "langmoe_tokenizer.json", {
        "corpus": str(args.corpus), "vocab_size": len(tok), "seed": args.seed, "langs": list(langs),
        "cap_chars_per_lang": stats["cap_chars_per_lang"], "chars_used": stats["chars_used"],
        "valid_chars_per_token": cpt,
    })
    table = Table(title=f"tokenizer: {len(tok)} tokens -> {out}")
    for col in ("lang", "train chars used", "valid chars/token"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for lang in langs:
        c = cpt.get(lang)
        table.add_row(lang, f"{stats['chars_used'].get(lang, 0):,}", "-" if c is None else f"{c:.2f}")
    Console().print(table)
    return 0
