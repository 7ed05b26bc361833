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
import re
import sys
import warnings

from langmoe.errors import LangmoeError


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors (a wrong choice, a missing or unknown option, a bad number) are one line and exit 2,
    like every other input error: `langmoe <command>: error: ...; see `langmoe <command> --help``, no usage block.

    Subparsers inherit the class (argparse's `add_subparsers` uses `type(self)`), so nested commands get it too.
    """

    def error(self, message: str):  # type: ignore[override]
        words = self.prog.split()
        name = " ".join(words[:2])  # `langmoe corpus stats` reports as `langmoe corpus`, like LangmoeErrors
        self.exit(2, f"{name}: error: {_argparse_line(message)}; see `{self.prog} --help`\n")


_INVALID_CHOICE = re.compile(r"argument (?P<opt>[^:]+): invalid choice: (?P<got>.*?) \(choose from (?P<ok>.*)\)$")


def _argparse_line(message: str) -> str:
    """argparse's message in one line; a wrong choice names the valid ones first (`--mode 'bogus' is not ...`)."""
    m = _INVALID_CHOICE.match(" ".join(message.split()))
    if m is None:
        return _one_line(message)
    ok = ", ".join(x.strip().strip("'\"") for x in m["ok"].split(","))
    opt = m["opt"].split("/")[-1]  # `-n/--num` -> `--num`
    return _one_line(f"{opt} {m['got']} is not a valid choice: choose one of {ok}", 600)


def build_parser() -> argparse.ArgumentParser:
    import langmoe.commands as commands

    parser = OneLineParser(prog="langmoe", description=__doc__.splitlines()[0])
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
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # named by the command they were given to (`langmoe group: error: ...`), not `langmoe`
            _chosen_parsers(parser, args)[-1].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as e:  # --help / --version (0), or a wrong option: one line already printed (2)
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from transformers.utils import logging as hf_logging

    from langmoe import io

    hf_logging.disable_progress_bar()  # our own progress bars and tables say what happens; HF's shard bars are noise
    io.set_command(args.command)
    try:
        check_empty_values(parser, args)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            from langmoe.diagnostics import LangmoeWarning

            warnings.simplefilter("always", LangmoeWarning)
            from langmoe.commands._options import command_scope

            with command_scope(args):  # a training command's precision settings and peak-memory line
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


# Options that list languages (codes separated by commas, spaces or, in `--groups`, slashes): when given, they must
# name at least one (`--langs ''`, `--new ,` are refused, not read as "no language" or "all of them").
LANGUAGE_LIST_OPTIONS = frozenset({"langs", "lang", "new", "old", "groups", "codes", "child", "parent"})


def check_empty_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, with one line, a text option given as nothing: `--out ''`, `--model ' '`, and a language list that
    holds only separators. Options left out keep their defaults and are not checked."""
    for action in _chosen_actions(parser, args):
        value = getattr(args, action.dest, None)
        if value is None or value is action.default:
            continue
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            continue
        name = action.option_strings[-1] if action.option_strings else (action.metavar or action.dest)
        if action.dest in LANGUAGE_LIST_OPTIONS:
            if not [x for x in re.split(r"[\s,/]+", " ".join(values)) if x]:
                raise LangmoeError(f"{name} {' '.join(values)!r} names no language: give language codes, e.g. "
                                   f"{name} de,fr")
        elif any(not v.strip() for v in values):
            raise LangmoeError(f"{name} is empty: give a value")


def _chosen_parsers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[argparse.ArgumentParser]:
    """The parsers on the way to the (sub)command that was parsed: `langmoe corpus stats` -> [langmoe, corpus,
    stats]."""
    chain = [parser]
    while True:
        subs = [a for a in chain[-1]._actions if isinstance(a, argparse._SubParsersAction)]
        nxt = next((a.choices[v] for a in subs if (v := getattr(args, a.dest, None)) in a.choices), None)
        if nxt is None:
            return chain
        chain.append(nxt)


def _chosen_actions(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[argparse.Action]:
    """The options of the (sub)command that was parsed (and of the parsers above it)."""
    return [a for p in _chosen_parsers(parser, args) for a in p._actions
            if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction, argparse._VersionAction))]


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
