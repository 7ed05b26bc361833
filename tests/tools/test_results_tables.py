"""tools/results_tables.py: the README's and docs' results tables are exactly what the results files say."""

from pathlib import Path

import pytest
from script_loader import load_script

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    return load_script("tools/results_tables.py")


def test_committed_docs_match_the_results_files(capsys):
    tool = _tool()
    assert tool.main(["--check"]) == 0, capsys.readouterr().err
    blocks = [m.group("name") for p in tool.documents() for m in tool.BLOCK.finditer(p.read_text(encoding="utf-8"))]
    assert {"bases", "expansion", "demo", "demo-new-language", "dmoe-scaling"} <= set(blocks)


def test_a_hand_edited_number_is_caught_and_rewritten():
    tool = _tool()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = next(m for m in tool.BLOCK.finditer(readme) if m.group("name") == "bases")
    edited = readme.replace(m.group("body"), m.group("body").replace("**", "", 1), 1)
    assert edited != readme
    fixed, changed = tool.render(edited)
    assert changed == ["bases"] and fixed == readme


def test_the_tables_carry_the_results_numbers():
    import json

    tool = _tool()
    r = json.loads((ROOT / "benchmarks" / "results" / "base_vs_compressors.json").read_text())
    assert f"**{r['mean']['model']:.3f}**" in tool.bases()
    data = json.loads((ROOT / "benchmarks" / "results" / "expansion_builtin.json").read_text())
    e = data.get("main", data)["rows"]["moe_lpr"]  # bits per byte (issue 22's shape) or ppl (before it)
    fmt = "{:.3f} ±" if "main" in data else "{:.2f} ±"
    assert fmt.format(sum(e["new"]) / len(e["new"])) in tool.expansion()


def test_unknown_table_name_is_one_clear_error():
    tool = _tool()
    with pytest.raises(SystemExit, match="unknown results table 'nope'"):
        tool.render("<!-- results: nope -->\n<!-- /results -->\n", "X.md")
