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
        # imported when the command runs (CLI start-up)
        from langmoe.data.token_store import check_store_folder, using_token_store

        if args.token_store is not None:
            check_store_folder(args.token_store)  # at the edge: before the command writes anything
        with using_token_store(args.token_store):
            return run(args)

    parser.set_defaults(func=with_store)
