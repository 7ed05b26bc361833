"""The recipes shipped in the package (`langmoe/recipes/*.yaml`): list them and copy one out to edit.

Why: an installed wheel has no repository `recipes/` folder, so the README's `langmoe run recipes/dmoe.yaml` needs
`langmoe recipes --copy dmoe .` first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel

from langmoe.errors import LangmoeError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class RecipeFile(BaseModel):
    name: str
    path: Path
    description: str  # the first comment line of the file


def list_recipes() -> list[RecipeFile]:
    """Every shipped recipe, by name."""
    out = []
    for p in sorted(RECIPES_DIR.glob("*.yaml")):
        first = next((ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.startswith("#")), "")
        out.append(RecipeFile(name=p.stem, path=p, description=first.lstrip("# ").strip()))
    return out


def copy_recipe(name: str, dest: str | Path) -> Path:
    """Copy recipe `name` into folder `dest` (created if needed) as `<name>.yaml`; never overwrites a file."""
    names = {r.name: r for r in list_recipes()}
    key = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if key not in names:
        raise LangmoeError(f"no shipped recipe {name!r}: choose one of {', '.join(names) or '(none installed)'}")
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise LangmoeError(f"{dest} is a file: give the folder to copy the recipe into")
    target = dest / f"{key}.yaml"
    if target.exists():
        raise LangmoeError(f"{target} already exists: not overwriting it; remove it or copy into another folder")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(names[key].path, target)
    return target
