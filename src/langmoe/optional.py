"""Optional dependencies: heavy packages needed by one feature each are extras, imported only when that feature runs.

    pyarrow      -> langmoe[parquet]      (<lang>.parquet corpora)
    datasets     -> langmoe[hf-datasets]  (`datasets.save_to_disk` corpora)
    tensorboard  -> langmoe[tensorboard]  (TensorBoard logs; JSONL logs need nothing)
    scipy        -> langmoe[scipy]        (dendrogram plots)
    zstandard    -> langmoe[zstd]         (.zst corpus files)

`require` imports one and, when it is missing, raises a LangmoeError whose one line names the extra to install.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from langmoe.errors import LangmoeError

__all__ = ["EXTRAS", "available", "install_hint", "require", "warn_missing_once"]

# top-level distribution module -> (extra, what it is needed for)
EXTRAS: dict[str, tuple[str, str]] = {
    "pyarrow": ("parquet", "reading .parquet corpus files"),
    "datasets": ("hf-datasets", "reading `datasets.save_to_disk` corpus folders and Hugging Face datasets"),
    "zstandard": ("zstd", "reading .zst corpus files"),
    "tensorboard": ("tensorboard", "TensorBoard logs"),
    "scipy": ("scipy", "the dendrogram plot"),
}


def install_hint(module: str, extra: str | None = None, purpose: str | None = None) -> str:
    """One line: what needs `module` and the pip command that installs it."""
    top = module.split(".")[0]
    ex, why = EXTRAS.get(top, (extra or top, purpose or "this feature"))
    ex = extra or ex
    why = purpose or why
    return f"{why} needs the optional package '{top}', which is not installed: pip install 'langmoe[{ex}]'"


def require(module: str, extra: str | None = None, purpose: str | None = None) -> ModuleType:
    """Import `module` (e.g. "pyarrow.parquet"), or raise LangmoeError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        missing = (getattr(e, "name", None) or "").split(".")[0]
        if missing and missing != top:  # the package is there but one of *its* dependencies is broken: a real bug
            raise
        raise LangmoeError(install_hint(module, extra, purpose)) from None


def available(module: str) -> bool:
    """True when `module` imports (used to skip an optional output with a warning instead of failing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


_warned: set[str] = set()


def warn_missing_once(module: str, what: str) -> None:
    """One stderr line per process: `what` is skipped because `module` is missing (e.g. TensorBoard logs)."""
    top = module.split(".")[0]
    if top not in _warned:
        _warned.add(top)
        print(f"warning: {what} skipped: {install_hint(module)}", file=sys.stderr)
