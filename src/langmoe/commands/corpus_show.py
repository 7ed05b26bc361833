"""`langmoe corpus show`: print a few documents of one language and split, to look at the data."""

from __future__ import annotations

import json

from langmoe.commands._corpus_arg import MIX_HELP, CorpusAppend


def register_show(sub) -> None:
    s = sub.add_parser(
        "show", help="print documents of one language (a header line per document)",
        description="Print the first N documents of one language and split, each after a header line with its "
                    "id, source and length, cut to --max-chars characters.",
    )
    s.add_argument("--lang", required=True, help="language code (ISO 639-1 or 639-3)")
    s.add_argument("--split", default="test", help="train, valid or test (default: test)")
    s.add_argument("-n", "--num", type=int, default=3, help="documents to print (default: 3)")
    s.add_argument("--corpus", default="builtin", action=CorpusAppend,
        help="'builtin' (default) or a folder of <lang>.* files" + MIX_HELP)
    s.add_argument("--max-chars", type=int, default=1000, help="cut each document to this many characters (0: whole)")
    s.add_argument("--json", action="store_true", help="print JSON lines ({id, lang, source, chars, text})")
    s.set_defaults(func=run_show)


def show_documents(corpus, lang: str, split: str = "test", n: int = 3):
    """The first `n` documents of `lang`/`split`, with the number of documents in that split."""
    from langmoe.data.language_list import normalize_language_code
    from langmoe.errors import LangmoeError

    if n < 1:
        raise LangmoeError(f"-n must be at least 1, got {n}")
    code = lang if lang in corpus.languages() else normalize_language_code(lang)
    if code not in corpus.languages():
        raise LangmoeError(f"language {lang!r} is not in the corpus (it has: {', '.join(corpus.languages())}): "
                           "pick one of those")
    docs = []
    for d in corpus.iter_documents(code, split):
        docs.append(d)
        if len(docs) >= n:
            break
    return code, docs


def run_show(args) -> int:
    from langmoe.data.corpus import open_corpus
    from langmoe.errors import LangmoeError

    if args.max_chars < 0:
        raise LangmoeError(f"--max-chars must be >= 0, got {args.max_chars}")
    corpus = open_corpus(args.corpus)
    code, docs = show_documents(corpus, args.lang, args.split, args.num)
    if not docs:
        raise LangmoeError(f"the corpus has no {args.split} documents for {code!r}: try another --split")
    total = corpus.split_stats(code)[args.split].docs
    for i, d in enumerate(docs, 1):
        text = d.text if not args.max_chars or len(d.text) <= args.max_chars else d.text[: args.max_chars]
        if args.json:
            print(json.dumps({"id": d.id, "lang": d.lang, "source": d.source, "chars": len(d.text), "text": text},
                             ensure_ascii=False))
            continue
        cut = f", showing {len(text):,}" if len(text) < len(d.text) else ""
        src = f", source {d.source}" if d.source else ""
        print(f"=== {code} {args.split} document {i}/{total:,}: id {d.id}{src}, {len(d.text):,} characters{cut} ===")
        print(text + (" [...]" if cut else ""))
        print()
    return 0
