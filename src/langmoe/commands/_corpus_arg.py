"""The `--corpus` option every command shares: repeat it to mix sources (`--corpus builtin --corpus my_folder`).

One `--corpus X` (or none: 'builtin') leaves `args.corpus` a plain string exactly as before; several make it the
list `langmoe.data.corpus.open_corpus` mixes (see MixedCorpus).
"""

from __future__ import annotations

import argparse

from langmoe.data.corpus import corpus_spec

MIX_HELP = "; repeat --corpus to mix sources"


class CorpusAppend(argparse.Action):
    """Collect every `--corpus` value in order; store the open_corpus spec (a string for one, a list for many)."""

    def __call__(self, parser, namespace, values, option_string=None):
        key = f"_{self.dest}_given"
        given = [*(getattr(namespace, key, None) or []), values]
        setattr(namespace, key, given)
        setattr(namespace, self.dest, corpus_spec(given))
