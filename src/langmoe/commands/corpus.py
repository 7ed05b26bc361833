"""`langmoe corpus stats`: sizes, families and scripts of a corpus (built-in or a folder), as a table or JSON."""

from __future__ import annotations

import json

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend


def register(subparsers) -> None:
    p = subparsers.add_parser("corpus", help="inspect a corpus", description="Inspect a corpus.")
    sub = p.add_subparsers(dest="corpus_command", metavar="SUBCOMMAND", required=True)
    s = sub.add_parser(
        "stats", help="documents, characters and bytes per language and split",
        description="Per language: name, family, genus, script, and documents / characters / UTF-8 bytes per "
                    "split, with totals and the number of distinct families and scripts.",
    )
    s.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' (default) or a folder of <lang>.* files" + MIX_HELP)
    s.add_argument("--langs", nargs="+", default=None, help="only these language codes (space or comma separated)")
    s.add_argument("--json", action="store_true", help="print JSON to stdout instead of a table")
    s.set_defaults(func=run_stats)
    from langmoe.commands.corpus_show import register_show

    register_show(sub)


def run_stats(args) -> int:
    from langmoe.data.corpus import SPLITS, corpus_stats, open_corpus
    from langmoe.errors import LangmoeError

    corpus = open_corpus(args.corpus)
    langs = [x for v in args.langs for x in v.split(",") if x] if args.langs else None
    if langs:
        missing = [x for x in langs if x not in corpus.languages()]
        if missing:
            raise LangmoeError(f"languages {', '.join(missing)} are not in the corpus "
                               f"(it has: {', '.join(corpus.languages())})")
    from langmoe.diagnostics import (
        THIN_SPLIT_CHARS,
        corpus_warnings,
        report_warnings,
        thin_split_warnings,
        thin_splits,
    )

    report_warnings(corpus_warnings(corpus, langs))
    stats = corpus_stats(corpus, langs)
    thin = thin_splits(stats)
    report_warnings(thin_split_warnings(thin))
    if args.json:
        data = {"corpus": args.corpus if isinstance(args.corpus, list) else str(args.corpus),
                **stats.model_dump(mode="json"), "thin_splits": thin, "thin_split_chars": THIN_SPLIT_CHARS}
        if isinstance(args.corpus, list):  # mixed sources: which source gave each language what
            from langmoe.data.corpus import corpus_sources

            data["sources"] = corpus_sources(corpus, langs)
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    from rich.table import Table

    from langmoe.console import console as Console

    label = " + ".join(args.corpus) if isinstance(args.corpus, list) else args.corpus
    t = Table(title=f"corpus {label}: {len(stats.languages)} languages, {len(stats.families)} families, "
                    f"{len(stats.scripts)} scripts")
    for col in ("code", "name", "family", "genus", "script"):
        t.add_column(col)
    for s in SPLITS:
        for what in ("docs", "chars", "bytes"):
            t.add_column(f"{s} {what}", justify="right")
    t.add_column("note")
    for r in stats.languages:
        note = ", ".join(f"thin {s}" for s in thin.get(r.code, {}))
        t.add_row(r.code, r.name, r.family, r.genus, r.script,
                  *[f"{getattr(r.splits[s], w):,}" for s in SPLITS for w in ("docs", "chars", "bytes")],
                  note, style="yellow" if note else None)
    t.add_row("total", "", f"{len(stats.families)} families", "", f"{len(stats.scripts)} scripts",
              *[f"{getattr(stats.totals[s], w):,}" for s in SPLITS for w in ("docs", "chars", "bytes")],
              f"{len(thin)} thin" if thin else "", style="bold")
    Console().print(t)
    return 0
