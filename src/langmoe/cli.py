"""Thin command line: each subcommand lives in `langmoe.commands.<name>` and wraps library functions.

A command module defines `register(subparsers)` which adds its parser and sets `func=run(args) -> int`.
Any LangmoeError (or an input error we can name, see `input_error_message`) becomes one line on stderr and exit
code 2; anything else is a bug and keeps its traceback.
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
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars and tables say what happens; HF's shard bars are noise
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `langmoe ... | head` closed the pipe: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"langmoe {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - mapped to one line below, or re-raised with its traceback
        msg = input_error_message(e)
        if msg is None:
            print(f"langmoe {args.command}: internal error ({type(e).__name__}), not a problem with your input: "
                  "please report it with the command line and the traceback below", file=sys.stderr)
            raise
        print(f"langmoe {args.command}: error: {msg}", file=sys.stderr)
        return 2


def input_error_message(e: BaseException) -> str | None:
    """One line saying what to fix for an error caused by the user's input, or None for a genuine bug.

    Library code raises LangmoeError itself; the rest are input errors that escaped a library check (a missing
    or unreadable file, a non-UTF-8 text file, broken YAML, a config field pydantic rejects, truncated weights).
    """
    if isinstance(e, LangmoeError):
        return _one_line(str(e))
    if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        what = e.strerror or type(e).__name__
        return _one_line(f"{what}: {e.filename}" if e.filename else f"{what}: {e}") + ": check the path"
    if isinstance(e, UnicodeDecodeError):
        return (f"a file is not UTF-8 text ({e.encoding} cannot decode byte {e.object[e.start:e.start + 1]!r} at "
                f"position {e.start}): convert it to UTF-8")
    import yaml

    if isinstance(e, yaml.YAMLError):
        return "invalid YAML: " + _one_line(str(e))
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        text = err["msg"].removeprefix("Value error, ")
        return _one_line(f"{loc}: {text}" if loc else text) + f" (in {e.title})"
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover
        SafetensorError = ()  # noqa: N806
    if SafetensorError and isinstance(e, SafetensorError):
        return f"cannot read a .safetensors weights file ({_one_line(str(e))}): it is corrupt or truncated, re-save it"
    return None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


if __name__ == "__main__":
    raise SystemExit(main())
