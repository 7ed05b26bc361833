"""`langmoe demo` (interim): built-in corpus statistics and the per-language evaluation of the shipped tiny base.

The full DMoE demo pipeline replaces this once it exists; until then the demo shows the two things every later
stage builds on: the data and the dense base.
"""

from __future__ import annotations

from langmoe.commands.eval import print_eval_table, set_threads, split_langs


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="corpus statistics + evaluation of the shipped tiny base (CPU, about a minute)",
        description="Print per-language statistics of the built-in corpus, then the per-language test perplexity "
                    "and bits per byte of the shipped tiny base next to a unigram baseline.",
    )
    p.add_argument("--langs", nargs="+", default=None, help="language codes (default: all)")
    p.add_argument("--max-chars", type=int, default=5_000, help="test characters per language (default 5000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", dest="json_out", default=None, help="also write the eval table as JSON here")
    p.set_defaults(func=run)


def corpus_stats(corpus, langs: list[str]) -> dict[str, dict[str, dict[str, int]]]:
    """Documents and characters per language and split (streams the corpus once)."""
    stats: dict[str, dict[str, dict[str, int]]] = {}
    for lang in langs:
        stats[lang] = {}
        for split in ("train", "valid", "test"):
            docs = chars = 0
            for doc in corpus.iter_documents(lang, split):
                docs += 1
                chars += len(doc.text)
            stats[lang][split] = {"docs": docs, "chars": chars}
    return stats


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from langmoe.data.corpus import open_corpus
    from langmoe.errors import LangmoeError
    from langmoe.eval.perplexity import EvalSettings, evaluate_folder
    from langmoe.io import write_json

    set_threads(args.threads)
    corpus = open_corpus("builtin")
    have = list(corpus.languages())
    langs = split_langs(args.langs) or have
    missing = [x for x in langs if x not in have]
    if missing:
        raise LangmoeError(f"languages {', '.join(missing)} are not in the built-in corpus (it has: {', '.join(have)})")
    stats = corpus_stats(corpus, langs)
    t = Table(title="built-in corpus")
    for col in ("lang", "train docs", "train chars", "valid chars", "test chars"):
        t.add_column(col, justify="left" if col == "lang" else "right")
    for lang, s in stats.items():
        t.add_row(lang, f"{s['train']['docs']:,}", f"{s['train']['chars']:,}", f"{s['valid']['chars']:,}",
                  f"{s['test']['chars']:,}")
    t.add_row("total", f"{sum(s['train']['docs'] for s in stats.values()):,}",
              f"{sum(s['train']['chars'] for s in stats.values()):,}",
              f"{sum(s['valid']['chars'] for s in stats.values()):,}",
              f"{sum(s['test']['chars'] for s in stats.values()):,}", style="bold")
    Console().print(t)
    table = evaluate_folder("builtin", "builtin", langs, EvalSettings(max_chars_per_lang=args.max_chars or None))
    print_eval_table(table, "shipped tiny base on the built-in test split")
    if args.json_out:
        write_json(args.json_out, {"corpus": stats, "eval": table})
    return 0
