"""Terminal output that stays readable when piped: full-width tables and progress that degrades to plain lines.

- `console()`: a rich Console for stdout. On a terminal it wraps at the terminal's width; piped to a file or a
  pager it gets a very wide width, so tables are printed at their natural width, never cut to 80 columns
  ("dmoe_ra…", "0.…"), and styles are dropped (rich strips them when the output is not a terminal).
- `progress(label, total)`: a transient rich progress bar on stderr when stderr is a terminal; otherwise nothing
  is drawn and `update(text)` prints one plain line per item (per language, per stage) to stderr, so a log file
  shows where a long step is without carriage-return noise.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

PIPED_WIDTH = 1000  # columns when stdout is not a terminal: wider than any table langmoe prints


def console(stderr: bool = False):
    """A rich Console: the terminal's width on a terminal, `PIPED_WIDTH` columns otherwise."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if _isatty(stream):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPED_WIDTH, soft_wrap=False)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams (pytest's capture)
        return False


class Progress:
    """One long step's progress: `advance(text)` after each item (a language, a window batch)."""

    def __init__(self, label: str, total: int | None, bar=None, task=None, plain: bool = False):
        self.label, self.total = label, total
        self._bar, self._task, self._plain = bar, task, plain
        self.done = 0

    def advance(self, text: str = "") -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=text)
        elif self._plain and text:
            of = f"/{self.total}" if self.total else ""
            print(f"{self.label} {self.done}{of}: {text}", file=sys.stderr, flush=True)


@contextmanager
def progress(label: str, total: int | None, plain_lines: bool = True, enabled: bool = True) -> Iterator[Progress]:
    """A transient bar on a terminal (stderr); `plain_lines` prints a line per item when stderr is not one.

    `enabled=False` draws nothing at all (library calls inside a stage that logs on its own)."""
    if not enabled:
        yield Progress(label, total)
        return
    if not _isatty(sys.stderr):
        yield Progress(label, total, plain=plain_lines)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as _RichProgress

    bar = _RichProgress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=console(stderr=True), transient=True)
    with bar:
        task = bar.add_task("", total=total)
        yield Progress(label, total, bar=bar, task=task)
