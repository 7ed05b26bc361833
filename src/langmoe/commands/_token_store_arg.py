"""The `--token-store STORE` option every packing command shares (one line in each command's `register`).

The command then packs and evaluates from STORE (a folder `langmoe tokenize` prepared, or a new one it fills):
tokens already there are read through memory maps, missing ones are tokenised into it. Without the option a
command keeps its own store (`langmoe run`/`demo`: `RUN/tokens`; `train`/`pretrain`: `OUT/train/tokens`) or a
temporary one.
"""

from __future__ import annotations

import functools

TOKEN_STORE_HELP = ("token store folder to read (and extend) instead of tokenising into the run's own "
                    "(prepare one with `langmoe tokenize`)")


def add_token_store_option(parser) -> None:
    """Add `--token-store` and wrap the command's `func` (call after `set_defaults(func=...)`)."""
    parser.add_argument("--token-store", default=None, metavar="STORE", help=TOKEN_STORE_HELP)
    run = parser.get_default("func")

    @functools.wraps(run)
    def with_store(args) -> int:
        from langmoe.data.token_store import (
            using_token_store,  # imported when the command runs (CLI start-up)
        )

        if args.token_store is not None:
            check_store_path(args.token_store)  # before the command creates its own output
        with using_token_store(args.token_store):
            return run(args)

    parser.set_defaults(func=with_store)


def check_store_path(store: str, flag: str = "--token-store") -> None:
    """One line for a --token-store that cannot be a store: empty, under a file, a file, or a folder with other
    files and no store manifest (the store would refuse it later, after the command made its output folder)."""
    from pathlib import Path

    from langmoe.data.token_store import MANIFEST
    from langmoe.errors import LangmoeError

    if not str(store).strip():
        raise LangmoeError(f"{flag} is empty: give a folder path")
    path = Path(store).expanduser()
    blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None or (path.exists() and not path.is_dir()):
        raise LangmoeError(f"{flag} {path}: {blocker or path} is a file, not a folder; give a folder path")
    if path.is_dir() and not (path / MANIFEST).is_file() and any(p.name != ".lock" for p in path.iterdir()):
        raise LangmoeError(f"{path} is not a token store (no {MANIFEST}) and is not empty: give a new or empty "
                           f"folder for {flag}")
