"""What benchmark scripts share: the command line they record (routing_builtin, routing_cpt, expert_peft,
dmoe_distant), clearing their own files from a folder `langmoe routing` writes, the `__main__` wrapper (a
LangmoeError is one line on stderr and exit 2), and printing a report and writing it with its JSON beside it
(the expansion benchmarks)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

OWN_FILES = ("RESULTS.md", "findings.json")


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """`python benchmarks/<script> ARGS` as run (ARGS: `argv`, or the process's own when None)."""
    return shlex.join(["python", f"benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)])


def clear_own_files(out: Path, names: Sequence[str] = OWN_FILES) -> None:
    """Remove the script's own files beside langmoe's before `langmoe routing` rewrites the folder (else the
    folder holds files langmoe did not write and is refused as foreign)."""
    for name in names:
        (out / name).unlink(missing_ok=True)


def run_main(main: Callable[[], int], file: str) -> None:
    """`raise SystemExit(main())`, a LangmoeError as `<script>: error: <message>` and exit 2."""
    from langmoe.errors import LangmoeError

    try:
        raise SystemExit(main())
    except LangmoeError as e:
        print(f"{Path(file).name}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def publish(text: str, data: Any, out: str | Path | None) -> None:
    """Print the markdown report; with `out`, write it there and `data` as JSON beside it (`<out>.json`), each
    atomically like every langmoe output."""
    from langmoe.io import write_text

    print(text)
    if out:
        write_text(out, text)
        write_text(Path(out).with_suffix(".json"), json.dumps(data, indent=1))
