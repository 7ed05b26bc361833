"""The HTML report: every part from a synthetic run folder, missing or broken parts noted, never a crash."""

from __future__ import annotations

import json
import re

import pytest

from langmoe.cli import main
from langmoe.errors import LangmoeError
from langmoe.report.html import build_report


def _w(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _eval(system, ppl, params=1000, active=1000):
    langs = {x: {"ppl": p, "bits_per_byte": p / 10, "tokens": 100, "bytes": 300, "nll_sum": 1.0}
             for x, p in ppl.items()}
    mean = {"ppl": sum(ppl.values()) / len(ppl), "bits_per_byte": sum(ppl.values()) / len(ppl) / 10}
    return {"system": system, "langs": langs, "mean": mean, "params": {"total": params, "active": active},
            "tokens_seen": 5000}


def full_run(root):
    _w(root / "eval" / "base.json", _eval("base", {"en": 50.0, "fr": 60.0, "de": 70.0}))
    _w(root / "eval" / "dmoe.json", _eval("dmoe", {"en": 20.0, "fr": 26.0, "de": 24.0}, 1500, 1200))
    _w(root / "eval" / "cpt.json", _eval("cpt", {"en": 21.0, "fr": 25.0, "de": 27.0}))
    _w(root / "deviation.json", {
        "langs": ["en", "fr", "de"], "num_layers": 3,
        "dev_ffn": {"en": [3.0, 1.0, 4.0], "fr": [3.1, 1.1, 4.2], "de": [2.0, 1.0, 5.0]},
        "dev_attn": {"en": [1.0, 1.0, 1.0], "fr": [1.0, 1.0, 1.0], "de": [1.0, 1.0, 1.0]},
        "similarity": [[1, 0.9, 0.1], [0.9, 1, 0.2], [0.1, 0.2, 1]], "config": {"steps": 10, "lr": 1e-4}})
    _w(root / "groups.json", {"method": "exhaustive", "langs": ["en", "fr", "de"], "groups": [["en", "fr"], ["de"]],
                              "diameters": [0.1, 0.0],
                              "agreement": {"genus": {"ari": 0.123, "nmi": 0.456}, "random": {"ari": -0.25, "nmi": 0.1}}})
    _w(root / "groups_random.json", {"groups": [["en", "de"], ["fr"]],
                                     "agreement": {"deviation groups": {"ari": 0.0, "nmi": 0.321}}})
    _w(root / "layers.json", {"selected": [0, 2], "epsilon": 0.6, "normalised": [0.6, 0.0, 1.0],
                              "mean_deviation": [2.7, 1.03, 4.4]})
    _w(root / "routing.json", {"accuracy": {"0": 0.8, "2": 0.95},
                               "counts": {"en": {"0": [8, 2], "2": [9, 1]}, "de": {"0": [3, 7], "2": [0, 10]}}})
    _w(root / "routing_dmoe_random.json", {"system": "dmoe_random", "accuracy": {"0": 0.4, "2": 0.6}})
    _w(root / "summary.json", {"note": "equal budget", "budget_tokens": 5000, "languages": ["en", "fr", "de"],
                               "systems": {"base": {"mean_ppl": 60.0, "mean_bpb": 6.0, "params_total": 1000,
                                                    "params_active": 1000, "tokens_seen": 0}}})
    (root / "config.yaml").write_text("name: test\nlanguages: [en, fr, de]\n")


def test_full_report(tmp_path):
    full_run(tmp_path)
    path = build_report(tmp_path)
    assert path == tmp_path / "report.html"
    doc = path.read_text()
    assert doc.count("data:image/png;base64,") == 7  # ppl, deviation, similarity, dendrogram, acc, 2 heatmaps
    assert 'src="plots/' not in doc and "<img" in doc  # self-contained
    # best per language: dmoe for en (20) and de (24), cpt for fr (25)
    ppl_table = doc.split("<b>perplexity</b>")[1].split("</table>")[0]
    rows = {r.split("</td>")[0].split(">")[-1]: r for r in ppl_table.split("<tr>")[2:]}
    assert re.findall(r'class="[^"]*best[^"]*">([^<]+)', rows["dmoe"]) == ["20.00", "24.00", "23.33"]
    assert re.findall(r'class="[^"]*best[^"]*">([^<]+)', rows["cpt"]) == ["25.00"]
    assert "MoE layers (ε = 0.6)" in doc and "<b>0, 2</b>" in doc
    assert "genus" in doc and "random" in doc and "ARI" in doc
    # agreement is read from the run folder as written at analysis time, never recomputed
    assert ">0.1230<" in doc and ">0.4560<" in doc and ">-0.2500<" in doc
    assert "run&#x27;s random grouping vs deviation groups" in doc and ">0.3210<" in doc
    assert "name: test" in doc
    assert ">dmoe_random<" in doc and ">0.6000<" in doc  # the ablation's routing accuracy row
    # systems: summary row plus eval-only rows
    assert ">dmoe<" in doc and "1500" in doc
    assert 'class="note"' not in doc


def test_empty_and_broken_parts_become_notes(tmp_path):
    doc = build_report(tmp_path).read_text()
    for part in ("nothing evaluated", "deviation.json missing", "groups.json missing", "routing.json missing",
                 "config.yaml missing"):
        assert part in doc
    _w(tmp_path / "groups.json", {"method": "x"})  # no "groups": malformed
    (tmp_path / "routing.json").write_text("{not json")
    doc = build_report(tmp_path).read_text()
    assert "Language groups: skipped" in doc and "KeyError" in doc


def test_missing_folder_and_cli(tmp_path, capsys):
    with pytest.raises(LangmoeError, match="does not exist"):
        build_report(tmp_path / "nope")
    full_run(tmp_path)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").is_file()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_rows_follow_the_registry_display_written_by_the_run(tmp_path):
    full_run(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    summary["display"] = {"base": {"label": "dense base (no training)", "order": 0.0},
                          "cpt": {"label": "my CPT", "order": 0.5}}
    _w(tmp_path / "summary.json", summary)
    doc = build_report(tmp_path).read_text()
    systems = doc.split("<h2>Systems</h2>")[1].split("</table>")[0]
    # display orders: base 0, cpt 0.5 (from the run folder); dmoe from the registry (20)
    assert systems.index("base — dense base") < systems.index("cpt — my CPT") < systems.index("dmoe — DMoE")
