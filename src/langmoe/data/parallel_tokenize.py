"""Tokenising a long stream of documents fast, and saying how fast.

- `DocumentEncoder`: the ids `tokenizer(texts, add_special_tokens=False)` gives, computed by the Rust tokenizer's
  own `encode_batch` with its thread pool on (all cores; `RAYON_NUM_THREADS` limits it). Threads, not processes:
  nothing to start, no text pickled to workers, and the Python thread that reads the corpus runs while Rust
  tokenises (encode_batch releases the GIL). A tokenizer without a Rust backend is called as it is.
- `read_ahead`: a thread reads (decompresses, parses) the next batches of documents while the current batch is
  tokenised. Batches grow from 8 KB of text to 1 MB, so a run that needs a few thousand tokens reads little.
- `TokenizeProgress`: bytes/s, tokens and an ETA; a transient rich bar on a terminal, a plain line every 10 s (and
  a summary) when stderr is piped.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from langmoe.console import console
from langmoe.errors import LangmoeError

FIRST_BATCH_CHARS = 8192
MAX_BATCH_CHARS = 1 << 20
PLAIN_EVERY_S = 10.0


class DocumentEncoder:
    """Token ids of texts, exactly as `tokenizer(texts, add_special_tokens=False)["input_ids"]`."""

    def __init__(self, tokenizer, parallel: bool = True):
        self.tokenizer = tokenizer
        self.parallel = parallel
        self._fast = _backend_copy(tokenizer)
        self._checked = False

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        texts = list(texts)
        if not texts:
            return []
        if self._fast is None:
            return self._reference(texts)
        with _tokenizers_parallelism(self.parallel):
            run = getattr(self._fast, "encode_batch_fast", None) or self._fast.encode_batch
            ids = [e.ids for e in run(texts, add_special_tokens=False)]
        if not self._checked:  # the backend must agree with the tokenizer's own call, else use the call
            self._checked = True
            probe = texts[:4]
            if self._reference(probe) != ids[: len(probe)]:
                self._fast = None
                return self._reference(texts)
        return ids

    def _reference(self, texts: list[str]) -> list[list[int]]:
        out = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)
        return [list(x) for x in out["input_ids"]]


def _backend_copy(tokenizer):
    """A private copy of the Rust tokenizer with truncation and padding off (the HF wrapper turns them off per
    call; the copy keeps the user's object untouched), or None for a tokenizer without one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        from tokenizers import Tokenizer

        fast = Tokenizer.from_str(backend.to_str())
        fast.no_truncation()
        fast.no_padding()
        return fast
    except Exception:  # noqa: BLE001 - an exotic backend: the tokenizer's own call is always right
        return None


@contextmanager
def _tokenizers_parallelism(on: bool) -> Iterator[None]:
    """The `tokenizers` library reads TOKENIZERS_PARALLELISM at every call: on for our batches only."""
    key = "TOKENIZERS_PARALLELISM"
    old = os.environ.get(key)
    os.environ[key] = "true" if on else "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


_END = object()


@contextmanager
def read_ahead(docs: Iterator[Any], text_of=lambda d: d.text, first_chars: int = FIRST_BATCH_CHARS,
               max_chars: int = MAX_BATCH_CHARS, depth: int = 2) -> Iterator[Iterator[list[Any]]]:
    """Batches (lists) of `docs` read by a background thread, `depth` batches ahead. Leaving the block stops the
    thread and closes `docs`; an error while reading (a bad file) is raised in the caller's thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        limit, batch, chars = first_chars, [], 0
        try:
            for d in docs:
                if stop.is_set():  # the caller has what it needs: stop reading at once
                    return
                batch.append(d)
                chars += len(text_of(d))
                if chars >= limit:
                    if not put(batch):
                        return
                    batch, chars, limit = [], 0, min(max_chars, 2 * limit)
            if batch and not put(batch):
                return
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            put(e)
        finally:
            close = getattr(docs, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=reader, name="langmoe-read-ahead", daemon=True)
    thread.start()

    def batches() -> Iterator[list[Any]]:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    try:
        yield batches()
    finally:
        stop.set()
        while thread.is_alive():  # empty the queue so a reader waiting to put sees `stop` at once
            with suppress(queue.Empty):
                q.get(timeout=0.01)
        thread.join()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _fmt_duration(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{int(n)}"


class TokenizeProgress:
    """Progress of one tokenising job over several streams: `start(name)`, `add(tokens, nbytes)`, `close()`.

    `mode`: "auto" (a bar on a terminal, plain lines when piped), "lines" (always plain lines), "off". The ETA comes
    from `total_tokens` (when every stream has a token target), else from `total_bytes` (text bytes expected)."""

    def __init__(self, label: str, total_tokens: int | None = None, mode: str = "auto", stream=None,
                 total_bytes: int | None = None):
        if mode not in ("auto", "lines", "off"):
            raise LangmoeError(f"progress must be auto, lines or off, got {mode!r}")
        self.label = label
        self.total, self._by_bytes = (total_tokens, False) if total_tokens else (total_bytes, bool(total_bytes))
        self.stream = stream or sys.stderr
        self.tokens = self.nbytes = 0
        self.name = ""
        self.t0 = time.perf_counter()
        self._last_line = self.t0
        self._bar = self._task = None
        self._plain = mode == "lines" or (mode == "auto" and not _isatty(self.stream))
        self._off = mode == "off"
        if mode == "auto" and not self._plain:
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


        self._bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), TextColumn("{task.description}"),
                             TimeElapsedColumn(), console=console(stderr=True), transient=True)
        self._bar.start()
        self._task = self._bar.add_task("", total=self.total)

    def start(self, name: str) -> None:
        self.name = name

    def status(self) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.nbytes / dt
        text = (f"{self.name}: {_fmt_count(self.tokens)} tokens, {self.nbytes / 1e6:.1f} MB read, "
                f"{rate / 1e6:.2f} MB/s")
        done = self.nbytes if self._by_bytes else self.tokens
        if self.total and done:
            text += f", ETA {_fmt_duration(max(self.total - done, 0) * dt / done)}"
        return text

    def add(self, tokens: int, nbytes: int) -> None:
        self.tokens += int(tokens)
        self.nbytes += int(nbytes)
        if self._off:
            return
        if self._bar is not None:
            done = self.nbytes if self._by_bytes else self.tokens
            self._bar.update(self._task, completed=done if self.total else None, description=self.status())
        elif self._plain and time.perf_counter() - self._last_line >= PLAIN_EVERY_S:
            self._last_line = time.perf_counter()
            print(f"{self.label} {self.status()}", file=self.stream, flush=True)

    def close(self, summary: str | None = None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if summary and not self._off:
            print(f"{self.label}: {summary}", file=self.stream, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


__all__ = ["DocumentEncoder", "TokenizeProgress", "read_ahead"]
