"""`langmoe recipes`: lists the shipped recipes; --copy writes one out, never overwriting a file."""

from __future__ import annotations

from langmoe.cli import main
from langmoe.config import load_recipe
from langmoe.recipe_files import RECIPES_DIR, list_recipes


def test_list(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    names = [r.name for r in list_recipes()]
    assert {"demo", "dmoe"} <= set(names)
    for r in list_recipes():
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [r.name])
        assert r.description and r.description in line


def test_copy_then_refuse_to_overwrite(tmp_path, capsys):
    dest = tmp_path / "new" / "dir"
    assert main(["recipes", "--copy", "dmoe", str(dest)]) == 0
    target = dest / "dmoe.yaml"
    assert target.read_bytes() == (RECIPES_DIR / "dmoe.yaml").read_bytes()
    assert str(target) in capsys.readouterr().out
    load_recipe(target)  # a valid recipe
    target.write_text("# mine\n")
    assert main(["recipes", "--copy", "dmoe.yaml", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1
    assert target.read_text() == "# mine\n"


def test_copy_errors(tmp_path, capsys):
    assert main(["recipes", "--copy", "nope", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "choose one of" in err and "dmoe" in err and err.count("\n") == 1
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["recipes", "--copy", "demo", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err
