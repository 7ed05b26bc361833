"""Packaging: licence metadata covers what ships, README links work on PyPI, recipes ship, optional extras fail
with one line naming the extra (each optional package is hidden with sys.modules[name] = None)."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

from langmoe.errors import LangmoeError

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def test_readme_has_no_relative_links():
    """PyPI renders the README without the repository: every link and image must be absolute."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)", text) + re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, flags=re.M)
    targets += re.findall(r'<(?:img|a)\s[^>]*(?:src|href)="([^"]+)"', text)
    relative = [t for t in targets if not re.match(r"^(https?://|mailto:|#)", t)]
    assert not relative, f"README links that break on PyPI (make them absolute): {relative}"


def test_license_expression_and_files():
    canonicalize_license_expression = pytest.importorskip("packaging.licenses").canonicalize_license_expression

    expr = PROJECT["license"]
    assert isinstance(expr, str), "PEP 639: license is an SPDX expression string, not a table"
    assert canonicalize_license_expression(expr) == expr
    assert expr.startswith("Apache-2.0 AND ")
    for pattern in PROJECT["license-files"]:
        assert list(ROOT.glob(pattern)), f"license-files pattern {pattern!r} matches nothing"
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")[:200]
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"]), "PEP 639 forbids licence classifiers"
    build = PYPROJECT["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77 for r in build)


# SOURCES.md licence strings (Debian copyright short names) -> SPDX ids the expression must contain.
_SPDX = {"GPL-2": "GPL-2.0-only", "GPL-2+": "GPL-2.0-or-later", "GPL-2.0+": "GPL-2.0-or-later",
         "GPL-3": "GPL-3.0-only", "GPL-3+": "GPL-3.0-or-later", "GPL-3.0+": "GPL-3.0-or-later",
         "GPL": "GPL-1.0-or-later", "MPL-2.0": "MPL-2.0", "CC-BY-SA-3.0": "CC-BY-SA-3.0",
         "CC-BY-SA-4.0": "CC-BY-SA-4.0", "GFDL-1.2+": "GFDL-1.2-or-later", "GFDL-1.3+": "GFDL-1.3-or-later",
         "LGPL-2.1+": "LGPL-2.1-or-later", "MIT": "MIT", "Expat": "MIT", "Apache-2.0": "Apache-2.0",
         "BSD-3-clause": "BSD-3-Clause", "BSD-2-clause": "BSD-2-Clause", "CC0-1.0": "CC0-1.0"}


def test_license_expression_covers_the_builtin_corpus():
    """Every licence named in SOURCES.md is in the metadata; free-form ones are covered by the LicenseRef."""
    expr = set(re.findall(r"[A-Za-z0-9.+-]+", PROJECT["license"])) - {"AND", "OR"}
    sources = (ROOT / "src/langmoe/data/builtin/SOURCES.md").read_text(encoding="utf-8")
    missing = []
    for line in re.findall(r"^- Licences: (.*)$", sources, flags=re.M):
        tokens = [t.strip() for t in re.split(r"\bor\b|\band\b|,", line.split("(")[0])]
        for t in tokens:
            if t in _SPDX:
                if _SPDX[t] not in expr:
                    missing.append(f"{t} -> {_SPDX[t]}")
            elif re.fullmatch(r"[A-Z][A-Za-z]*-[0-9.]+\+?", t):
                missing.append(f"{t} (add it to the map in this test and to pyproject's license)")
    assert not missing, f"pyproject license lacks corpus licences: {sorted(set(missing))}"
    assert "LicenseRef-langmoe-corpus-other" in expr
    notice = (ROOT / "NOTICE").read_text(encoding="utf-8")
    assert "LicenseRef-langmoe-corpus-other" in notice and "SOURCES.md" in notice


def test_metadata_urls_classifiers_extras():
    assert PROJECT["urls"]["Source"].startswith("https://github.com/")
    assert any(c.startswith("Programming Language :: Python :: 3.11") for c in PROJECT["classifiers"])
    deps = " ".join(PROJECT["dependencies"])
    extras = PROJECT["optional-dependencies"]
    for pkg, extra in [("pyarrow", "parquet"), ("datasets", "hf-datasets"), ("tensorboard", "tensorboard"),
                       ("scipy", "scipy")]:
        assert pkg not in deps, f"{pkg} must be optional"
        assert any(r.startswith(pkg) for r in extras[extra])
        assert extra in extras["all"][0]
    assert "langmoe[all]" in extras["dev"]
    pkg_data = PYPROJECT["tool"]["setuptools"]["package-data"]["langmoe"]
    assert "recipes/*.yaml" in pkg_data and "data/iso/*" in pkg_data


def test_repo_recipes_are_the_shipped_ones():
    from langmoe.recipe_files import RECIPES_DIR

    repo = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
    assert repo == sorted(p.name for p in RECIPES_DIR.glob("*.yaml"))
    for name in repo:
        assert (ROOT / "recipes" / name).read_bytes() == (RECIPES_DIR / name).read_bytes(), (
            f"recipes/{name} and src/langmoe/recipes/{name} differ: edit both (the wheel ships the latter)")


def _hide(monkeypatch, *names):
    for n in names:
        for mod in [m for m in sys.modules if m == n or m.startswith(n + ".")]:
            monkeypatch.delitem(sys.modules, mod)
        monkeypatch.setitem(sys.modules, n, None)  # `import n` now raises ImportError


def test_require_names_the_extra(monkeypatch):
    from langmoe.optional import available, require

    assert require("json") is json
    _hide(monkeypatch, "pyarrow")
    assert not available("pyarrow")
    with pytest.raises(LangmoeError) as e:
        require("pyarrow.parquet")
    assert "pip install 'langmoe[parquet]'" in str(e.value) and "\n" not in str(e.value)


def test_parquet_and_datasets_corpora_without_the_extra(monkeypatch, tmp_path, capsys):
    from langmoe.cli import main

    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "de.parquet").write_bytes(b"PAR1 not really")
    _hide(monkeypatch, "pyarrow")
    assert main(["corpus", "stats", "--corpus", str(tmp_path / "pq")]) == 2
    err = capsys.readouterr().err
    assert "langmoe[parquet]" in err and err.count("\n") == 1
    (tmp_path / "ds" / "de").mkdir(parents=True)
    (tmp_path / "ds" / "de" / "dataset_info.json").write_text("{}")
    (tmp_path / "ds" / "de" / "state.json").write_text("{}")
    _hide(monkeypatch, "datasets")
    assert main(["corpus", "stats", "--corpus", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "langmoe[hf-datasets]" in err and err.count("\n") == 1


def test_training_log_without_tensorboard(monkeypatch, tmp_path, capsys):
    from langmoe import optional
    from langmoe.train.trainer import _Logger

    monkeypatch.setattr(optional, "_warned", set())

    _hide(monkeypatch, "tensorboard")
    log = _Logger(tmp_path, active=True, start_step=0, total=2, show_progress=False)
    log.row({"step": 1, "loss": 2.5, "tokens_per_s": 10.0})
    log.close()
    _Logger(tmp_path / "again", active=True, start_step=0, total=2, show_progress=False).close()  # no 2nd warning
    assert json.loads((tmp_path / "log.jsonl").read_text())["loss"] == 2.5
    assert not (tmp_path / "tb").exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "langmoe[tensorboard]" in err


def test_dendrogram_without_scipy(monkeypatch, tmp_path):
    from langmoe.report import plots

    _hide(monkeypatch, "scipy")
    with pytest.raises(LangmoeError, match=r"langmoe\[scipy\]"):
        plots.plot_dendrogram(["a", "b"], [[1.0, 0.5], [0.5, 1.0]], tmp_path / "d.png")


def test_report_renders_without_scipy(monkeypatch, tmp_path):
    """The report notes the missing dendrogram (naming the extra) and renders every other part."""
    sys.path.insert(0, str(ROOT / "tests" / "report"))
    try:
        from test_html import full_run
    finally:
        sys.path.remove(str(ROOT / "tests" / "report"))
    from langmoe.report.html import build_report

    full_run(tmp_path)
    import transformers.modeling_utils  # noqa: F401  (imports scipy when it can: load it before scipy is hidden,
    # as any earlier test does; run alone, the report's lazy transformers import would fail on the hidden scipy)
    _hide(monkeypatch, "scipy")
    doc = build_report(tmp_path).read_text()
    assert "no dendrogram" in doc and "langmoe[scipy]" in doc
    assert doc.count("data:image/png;base64,") >= 3 and "similarity heatmap" in doc
