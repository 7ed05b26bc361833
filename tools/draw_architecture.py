"""Draw docs/architecture.png: langmoe's modules on their floors and the imports between them, from the code.

    python tools/draw_architecture.py            # rewrites docs/architecture.png and the module index
    python tools/draw_architecture.py --check    # exit 1 if the module index of docs/architecture.md is stale

Units are the floors' folders (`data`, `models`, `models/overrides`, one box per method folder, ...); an arrow from
A to B says some module of A imports some module of B (module level or inside a function); arrows into the ground
floor are left out (nearly every unit imports `errors` and `io`). The floors are the ones
`tests/methods/test_layout.py` checks: every arrow points down or stays on its floor.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = SRC / "langmoe"
sys.path.insert(0, str(ROOT / "tests" / "methods"))

from test_layout import FLOORS, GRAPH, MODULES, _floor  # noqa: E402  (the floors the tests check)


def unit(mod: str) -> str:
    """The box a module is drawn in: one per method folder and per models/ sub-folder, `report/plots` apart (a
    ground-floor helper), else its top-level folder or module."""
    parts = mod.removeprefix("langmoe.").split(".")
    if mod == "langmoe":
        return "langmoe"
    if parts[0] == "methods" and len(parts) >= 2:
        return "/".join(parts[:2])
    if parts[0] == "models" and len(parts) > 2:
        return "/".join(parts[:2])
    if parts[:2] == ["report", "plots"]:
        return "report/plots"
    return parts[0]


def unit_graph() -> tuple[dict[str, int], set[tuple[str, str]]]:
    floors: dict[str, int] = {}
    edges: set[tuple[str, str]] = set()
    for m in MODULES:
        if m == "langmoe":
            continue
        u = unit(m)
        floors[u] = min(floors.get(u, 99), _floor(m))
        for d in GRAPH[m]:
            if d != "langmoe" and unit(d) != u and not (PKG / d.removeprefix("langmoe.").replace(".", "/")).is_dir():
                edges.add((u, unit(d)))
    return floors, edges


def draw(dest: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floors, edges = unit_graph()
    rows: dict[int, list[str]] = defaultdict(list)
    for u, f in sorted(floors.items()):
        rows[f].append(u)
    width = max(len(r) for r in rows.values())
    pos = {}
    for f, units in rows.items():
        for i, u in enumerate(units):
            pos[u] = ((i + 0.5) * width / len(units), f)
    fig, ax = plt.subplots(figsize=(max(12, width * 1.6), 1.1 * len(FLOORS) + 1))
    shown = sorted((a, b) for a, b in edges if floors[b] > 0)  # into the ground: nearly every unit (errors, io)
    for a, b in shown:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                    arrowprops={"arrowstyle": "->", "color": "tab:blue" if y1 < y0 else "tab:orange", "alpha": 0.25,
                                "lw": 0.8, "shrinkA": 2, "shrinkB": 2})
    for u, (x, y) in pos.items():
        ax.text(x, y, u, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "grey"})
    for i, (name, _) in enumerate(FLOORS):
        ax.axhline(i - 0.5, color="lightgrey", lw=0.5)
        ax.text(-0.3, i, name, ha="right", va="center", fontsize=9, style="italic")
    ax.set_xlim(-1.6, width + 0.2)
    ax.set_ylim(-0.7, len(FLOORS) - 0.3)
    ax.axis("off")
    ax.set_title(f"langmoe: {len(MODULES)} modules in {len(pos)} units; {len(shown)} import arrows (blue: down a "
                 "floor, orange: within a floor; arrows into the ground floor left out)", fontsize=10)
    fig.tight_layout()
    fig.savefig(dest, dpi=80)
    plt.close(fig)
    return dest


INDEX = re.compile(r"(<!-- modules -->\n)(.*?)(<!-- /modules -->)", re.S)


def module_index() -> str:
    """Every module on its floor with the first sentence of its docstring (the docstrings say why a module is)."""
    rows = ["| floor | module | what it is for |", "|---|---|---|"]
    for m in sorted(MODULES, key=lambda x: (_floor(x), x)):
        if m == "langmoe":
            continue
        doc = ast.get_docstring(ast.parse(MODULES[m].read_text(encoding="utf-8"))) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        first = first.split(". ")[0].rstrip(".").replace("|", "\\|")
        rows.append(f"| {FLOORS[_floor(m)][0]} | `{m.removeprefix('langmoe.')}` | {first} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the module index is current")
    args = ap.parse_args(argv)
    doc = ROOT / "docs" / "architecture.md"
    text = doc.read_text(encoding="utf-8")
    new = INDEX.sub(lambda m: m.group(1) + module_index() + m.group(3), text)
    if args.check:
        if new != text:
            print(f"{doc}: the module index is stale: run python tools/draw_architecture.py", file=sys.stderr)
            return 1
        return 0
    doc.write_text(new, encoding="utf-8")
    print(draw(ROOT / "docs" / "architecture.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
