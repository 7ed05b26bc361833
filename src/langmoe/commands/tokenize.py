"""`langmoe tokenize`: tokenise a corpus into a token store ahead of time (then `--token-store STORE` anywhere)."""

from __future__ import annotations

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenize", help="tokenise a corpus into a token store (memory-mapped shards) ahead of training",
        description="Tokenise each language's documents once, in parallel, into a token store: per split and "
                    "language a stream of uint16/uint32 tokens in shards with a document index. Commands read it "
                    "with --token-store STORE and start at once. Interrupted: rerun the same command to continue; "
                    "rerun with a larger --max-tokens-per-lang to extend.",
    )
    p.add_argument("--corpus", default="builtin", action=CorpusAppend,
                   help="'builtin', a corpus folder or hf:<dataset>?... (see docs/data.md)" + MIX_HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model whose tokenizer to use: HF folder, hub id or 'builtin'")
    src.add_argument("--tokenizer", help="a saved tokenizer folder")
    p.add_argument("--langs", nargs="+", default=None, help="language codes (default: all of the corpus)")
    p.add_argument("--splits", default="train",
                   help="comma-separated splits to tokenise (default train; evaluation adds the held-out text it "
                        "scores when it needs it)")
    p.add_argument("--max-tokens-per-lang", type=int, default=None,
                   help="tokens per language and split (whole documents up to the first that reaches it; "
                        "default: all)")
    p.add_argument("--out", required=True, help="the store folder: new, empty, or a store to continue or extend")
    p.add_argument("--shard-tokens", type=int, default=None, help="tokens per shard file (default 16M)")
    p.add_argument("--verify", action="store_true", help="recompute every shard's checksum at the end")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from rich.table import Table

    from langmoe.commands._checks import at_least
    from langmoe.commands._token_store_arg import check_store_path
    from langmoe.commands.eval import split_langs
    from langmoe.console import console as wide_console
    from langmoe.data.corpus import SPLITS, choose_languages, corpus_paths, open_corpus
    from langmoe.data.token_store import SHARD_TOKENS, Request, TokenStore
    from langmoe.errors import LangmoeError
    from langmoe.models.base import load_tokenizer, resolve_model_path

    splits = [s for s in args.splits.split(",") if s]
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise LangmoeError(f"--splits {args.splits!r}: use train, valid and/or test, comma separated")
    at_least("--max-tokens-per-lang", args.max_tokens_per_lang, 1)
    at_least("--shard-tokens", args.shard_tokens, 1)
    check_store_path(args.out, flag="--out")  # a foreign folder is refused before the store's lock goes in it
    out = Path(args.out).expanduser().resolve()
    for inp in corpus_paths(args.corpus):
        p = Path(inp).expanduser()
        if inp != "builtin" and not inp.startswith("hf:") and p.exists() and (out == p.resolve() or
                                                                             p.resolve() in out.parents):
            raise LangmoeError(f"--out {args.out} is inside the corpus {inp}: write the store outside the corpus")
    corpus = open_corpus(args.corpus)
    langs = choose_languages(corpus, split_langs(args.langs))
    tok = load_tokenizer(resolve_model_path(args.model) if args.model else Path(args.tokenizer))
    store = TokenStore(out, tok, shard_tokens=SHARD_TOKENS if args.shard_tokens is None else args.shard_tokens)
    store.ensure(corpus, [Request(lang, s, tokens=args.max_tokens_per_lang) for s in splits for lang in langs])
    digest = store.content_hash(verify=args.verify)
    rows = [r for r in store.summary() if r["lang"] in langs and r["split"] in splits]
    t = Table(title=f"token store {args.out}")
    for col in ("split", "lang", "docs", "tokens", "text MB", "disk MB", "bytes/token", "whole split"):
        t.add_column(col, justify="left" if col in ("split", "lang") else "right")
    for r in rows:
        t.add_row(r["split"], r["lang"], f"{r['docs']:,}", f"{r['tokens']:,}", f"{r['text_bytes'] / 1e6:.1f}",
                  f"{r['disk_bytes'] / 1e6:.1f}", f"{r['disk_bytes'] / max(r['tokens'], 1):.2f}",
                  "yes" if r["exhausted"] else "no")
    tokens, disk = sum(r["tokens"] for r in rows), sum(r["disk_bytes"] for r in rows)
    t.add_row("all", "", f"{sum(r['docs'] for r in rows):,}", f"{tokens:,}",
              f"{sum(r['text_bytes'] for r in rows) / 1e6:.1f}", f"{disk / 1e6:.1f}", f"{disk / max(tokens, 1):.2f}",
              "", style="bold")
    console = wide_console()
    console.print(t)
    console.print(f"store {args.out}: {tokens:,} tokens, {store.dtype.itemsize} bytes a token "
                  f"({disk / max(tokens, 1):.2f} with the document index); content hash {digest[:16]}"
                  + (" (checksums verified)" if args.verify else ""))
    return 0
