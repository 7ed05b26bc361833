"""Stage runner: each stage is cached by a hash of its inputs, written atomically, and never recomputed once done.

Layout of a run folder::

    run_dir/stages/<name>/          the stage's own work folder (checkpoints, saved models, files)
    run_dir/stages/<name>/stage.json  {"key", "result", "seconds"} written last (atomic): the stage is done

A stage's key hashes its config and the keys of the stages it reads from, so changing anything upstream
invalidates everything downstream. A folder whose `KEY` file names another key is wiped before the stage runs; a
folder with the same key but no `stage.json` is kept, so a killed training stage resumes from its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langmoe.errors import LangmoeError
from langmoe.io import list_files, read_json, write_json, write_text
from langmoe.precision import cache_fields

STAGE_FILE = "stage.json"
KEY_FILE = "KEY"
RUNNER_VERSION = "1"


def stage_key(name: str, config: Any, deps: Sequence[str] = ()) -> str:
    """sha256 over (runner version, name, canonical JSON of config, upstream keys), 20 hex chars. A command's
    `--dtype` / `--mixed-precision` / `--attn-implementation` enter the key when set (they change results)."""
    keyed = {"v": RUNNER_VERSION, "name": name, "config": config, "deps": list(deps)}
    if precision := cache_fields():
        keyed["precision"] = precision
    blob = json.dumps(
        keyed,
        sort_keys=True,
        ensure_ascii=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class StageRunner:
    """Runs named stages into `run_dir/stages/<name>/`, skipping those already done with the same key."""

    def __init__(self, run_dir: str | Path, log: Callable[[str], None] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.keys: dict[str, str] = {}
        self.ran: list[str] = []  # stages computed (not loaded from cache) in this process
        self.cached: list[str] = []
        self._log = log or (lambda _m: None)

    def stage_dir(self, name: str) -> Path:
        if not name or any(c in name for c in "\\:") or name.startswith(("/", ".")):
            raise LangmoeError(f"bad stage name {name!r}")
        return self.run_dir / "stages" / name

    def done(self, name: str) -> dict[str, Any] | None:
        """The stored record of a finished stage, or None."""
        f = self.stage_dir(name) / STAGE_FILE
        if not f.is_file():
            return None
        try:
            return read_json(f)
        except (OSError, ValueError):
            return None

    def run(
        self,
        name: str,
        config: Any,
        fn: Callable[[Path], Mapping[str, Any] | None],
        deps: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run `fn(stage_dir) -> result` unless done with the same key; return the (stored) JSON result.

        `deps` name earlier stages of this runner: their keys enter this stage's key.
        """
        missing = [d for d in deps if d not in self.keys]
        if missing:
            raise LangmoeError(f"stage {name!r} depends on {missing}, which have not run: run them first")
        key = stage_key(name, config, [self.keys[d] for d in deps])
        d = self.stage_dir(name)
        rec = self.done(name)
        if rec is not None and rec.get("key") == key:
            self.keys[name] = key
            self.cached.append(name)
            self._log(f"stage {name}: cached ({key})")
            return rec["result"]
        key_file = d / KEY_FILE
        if d.exists():
            old = key_file.read_text().strip() if key_file.is_file() else None
            if old != key or rec is not None:  # another config, or a finished stage being redone
                _refuse_user_files(d, rec)
                shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        write_text(key_file, key + "\n")
        self._log(f"stage {name}: running ({key})")
        t0 = time.perf_counter()
        result = dict(fn(d) or {})
        seconds = time.perf_counter() - t0
        write_json(d / STAGE_FILE, {"key": key, "name": name, "seconds": seconds, "result": result,
                                    "files": list_files(d)})  # what the stage wrote: a redo deletes only those
        self.keys[name] = key
        self.ran.append(name)
        return read_json(d / STAGE_FILE)["result"]  # the JSON form, identical to what a cached run returns


def _refuse_user_files(d: Path, rec: Mapping[str, Any] | None) -> None:
    """A finished stage records the files it wrote; one LangmoeError line when its folder now holds others (a
    user's notes), instead of deleting them with the stage. Folders of unfinished stages hold only what the
    stage was writing (checkpoints), and older records have no list: those are replaced as before."""
    listed = rec.get("files") if rec is not None else None
    if not isinstance(listed, list):
        return
    nested = [f for f in list_files(d) if Path(f).name == KEY_FILE and "/" in f]  # stages named "<this>/x"
    inner = tuple(f.rsplit("/", 1)[0] + "/" for f in nested)
    extra = sorted(f for f in set(list_files(d)) - set(listed) - {STAGE_FILE} if not f.startswith(inner))
    if extra:
        names = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise LangmoeError(f"stage folder {d} must be recomputed but holds files langmoe did not write ({names}): "
                           "move them out of the run folder and run again")


@contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `dest`; on success it replaces `dest` in one rename (see `langmoe.io`)."""
    from langmoe.io import atomic_dir as _atomic_dir

    with _atomic_dir(dest, command="run") as tmp:
        yield tmp
