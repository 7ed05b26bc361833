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
    assert ">0.123<" in doc and ">0.456<" in doc and ">-0.250<" in doc
    assert "run&#x27;s random grouping vs deviation groups" in doc and ">0.321<" in doc
    assert "name: test" in doc
    assert ">dmoe_random<" in doc and ">60.0%<" in doc  # the ablation's routing accuracy row, in percent
    assert "<th>layer 0</th><th>layer 2</th>" in doc  # every header names its column
    # systems: summary row plus eval-only rows
    assert ">dmoe<" in doc and "1500" in doc
    assert 'class="note"' not in doc


def test_empty_and_broken_parts_become_notes(tmp_path):
    doc = build_report(tmp_path).read_text()
    for part in ("nothing evaluated", "config.yaml missing"):
        assert part in doc
    assert "Language groups" not in doc  # no DMoE results: DMoE's sections (a registry hook) stay out
    _w(tmp_path / "routing_dmoe_random.json", {"note": "an ablation's file, no accuracy"})  # a DMoE run ...
    doc = build_report(tmp_path).read_text()
    for part in ("deviation.json missing", "groups.json missing", "routing.json missing"):  # ... missing its parts
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
    systems = doc.split(">Systems</h2>")[1].split("</table>")[0]
    # display orders: base 0, cpt 0.5 (from the run folder); dmoe from the registry (20)
    assert systems.index("base — dense base") < systems.index("cpt — my CPT") < systems.index("dmoe — DMoE")


def _section(doc: str, title: str) -> str:
    return doc.split(f">{title}</h2>")[1].split("<h2")[0]


def test_readable_sections(tmp_path):
    """New language as tables (no JSON), shares as percentages like the CLI, one-layer routing without a plot,
    no degenerate family row, the layer table transposed with named columns."""
    full_run(tmp_path)
    _w(tmp_path / "routing.json", {"system": "dmoe", "accuracy": {"0": 0.6084}, "group_of": {"en": 0, "fr": 0, "de": 1},
                                   "counts": {"en": {"0": [8, 2]}, "de": {"0": [3, 7]}}})
    (tmp_path / "routing_dmoe_random.json").unlink()
    _w(tmp_path / "groups.json", {"method": "exhaustive", "langs": ["en", "fr", "de"], "groups": [["en", "fr"], ["de"]],
                                  "agreement": {"genus": {"ari": 0.5, "nmi": 0.6},
                                                "random grouping vs genus": {"ari": -0.1, "nmi": 0.2},
                                                "family": {"ari": 0.0, "nmi": 0.0},
                                                "random grouping vs family": {"ari": 0.0, "nmi": 0.0},
                                                "random": {"ari": 0.1, "nmi": 0.3}}})
    _w(tmp_path / "new_language.json", {
        "lang": "nl", "per_expert_ppl": [273.79638, 284.8739], "source_expert": 0, "source_group": ["en", "fr"],
        "new_expert": 2, "before": {"ppl": 282.5326688, "bits_per_byte": 4.33329}, "after": {"ppl": 151.40599,
                                                                                          "bits_per_byte": 3.85431},
        "old_before": {"en": {"ppl": 134.637637}}, "old_after": {"en": {"ppl": 160.0396}},
        "old_ppl_change": {"en": 0.18866963}, "old_mean_ppl_change": 0.1515335, "tokens_seen": 30720,
        "train": {"lr": 0.001, "steps": 30}, "base": {"ppl": 171.25}, "after_hard": {"ppl": 140.0},
        "old_mean_ppl_change_hard": 0.0,
        "gate": {"0": {"shift": 1.2, "old_intrusion": {"en": 0.0123, "fr": 0.004}, "new_recall": 0.9667,
                       "fit": {"train_accuracy": 0.99512}}}})
    summary = json.loads((tmp_path / "summary.json").read_text())
    summary["systems"]["dmoe"] = {"mean_ppl": 23.3, "mean_bpb": 2.3, "params_total": 1500, "params_active": 1200,
                                  "tokens_seen": 5000, "routing_accuracy": {"0": 0.6084}}
    _w(tmp_path / "summary.json", summary)
    doc = build_report(tmp_path).read_text()
    nl = _section(doc, "New language")
    assert "{" not in nl and "0.18866963" not in nl and "282.5326688" not in nl
    assert ">282.53<" in nl and ">151.41<" in nl and ">-46.4%<" in nl and ">+18.9%<" in nl and ">+15.2%<" in nl
    assert "expert 2 was copied from expert 0 (en fr)" in nl and "lr=0.001, steps=30" in nl
    assert ">171.25<" in nl and ">140.00<" in nl and "hard routing by language" in nl  # base and hard rows
    assert ">96.7%<" in nl and "en 1.2%" in nl and ">99.5%<" in nl and "0.0123" not in nl  # the gate, readable
    routing = _section(doc, "Routing")
    assert ">60.8%<" in routing and "<th>layer 0</th>" in routing
    assert routing.count("<img") == 1  # the heatmap only: a one-point accuracy plot carries nothing
    systems = _section(doc, "Systems")
    assert "0.6084" not in doc and ">60.8%<" in systems
    groups = _section(doc, "Language groups")
    assert ">family<" not in groups and "every language is Indo-European" in groups
    assert ">genus<" in groups and ">-0.100<" in groups  # chance column beside its reference
    layers = _section(doc, "Parameter deviation and MoE layers")
    assert ">layer</th><th>mean FFN deviation</th>" in layers and ">MoE<" in layers


def test_report_is_valid_html(tmp_path):
    """A strict HTML5 parse (html5lib, the WHATWG parsing algorithm) of a full report finds no error."""
    html5lib = pytest.importorskip("html5lib", reason="html5lib (dev extra) validates the report")
    full_run(tmp_path)
    doc = build_report(tmp_path).read_text()
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    tree = parser.parse(doc)
    assert not parser.errors
    assert tree.find("head/title") is not None and tree.get("lang") == "en"
    ths = tree.findall(".//th")
    assert ths and all((th.text or "").strip() for th in ths)  # no empty header cell
    assert all(img.get("alt") for img in tree.findall(".//img"))
