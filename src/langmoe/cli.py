"""Thin command line: each subcommand lives in `langmoe.commands.<name>` and wraps library functions.

A command module defines `register(subparsers)` which adds its parser and sets `func=run(args) -> int`.
Any LangmoeError (or an input error we can name) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from langmoe.errors import LangmoeError


def build_parser() -> argparse.ArgumentParser:
    import langmoe.commands as commands

    parser = argparse.ArgumentParser(prog="langmoe", description=__doc__.splitlines()[0])
    from langmoe import __version__

    parser.add_argument("--version", action="version", version=f"langmoe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"langmoe.commands.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LangmoeError as e:
        print(f"langmoe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"langmoe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
