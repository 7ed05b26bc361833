"""`langmoe languages`: every language langmoe has metadata for (code, name, family, genus, script), or what it
knows about given codes (any ISO 639-1 / 639-3 code is valid; metadata is needed only to group languages)."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "languages", help="list known languages (code, name, family, genus, script) or look codes up",
        description="Without CODES: every language with metadata (code, name, family, genus, script, ISO 639-3, "
                    "ISO 15924, in the built-in corpus). With CODES: what langmoe knows about each (any ISO 639-1 "
                    "or 639-3 code is accepted; languages without metadata are declared in languages.yaml).",
    )
    p.add_argument("codes", nargs="*", help="language codes to look up (ISO 639-1 or 639-3, e.g. de deu ast)")
    p.add_argument("--family", help="only this family (e.g. Uralic)")
    p.add_argument("--script", help="only this script: a name (Latin) or an ISO 15924 code (Latn)")
    p.add_argument("--builtin", action="store_true", help="only languages of the built-in corpus")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def print_columns(header: list[str], rows: list[list[str]]) -> None:
    """Plain aligned columns, never cut to the terminal width (readable when piped to a file)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for r in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip())


def run(args) -> int:
    from langmoe.data.language_list import list_languages, lookup_code

    if args.codes:
        codes = [c for v in args.codes for c in v.split(",") if c]
        found = [lookup_code(c) for c in codes]
        if args.json:
            print(json.dumps(found, indent=2, ensure_ascii=False))
            return 0
        rows = []
        for f in found:
            if f["metadata"]:
                what = f"{f['name']} | {f['family']} | {f['genus']} | {f['script']}"
            else:
                what = "no metadata: declare name, family, genus, script in languages.yaml to group it"
            rows.append([str(f["given"]), str(f["code"]), str(f["iso639_3"]), str(f["iso_name"]),
                         "yes" if f["builtin"] else "no", what])
        print_columns(["given", "code", "iso639-3", "ISO name", "builtin", "name | family | genus | script"], rows)
        return 0
    langs = list_languages(family=args.family, script=args.script, builtin_only=args.builtin)
    if args.json:
        print(json.dumps([r.model_dump() for r in langs], indent=2, ensure_ascii=False))
        return 0
    n_builtin = sum(r.builtin for r in langs)
    print(f"{len(langs)} languages ({n_builtin} in the built-in corpus), {len({r.family for r in langs})} families, "
          f"{len({r.script for r in langs})} scripts. Any other ISO 639-1/639-3 code works when declared in "
          "languages.yaml.")
    print_columns(["code", "name", "family", "genus", "script", "iso639-3", "iso15924", "builtin"],
                  [[r.code, r.name, r.family, r.genus, r.script, r.iso639_3, r.iso15924, "yes" if r.builtin else "no"]
                   for r in langs])
    return 0
