"""Safe file output: atomic writes, and one policy for output folders so that no command destroys data.

Files are written to a temp file in the same folder, then renamed over the target (atomic on POSIX). Folders:

* an output folder is **claimed** with a marker file, `.langmoe-output.json` (command, time, version, layout);
  a folder written whole (`atomic_dir`) also lists every file langmoe put in it (`files`, kept up to date when
  langmoe later writes a file into it), a folder filled step by step (`claim_output`: training, runs) says
  `"layout": "growing"`;
* a command may write a new folder, an empty one, or one it marked itself earlier (rerun, resume, replace);
  anything else is refused with one line unless the user passes `--overwrite`; so is a folder about to be
  replaced whole that now holds files langmoe did not write (`foreign_files`: a user's notes are never deleted
  without `--overwrite`). A marker written before markers listed files (no `layout`): files changed more than a
  minute after the marker count as someone else's;
* an output equal to, inside, or containing one of the command's inputs is refused;
* an existing *file* is never turned into a folder nor renamed away;
* temp files and folders get permissions that follow the umask (mkstemp/mkdtemp would give 0600/0700).

`check_output` is the guard the CLI calls before doing any work; `write_folder_atomically` / `atomic_dir` replace a
whole folder in one rename; `claim_output` marks a folder that a command fills step by step (training, runs).
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from langmoe.errors import LangmoeError
from langmoe.lock import LOCK_FILE as _LOCK_FILE

MARKER = ".langmoe-output.json"
# Commands that may take over each other's folders (`demo` runs the `run` pipeline into the same layout).
_FAMILIES = {"demo": "run"}
# Errors of the machine, not of the input: a save that fails with one of these says so in one line.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}
_GROWING_COMMANDS = {"run", "demo", "train", "pretrain", "deviation", "lm-eval-tasks"}  # layout of markers that do not record one
# A marker without a file list (written before files were listed): how long after it langmoe may still have
# written files into the folder (a command's closing JSON); anything changed later counts as someone else's.
_LEGACY_SLACK_S = 60.0
_current_command: str | None = None  # set by the CLI: folders written during a command are marked with its name


_permitted: set[Path] = set()  # folders the user allowed to be replaced (`--overwrite`) in this command


def set_command(name: str | None) -> None:
    """Name the CLI command running now (markers of folders written without an explicit command use it);
    None ends the command and forgets its `--overwrite` permissions."""
    global _current_command
    _current_command = name
    _permitted.clear()


# ---- permissions -----------------------------------------------------------------------------------------------


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-global and not thread-safe)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fix_mode(path: str | Path, folder: bool = False) -> None:
    """Give a mkstemp/mkdtemp path the permissions a plain open/mkdir would have had (0o666/0o777 & ~umask)."""
    with suppress(OSError):
        os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def fix_tree_modes(folder: str | Path) -> None:
    """Add the read/write bits the umask allows to everything under `folder` (some writers use mkstemp: 0600)."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        for name, base in [(d, 0o777) for d in dirs] + [(f, 0o666) for f in files]:
            p = os.path.join(root, name)
            with suppress(OSError):
                os.chmod(p, (os.lstat(p).st_mode & 0o7777) | (base & ~mask))


# ---- atomic files ----------------------------------------------------------------------------------------------


@contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temp path next to `path`; on success rename it over `path` (atomic on POSIX), and list it in the
    file list of the langmoe folder it lands in (`record_written`)."""
    path = Path(path)
    if path.is_dir():
        raise LangmoeError(f"{path} is a folder: give a file path to write")
    _make_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    fix_mode(tmp)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if path.name != MARKER:
        record_written(path)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def write_yaml(path: str | Path, obj: Any) -> None:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def write_with(path: str | Path, writer: Callable[[Path], None], suffix: str = "") -> None:
    """Atomically produce `path` with a writer that takes a destination path (e.g. savefig, torch.save)."""
    with atomic_path(path, suffix=suffix) as tmp:
        writer(tmp)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(o: Any):
    if isinstance(o, BaseModel):
        return o.model_dump(mode="json")
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _make_parent(path: Path) -> None:
    """mkdir -p the parent, with one line when something on the way is a file."""
    blocker = _file_on_the_way(path)
    if blocker is not None:
        raise LangmoeError(f"cannot write {path}: {blocker} is a file, not a folder; choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)


def _file_on_the_way(path: Path) -> Path | None:
    """The first existing non-folder among the parents of `path` (it blocks creating `path`), or None."""
    for parent in reversed(Path(path).parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


# ---- the output marker -----------------------------------------------------------------------------------------


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker of a folder langmoe wrote (`{"command", "time", ...}`), or None (absent or unreadable)."""
    f = Path(folder) / MARKER
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def write_marker(folder: str | Path, command: str, files: Iterable[str] | None = None) -> None:
    """Mark `folder` as `command`'s output: with `files` (its whole content, relative paths) for a folder written
    in one go, without for one a command fills step by step ("growing")."""
    from langmoe import __version__

    marker: dict[str, Any] = {"command": command, "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                              "langmoe": __version__}
    marker.update({"layout": "growing"} if files is None else {"layout": "whole", "files": sorted(set(files))})
    write_json(Path(folder) / MARKER, marker)


def list_files(folder: str | Path) -> list[str]:
    """Every file (and symlink) under `folder` as a relative POSIX path, without markers and run locks."""
    root = Path(folder)
    out = []
    for dirpath, dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        out += [(rel / f).as_posix() for f in files]
        out += [(rel / d).as_posix() for d in dirs if os.path.islink(os.path.join(dirpath, d))]
    return sorted(f for f in out if Path(f).name not in (MARKER, _LOCK_FILE))


def foreign_files(folder: str | Path) -> list[str]:
    """What in a langmoe-written folder langmoe did not write (relative paths; a foreign folder ends in '/').

    With a file list in the marker: every file not on it, and every folder holding none of them. With an older
    marker (no list), or a growing folder: the files changed more than `_LEGACY_SLACK_S` seconds after the marker
    (langmoe wrote everything else before it, or just after). A folder without a marker: everything in it.
    """
    root = Path(folder)
    marker = read_marker(root)
    if marker is None:
        return list_files(root)
    listed = marker.get("files")
    if isinstance(listed, list):
        return _unlisted(root, {str(x) for x in listed})
    try:
        since = (root / MARKER).stat().st_mtime + _LEGACY_SLACK_S
    except OSError:
        return list_files(root)
    return [f for f in list_files(root) if _mtime(root / f) > since]


def _mtime(p: Path) -> float:
    try:
        return p.lstat().st_mtime
    except OSError:
        return 0.0


def _unlisted(root: Path, listed: set[str]) -> list[str]:
    ours = {parent.as_posix() for f in listed for parent in Path(f).parents}  # folders holding a listed file
    out = []
    for dirpath, dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for d in list(dirs):
            r = (rel / d).as_posix()
            if r not in ours:
                out.append(r + "/")
                dirs.remove(d)  # a whole foreign folder is named once
        out += [r for f in files if (r := (rel / f).as_posix()) not in listed and f not in (MARKER, _LOCK_FILE)]
    return sorted(out)


def _replaced_whole(marker: dict[str, Any]) -> bool:
    """Whether a rerun replaces the folder whole (and so would delete what else is in it): markers say so; an
    older marker without a layout is told by its command (training and runs fill their folder step by step)."""
    layout = marker.get("layout")
    if layout in ("whole", "growing"):
        return layout == "whole"
    return _family(marker["command"]) not in _GROWING_COMMANDS


def record_written(path: str | Path) -> None:
    """Add a file (or a folder's files) that langmoe wrote into a folder written whole to that folder's file
    list, so that a rerun does not take it for a user's file (add-language's JSON beside the model it saved).

    A file another command writes there (`eval --json MODEL/eval.json`) goes to `others` instead: that command
    may replace it, but the folder's own command does not delete it on a rerun without --overwrite.
    """
    path = Path(path)
    for depth, folder in enumerate(path.parents):
        if depth >= 4:
            return
        marker = read_marker(folder)
        if marker is None:
            continue
        listed = marker.get("files")
        if not isinstance(listed, list):
            return
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):  # a temp file or folder on its way elsewhere
            return
        new = [(rel / f).as_posix() for f in list_files(path)] if path.is_dir() else [rel.as_posix()]
        if _current_command is None or _family(_current_command) == _family(marker["command"]):
            if not set(new) <= set(listed):
                marker["files"] = sorted({*listed, *new})
                write_json(folder / MARKER, marker)
            return
        others = marker.get("others") if isinstance(marker.get("others"), dict) else {}
        added = {f: _current_command for f in new if f not in listed and others.get(f) != _current_command}
        if added:
            marker["others"] = dict(sorted({**others, **added}.items()))
            write_json(folder / MARKER, marker)
        return


def _family(command: str) -> str:
    return _FAMILIES.get(command, command)


def written_by(folder: str | Path, command: str | None = None) -> bool:
    """Whether `folder` carries a langmoe marker (of `command`'s family, when given)."""
    m = read_marker(folder)
    return m is not None and (command is None or _family(m["command"]) == _family(command))


def _names(files: list[str], limit: int = 5) -> str:
    more = len(files) - limit
    return ", ".join(files[:limit]) + (f" and {more} more" if more > 0 else "")


def _refuse_foreign_files(where: str, folder: Path, marker: dict[str, Any]) -> None:
    """One line when a folder about to be replaced whole holds files langmoe did not write."""
    extra = foreign_files(folder)
    if extra:
        old = "" if isinstance(marker.get("files"), list) else " (changed after langmoe wrote the folder)"
        by = marker.get("others") if isinstance(marker.get("others"), dict) else {}
        named = [f"{f} (written by `langmoe {by[f]}`)" if f in by else f for f in extra]
        raise LangmoeError(f"{where} holds files `langmoe {marker['command']}` did not write{old}: {_names(named)}: "
                           "move them out, or pass --overwrite to replace the folder and delete them")


# ---- the guard -------------------------------------------------------------------------------------------------


def _real(p: str | Path) -> Path:
    return Path(os.path.realpath(Path(p).expanduser()))


def _inside(a: Path, b: Path) -> bool:
    return a != b and b in a.parents


def check_output(
    path: str | Path,
    command: str,
    *,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    kind: Literal["folder", "file"] = "folder",
    flag: str = "--out",
) -> Path:
    """Refuse, with one line, an output `command` must not write (see the module docstring); return the path.

    `inputs` are the paths the command reads ('builtin' and None are skipped). Nothing is created here.
    """
    out = Path(path).expanduser()
    if not str(path).strip():
        raise LangmoeError(f"{flag} is empty: give a path")
    blocker = _file_on_the_way(out)
    if blocker is not None:
        raise LangmoeError(f"{flag} {out}: {blocker} is a file, not a folder; choose another path")
    real = _real(out)
    if kind == "file" and out.is_dir():
        raise LangmoeError(f"{out} is a folder: give a file path to write")
    flat = [x for inp in inputs for x in (inp if isinstance(inp, (list, tuple)) else [inp])]  # mixed corpora
    for inp in flat:
        if inp is None or str(inp) == "builtin" or not Path(inp).expanduser().exists():
            continue
        r = _real(inp)
        if real == r:
            raise LangmoeError(f"{flag} {out} is the input {inp}: write to a new path (inputs are never replaced)")
        if _inside(real, r):
            raise LangmoeError(f"{flag} {out} is inside the input {inp}: write outside it (inputs are never "
                               "modified)")
        if _inside(r, real):
            raise LangmoeError(f"{flag} {out} contains the input {inp}: choose a folder that does not hold it")
    if kind == "file":
        if out.exists() and not overwrite and not _langmoe_file(out):
            raise LangmoeError(f"{flag} {out} already exists: choose a new file name, or pass --overwrite to "
                               "replace it")
        return out
    if out.exists() and not out.is_dir():
        raise LangmoeError(f"{flag} {out} is a file, not a folder: give a new folder path (files are never "
                           "replaced by folders)")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        m = read_marker(out)
        if m is None:
            raise LangmoeError(f"{flag} {out} already exists and was not written by langmoe: choose a new "
                               "folder, or pass --overwrite to let `langmoe " + command + "` write into it")
        if _family(m["command"]) != _family(command):
            raise LangmoeError(f"{flag} {out} was written by `langmoe {m['command']}`, not `langmoe {command}`: "
                               "choose a new folder, or pass --overwrite")
        if _replaced_whole(m):
            _refuse_foreign_files(f"{flag} {out}", out, m)
    if overwrite and out.exists():
        _permitted.add(real)
    return out


def _langmoe_file(path: Path) -> bool:
    """Whether an existing file may be replaced without --overwrite: it lies in a langmoe folder, and on its file
    list when the folder has one (a user's note inside a model folder is not langmoe's)."""
    m = read_marker(path.parent)
    if m is None:
        return False
    listed = m.get("files")
    return not isinstance(listed, list) or path.name in listed or path.name in (m.get("others") or {})


def claim_output(path: str | Path, command: str) -> Path:
    """Create the folder (if needed) and mark it as `command`'s output; call after `check_output`."""
    out = Path(path)
    _make_parent(out / MARKER)
    if read_marker(out) is None or _family(read_marker(out)["command"]) != _family(command):
        write_marker(out, command)
    return out


@contextmanager
def output_folder(path: str | Path, command: str, *, lock: bool = False) -> Iterator[Path]:
    """Claim `path` for `command` (and hold the run lock when `lock`); on failure, a folder this call created
    and that still holds no file but the marker (and its lock) is removed again, so bad input leaves no trace."""
    out = Path(path)
    if int(os.environ.get("RANK", "0") or 0) != 0:  # a multi-process run: the main process claims and locks
        yield out
        return
    _make_parent(out)
    try:
        out.mkdir()
        created = True
    except FileExistsError:
        created = False
    if not out.is_dir():
        raise LangmoeError(f"{out} is a file, not a folder: give a new folder path (files are never replaced)")
    if lock:
        from langmoe.lock import folder_lock

        cm = folder_lock(out, command)
    else:
        cm = nullcontext()
    with cm:  # a folder locked by another process is neither claimed nor cleaned here
        try:
            claim_output(out, command)
            yield out
        except BaseException:
            if created and out.is_dir() and not list_files(out):  # nothing but the marker, lock, empty folders
                (out / MARKER).unlink(missing_ok=True)
                if lock:
                    from langmoe.lock import release

                    release(out)
                shutil.rmtree(out, ignore_errors=True)
            raise


# ---- whole folders in one rename -------------------------------------------------------------------------------


def _check_replaceable(path: Path, overwrite: bool) -> None:
    overwrite = overwrite or _real(path) in _permitted
    if path.exists() and not path.is_dir():
        raise LangmoeError(f"{path} is a file, not a folder: give a new folder path (files are never replaced)")
    if not path.is_dir() or overwrite or not any(path.iterdir()):
        return
    marker = read_marker(path)
    if marker is None:
        raise LangmoeError(f"{path} already exists and was not written by langmoe: choose a new folder, or pass "
                           "--overwrite to replace it")
    _refuse_foreign_files(str(path), path, marker)


def _swap_in(tmp: Path, path: Path) -> None:
    """Move the finished temp folder to `path`; an existing (langmoe-written) folder is replaced."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.replace(path, old / "x")
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_folder_atomically(path: str | Path, writer: Callable[[Path], Any], command: str | None = None,
                            overwrite: bool = False) -> Path:
    """Let `writer(tmp_dir)` fill a temp folder next to `path`, then move it to `path` in one rename.

    `path` may be new, empty, or a folder langmoe wrote (it carries the marker) holding only what langmoe wrote:
    then it is replaced. A folder with other content is refused unless `overwrite` (or the CLI's `--overwrite`
    for it, see `check_output`); a file at `path` is always refused. The new folder gets the marker (`command`,
    default "save", and its file list) and umask permissions; on failure nothing at `path` changes.
    """
    with atomic_dir(path, command, overwrite) as tmp:
        writer(tmp)
    return Path(path)


@contextmanager
def atomic_dir(dest: str | Path, command: str | None = None, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `dest`; on success it replaces `dest` in one rename (see
    `write_folder_atomically` for which folders may be replaced)."""
    dest = Path(dest)
    _check_replaceable(dest, overwrite)
    _make_parent(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    fix_mode(tmp, folder=True)
    try:
        yield tmp
        write_marker(tmp, command or _current_command or "save", files=list_files(tmp))
        fix_tree_modes(tmp)
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    record_written(dest)  # a whole folder written inside another one is on that one's list


def move_files_into(dest: str | Path, save: Callable[[str], Any]) -> None:
    """Run `save(tmpdir)`, then rename each file it wrote into `dest` (each appears whole or not at all).

    For folders that accumulate several outputs (a training folder gets the model after the run state):
    existing files of the same names are replaced, nothing else in `dest` is touched.
    """
    dest = Path(dest)
    _make_parent(dest / "x")
    tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=dest))
    try:
        save(str(tmp))
        fix_tree_modes(tmp)
        for f in sorted(tmp.iterdir()):
            target = dest / f.name
            if f.is_dir():
                fix_mode(f, folder=True)
                if target.is_dir():
                    shutil.rmtree(target)
            os.replace(f, target)
            record_written(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- disk errors -----------------------------------------------------------------------------------------------


def is_disk_error(e: BaseException) -> bool:
    """A write that failed because of the machine (disk full, quota, read-only, I/O error), however wrapped."""
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        return True
    text = str(e).lower()
    return isinstance(e, (RuntimeError, OSError)) and any(
        s in text for s in ("no space left", "file write failed", "disk quota", "read-only file system"))


def disk_error_message(e: BaseException, what: str) -> str:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())[:120]
    return f"cannot write {what} ({reason}): free disk space (or fix the file system) and rerun to resume"
