"""Load a repository script (benchmarks/ and tools/ are not packages) as a module for its tests."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath: str, name: str | None = None):
    """`ROOT/relpath` executed as a module named `name` (default: the file's stem), registered in `sys.modules`
    first: dataclasses look their module up there while the class is built."""
    path = ROOT / relpath
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
