"""Thin command line: each subcommand lives in `langmoe.commands.<name>` and wraps library functions.

A command module defines `register(subparsers)` which adds its parser and sets `func=run(args) -> int`.
Any LangmoeError (or an input error we can name, see `input_error_message`) becomes one line on stderr and exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings

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

    from langmoe import io

    hf_logging.disable_progress_bar()  # our own progress bars and tables say what happens; HF's shard bars are noise
    io.set_command(args.command)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            from langmoe.diagnostics import LangmoeWarning

            warnings.simplefilter("always", LangmoeWarning)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"langmoe {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `langmoe ... | head`: the reader left; say nothing, like other Unix tools
        _silence_stdout()
        return 141
    except Exception as e:  # noqa: BLE001 - mapped to one line below, or re-raised with its traceback
        msg = input_error_message(e)
        if msg is None:
            print(f"langmoe {args.command}: internal error ({type(e).__name__}), not a problem with your input: "
                  "please report it with the command line and the traceback below", file=sys.stderr)
            raise
        print(f"langmoe {args.command}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        io.set_command(None)


def _one_line_warning(command: str):
    """`warnings.showwarning` replacement: each warning is one `langmoe <cmd>: warning: ...` line on stderr."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"langmoe {command}: warning: {_one_line(str(message), 400)}", file=file or sys.stderr)

    return show


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


def input_error_message(e: BaseException) -> str | None:
    """One line saying what to fix for an error caused by the user's input, or None for a genuine bug.

    Library code raises LangmoeError itself; the rest are input errors that escaped a library check (a missing
    or unreadable file, a non-UTF-8 text file, broken YAML, a config field pydantic rejects, truncated weights).
    """
    if isinstance(e, LangmoeError):
        return _one_line(str(e))
    from langmoe.io import disk_error_message, is_disk_error

    if is_disk_error(e):
        where = getattr(e, "filename", None)
        return disk_error_message(e, str(where) if where else "a file")
    if isinstance(e, FileExistsError):
        return _one_line(f"{e.filename} already exists (a file where a folder is needed?): choose another path")
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
        from langmoe.validation import error_line

        return _one_line(error_line(e)) + f" (in {e.title})"
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
