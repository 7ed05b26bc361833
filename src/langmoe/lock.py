"""A run-folder lock: one `langmoe run` / `demo` per folder at a time.

The lock is a file `.langmoe.lock` holding {pid, host, start, command, time}, created in one step (written to a
temp file, then hard-linked into place, which fails if the lock exists), so a reader never sees a half-written
lock. A lock whose process is gone (same host, pid not alive, or alive but started at another time: the pid was
reused) is stale and taken over; a live one, or one from another host, is refused with one line naming the holder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from langmoe.errors import LangmoeError

LOCK_FILE = ".langmoe.lock"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), to tell a live holder from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _me(command: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
            "command": command, "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}


def read_lock(folder: str | Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(folder) / LOCK_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_stale(holder: dict[str, Any]) -> bool:
    """True when the holder is certainly gone: same host and its pid is dead (or now another process)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    pid = holder["pid"]
    if not _alive(pid):
        return True
    started = holder.get("start")
    now = _start_time(pid)
    return started is not None and now is not None and started != now


def acquire(folder: str | Path, command: str) -> Path:
    """Take the lock of `folder` (which must exist) or raise LangmoeError naming the holder."""
    folder = Path(folder)
    lock = folder / LOCK_FILE
    fd, tmp = tempfile.mkstemp(prefix=".langmoe.lock.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_me(command), f)
        for _ in range(3):
            try:
                os.link(tmp, lock)
                return lock
            except FileExistsError:
                holder = read_lock(folder)
                if holder is None:
                    continue  # released meanwhile
                if holder and not is_stale(holder):
                    gone = "" if holder.get("host") == socket.gethostname() else (
                        f"; if that process is gone, delete {lock}")
                    raise LangmoeError(
                        f"{folder} is in use by `langmoe {holder.get('command', '?')}` (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('time')}): wait for it to finish, or choose "
                        f"another folder{gone}") from None
                if not holder:  # unreadable: only a crash between our own two steps could leave one
                    raise LangmoeError(f"{lock} is unreadable: if no langmoe process uses {folder}, delete it") from None
                _remove_if_same(lock, holder)  # stale: the process is gone
        raise LangmoeError(f"cannot take the lock {lock}: another process keeps taking it; retry")
    finally:
        os.unlink(tmp)


def _remove_if_same(lock: Path, holder: dict[str, Any]) -> None:
    try:
        if json.loads(lock.read_text(encoding="utf-8")) == holder:
            lock.unlink()
    except (OSError, ValueError):
        pass


def release(folder: str | Path) -> None:
    """Drop the lock if this process holds it."""
    lock = Path(folder) / LOCK_FILE
    holder = read_lock(folder)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with suppress(FileNotFoundError):
            lock.unlink()


@contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold the lock of `folder` for the duration of the block."""
    path = acquire(folder, command)
    try:
        yield path
    finally:
        release(folder)
