"""The package's shape, checked statically over src/langmoe: no import circles, method folders imported only by
the registry's loader (and by their own CLI commands), and short functions in the run machinery."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "langmoe"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(path: Path, name: str) -> set[str]:
    """langmoe modules imported anywhere in the file (module level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {m: _imports(p, m) for m, p in MODULES.items()}


def _folder(mod: str) -> str | None:
    """The method folder of a module (langmoe.methods.<folder>...), None outside method folders."""
    parts = mod.split(".")
    if len(parts) >= 3 and parts[1] == "methods" and parts[2] != "registry":
        return parts[2]
    return None


def test_no_import_circles():
    """Module-level imports form no cycle (lazy imports inside functions are allowed to point back up)."""
    top: dict[str, set[str]] = {}
    for m, p in MODULES.items():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                deps |= {base} | {f"{base}.{a.name}" for a in node.names}
        top[m] = {d for d in deps if d in MODULES and d != m}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(top[m]):
            if state.get(d) == 1:
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(top):
        if m not in state:
            visit(m)


def _registered(folder: str | None) -> bool:
    """A registered method's folder (the registry imports it); the other folders under methods/ are shared wings
    beside the methods that use them (methods/expansion: MoE-LPR and LayerMoE)."""
    from langmoe.registry import METHOD_PACKAGES

    return folder in METHOD_PACKAGES


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_only_the_registry_loader_imports_method_folders(mod):
    """Outside methods/ only CLI commands of a method (langmoe.commands.*) may import a method folder; a method
    folder imports no other registered method's folder (shared pieces live in models/, train/, pipeline/ or in a
    shared wing under methods/), and a shared wing imports no registered method."""
    own = _folder(mod)
    bad = sorted(d for d in GRAPH[mod] if _folder(d) is not None and _folder(d) != own
                 and (_registered(_folder(d)) or own is None))
    if mod.startswith("langmoe.commands."):
        return
    assert not bad, f"{mod} imports method folders {bad}"


def test_expand_finds_its_methods_through_the_registry():
    assert not any(_folder(d) for d in GRAPH["langmoe.commands.expand"])


def test_no_function_over_80_lines():
    long = []
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{f.relative_to(PKG)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


# The floors of docs/architecture.md, ground first: a module imports only from its own floor or below, at module
# level and inside functions alike.
FLOORS = [
    ("ground", ["errors", "console", "registry", "validation", "io", "lock", "optional", "memory", "precision",
                "report.plots"]),  # report.plots: drawing helpers (numpy, matplotlib, io) that methods draw with
    ("data", ["data"]),
    ("models", ["models"]),
    ("eval", ["eval", "generate", "diagnostics"]),
    ("train", ["train"]),
    ("config", ["config", "recipe_legacy", "recipe_files", "recipes", "pretrain"]),
    ("pipeline", ["pipeline"]),
    ("methods", ["methods"]),
    ("report", ["report"]),
    ("commands", ["commands", "cli", "__main__"]),
]
# the one import that points up, on purpose: `import langmoe` registers the native MoE class with transformers
# as soon as transformers is imported (langmoe/__init__.py)
UPWARD_ALLOWED = {("langmoe", "langmoe.models.native")}


def _floor(mod: str) -> int:
    """The floor of a module: its longest matching prefix wins (report.plots is ground although report/ is not)."""
    rel = mod.removeprefix("langmoe.")
    hits = [(len(p), i) for i, (_, prefixes) in enumerate(FLOORS) for p in prefixes
            if rel == p or rel.startswith(p + ".")]
    return max(hits)[1] if hits else -1


def test_every_module_has_a_floor():
    assert not [m for m in MODULES if m != "langmoe" and _floor(m) < 0]


def test_no_import_from_a_higher_floor():
    """Package markers with no code (an `__init__.py` holding only its docstring) are no floor of their own."""
    empty = {m for m, p in MODULES.items() if p.name == "__init__.py" and len(ast.parse(p.read_text()).body) <= 1}
    up = sorted(f"{m} ({FLOORS[_floor(m)][0]}) -> {d} ({FLOORS[_floor(d)][0]})"
                for m in MODULES for d in GRAPH[m] - empty
                if _floor(d) > _floor(m) and (m, d) not in UPWARD_ALLOWED)
    assert not up, up


def test_the_corpus_builder_is_not_in_the_runtime_package():
    assert not (PKG / "data" / "build_builtin.py").exists()
    assert (SRC.parent / "tools" / "build_builtin.py").is_file()


def test_architecture_page_lists_every_module():
    """docs/architecture.md's module index is what tools/draw_architecture.py makes of today's code."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(SRC.parent / "tools" / "draw_architecture.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
