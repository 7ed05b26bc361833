"""The routing benchmarks' verdict logic on hand-made numbers (the scripts themselves run the heavy part)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from script_loader import load_script  # noqa: E402

cpt = load_script("benchmarks/routing_cpt.py")
rb = load_script("benchmarks/routing_builtin.py")
ep = load_script("benchmarks/expert_peft.py")
sc = load_script("benchmarks/_script.py")


def test_cpt_reading_from_differences():
    cmp = {"model": {"mean_jsd": [0.1, 0.1, 0.2]},
           "difference": {"entropy_mean": [0.02, 0.04, -0.1], "mean_jsd": [-0.01, -0.03, -0.01]}}
    r = cpt.reading(cmp)
    assert r["early_middle_entropy_change"] == pytest.approx(0.03) and r["early_middle_jsd_change"] == pytest.approx(-0.02)
    assert r["diffused_early_middle"] and r["last_layer_specialisation_kept"]  # -0.01 is a 5% drop of 0.2
    cmp["difference"]["mean_jsd"][-1] = -0.05  # a 25% drop
    assert not cpt.reading(cmp)["last_layer_specialisation_kept"]


def test_excess_over_control_and_apart():
    m = {"layers": [0, 1], "specialisation": [0.05, 0.2], "mean_pairwise_jsd": [0.1, 0.3],
         "intervals": {"specialisation": [[0.04, 0.06], [0.18, 0.22]], "mean_pairwise_jsd": [[0.09, 0.11], [0.28, 0.32]]}}
    c = {"layers": [0, 1], "specialisation": [0.055, 0.06], "mean_pairwise_jsd": [0.1, 0.1],
         "intervals": {"specialisation": [[0.05, 0.06], [0.05, 0.07]], "mean_pairwise_jsd": [[0.09, 0.11], [0.09, 0.11]]}}
    ex = rb.excess_over_control(m, c)
    assert [r["excess"] for r in ex["specialisation"]] == pytest.approx([-0.005, 0.14])
    assert [r["apart"] for r in ex["specialisation"]] == [False, True]


def test_expert_peft_summary_keeps_refusals_and_the_chosen_lr():
    run = {"mode": "ssft", "after": {"gl": {"ppl": 90.0}}, "parent_ppl_change": 0.1, "trainable_share": 0.04,
           "before": {"gl": {"ppl": 100.0}}, "train_tokens": 10, "config": {"lr": 4e-4}}
    lastn = {**run, "mode": "lastn", "after": {"gl": {"ppl": 89.0}}, "parent_ppl_change": 0.2,
             "trainable_share": 0.3, "config": {"lr": 1e-3}}
    s = ep.summarise([run, lastn], "gl", "pt", {"seft": {"refused": "seft allows 1 expert(s)"}})
    assert s["table"]["seft"] == {"refused": "seft allows 1 expert(s)"} and s["table"]["ssft"]["lr"] == 4e-4
    assert s["targets"] == {"ssft_share_below_5pct": True, "ssft_child_ppl_within_2pct_of_lastn": True,
                            "ssft_parent_rise_smaller_than_lastn": True}


def test_shared_script_tail(tmp_path, capsys):
    from langmoe.errors import LangmoeError

    assert sc.command_line("routing_cpt.py", ["--out", "a b"]) == "python benchmarks/routing_cpt.py --out 'a b'"
    for name in ("RESULTS.md", "findings.json", "routing_counts.json"):
        (tmp_path / name).write_text("x")
    sc.clear_own_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routing_counts.json"]  # langmoe's own file stays
    with pytest.raises(SystemExit) as e:
        sc.run_main(lambda: 0, "x/expert_peft.py")
    assert e.value.code == 0

    def bad():
        raise LangmoeError("no such model")

    with pytest.raises(SystemExit) as e:
        sc.run_main(bad, "x/expert_peft.py")
    assert e.value.code == 2 and capsys.readouterr().err == "expert_peft.py: error: no such model\n"
    # the three scripts go through it
    assert all(m.run_main.__module__ == m.command_line.__module__ == "_script" for m in (cpt, rb, ep))


def _run(mode, seed, child_ppl, parent_change, lr=4e-3):
    return {"mode": mode, "after": {"gl": {"ppl": child_ppl}}, "parent_ppl_change": parent_change,
            "trainable_share": 0.1, "before": {"gl": {"ppl": 120.0}}, "train_tokens": 10,
            "config": {"lr": lr, "seed": seed}}


def test_expert_peft_intervals_and_paired_comparison_by_hand(tmp_path, capsys):
    runs = [_run("ssft", s, p, 0.1) for s, p in zip((0, 1, 2), (90.0, 92.0, 94.0), strict=True)]
    runs += [_run("lastn", s, 100.0, 0.2) for s in (0, 1, 2)]
    runs += [_run("lora", s, p, 0.05) for s, p in zip((0, 1), (80.0, 100.0), strict=True)]  # seed 2 missing
    s = ep.summarise(runs, "gl", "pt", {"seft": {"refused": "no"}})
    # ssft child ppl 90, 92, 94: mean 92, sd 2, 95% t (2 df) 4.302653 -> 92 +- 4.302653 * 2 / sqrt 3
    h = 4.302653 * 2 / 3 ** 0.5
    assert s["table"]["ssft"]["child_ppl_ci"] == pytest.approx([92 - h, 92 + h], abs=1e-5)
    assert s["table"]["lastn"]["parent_ppl_change_ci"] == pytest.approx([0.2, 0.2])
    # per seed ratios -.10 -.08 -.06: mean -.08, sd .02 -> the interval is below 0: lower child ppl than lastn
    v = s["versus"]["ssft_vs_lastn"]
    assert v["child_ppl_ratio_minus_1"] == pytest.approx(-0.08)
    assert v["child_ppl_ratio_ci"] == pytest.approx([-0.08 - h / 100, -0.08 + h / 100], abs=1e-7)
    assert v["child_ppl"] == "lower" and v["parent_change_difference_ci"] == pytest.approx([-0.1, -0.1])
    # against lora only seeds 0 and 1 pair: ratios 90/80-1 = .125, 92/100-1 = -.08 -> spans 0
    w = s["versus"]["ssft_vs_lora"]
    assert w["seeds"] == 2 and w["child_ppl"] == "not distinguishable"
    assert set(s["versus"]) == {"ssft_vs_lastn", "ssft_vs_lora"}  # seft refused, aeft not run
    # the same summary re-read from a recorded json, without training
    args = {"command": "python benchmarks/expert_peft.py --model m", "child": "gl", "parent": "pt",
            "last_n_used": 2, "lrs": [4e-3], "seeds": [0, 1, 2]}
    sweep = {"seft": {"refused": "no"}, "ssft": {"valid_ppl": {"0.004": 91.0}, "best_lr": 4e-3},
             "lastn": {"valid_ppl": {"0.004": 99.0}, "best_lr": 4e-3},
             "lora": {"valid_ppl": {"0.004": 95.0}, "best_lr": 4e-3}}
    rec = tmp_path / "expert_peft.json"
    rec.write_text(json.dumps({"args": args, "summary": {}, "sweep": sweep, "runs": runs, "reference_pool": ["pt"]}))
    assert ep.main(["--from-json", str(rec)]) == 0
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| ssft vs lastn | 3 | -8.00 [-12.97, -3.03] | lower | -10.00 [-10.00, -10.00] |" in md
    assert "re-read from the recorded runs with `python benchmarks/expert_peft.py --from-json" in md
    assert json.loads(rec.read_text())["summary"]["versus"]["ssft_vs_lastn"]["child_ppl"] == "lower"
    capsys.readouterr()


def test_cpt_reading_on_intervals_by_hand():
    cmp = {"model": {"layers": [0, 1, 3], "mean_jsd": [0.1, 0.1, 0.2]},
           "difference": {"entropy_mean": [0.02, 0.04, -0.1], "mean_jsd": [-0.01, -0.03, -0.01]},
           "difference_intervals": {"level": 0.95, "n_boot": 200,
                                    "entropy_mean": [[0.01, 0.03], [-0.01, 0.09], [-0.2, -0.05]],
                                    "mean_jsd": [[-0.02, -0.005], [-0.05, -0.01], [-0.03, 0.01]]}}
    r = cpt.reading(cmp)
    # layer 0: entropy up, JSD down, both clear of 0; layer 1: the entropy interval spans 0
    assert [x["direction"] for x in r["per_layer"]] == ["diffused", "unclear", "unclear"]
    assert r["diffused_early_middle_read"] == "partly" and r["diffused_early_middle"]  # the means alone say yes
    # last layer: 10% of 0.2 is -0.02; the interval [-0.03, 0.01] reaches below it and above it
    assert r["last_layer_kept_read"] == "not distinguishable"
    cmp["difference_intervals"]["mean_jsd"][2] = [-0.015, 0.01]
    assert cpt.reading(cmp)["last_layer_kept_read"] == "yes"
    cmp["difference_intervals"]["mean_jsd"][2] = [-0.05, -0.021]
    assert cpt.reading(cmp)["last_layer_kept_read"] == "no"
    cmp["difference_intervals"]["entropy_mean"][:2] = [[-0.03, -0.01], [-0.09, -0.01]]
    cmp["difference_intervals"]["mean_jsd"][:2] = [[0.005, 0.02], [0.01, 0.05]]
    assert cpt.reading(cmp)["diffused_early_middle_read"] == "no"


def test_cpt_reread_from_folder(tmp_path, capsys):
    from langmoe.methods.routing.collect import RoutingCounts

    def rc(units):
        counts = [[[sum(u[0][e] for u in units[x]) for e in range(2)]] for x in ("en", "de")]
        return RoutingCounts(langs=["en", "de"], layers=[0], num_experts=[2], top_k=[1], counts=counts,
                             tokens={"en": 4, "de": 4}, unit_counts=units)

    # base: en's units [2 0], [0 2] and de's [1 1] twice; continued: en [1 1] twice (see test_compare)
    rc({"en": [[[2, 0]], [[0, 2]]], "de": [[[1, 1]], [[1, 1]]]}).save(tmp_path / "routing_counts.json")
    rc({"en": [[[1, 1]], [[1, 1]]], "de": [[[1, 1]], [[1, 1]]]}).save(tmp_path / "compare_counts.json")
    args = {"command": "python benchmarks/routing_cpt.py", "cpt_langs": ["gl"], "steps": 3, "lr": 1e-3, "seed": 0,
            "focus": "en"}
    (tmp_path / "findings.json").write_text(json.dumps({"args": args, "cpt": {"tokens": 9, "first_loss": 5.0,
                                                                                "last_loss": 4.0}}))
    assert cpt.main(["--from-folder", str(tmp_path)]) == 0
    f = json.loads((tmp_path / "findings.json").read_text())
    assert f["cpt"]["tokens"] == 9 and f["reread"].endswith(f"--from-folder {tmp_path}")
    # the only layer is the last: entropy change 0, interval [0, ln2/2] (by hand in test_compare)
    assert f["reading"]["per_layer"][0]["entropy_ci"] == pytest.approx([0, 0.5 * 0.6931471805599453])
    md = (tmp_path / "RESULTS.md").read_text()
    assert "Reading redone from the folder's counts" in md and "| 0 | +0.0000 [+0.0000, +0.3466]" in md
    capsys.readouterr()


def test_expert_peft_matched_cost_by_hand(tmp_path):
    lrs = [1e-3, 4e-3]
    sweep = {"seft": {"refused": "no"},
             "lastn": {"valid_ppl": {"0.001": 80.0, "0.004": 60.0}},
             "ssft": {"valid_ppl": {"0.001": 90.0, "0.004": 70.0}}}
    log = tmp_path / "run.log"
    log.write_text("seft: refused: no\n"
                   "valid seed 0 lastn lr 0.001: share 38.248%  child ppl 111.635 -> 80.000  parent +10.00%\n"
                   "valid seed 0 lastn lr 0.004: share 38.248%  child ppl 111.635 -> 60.000  parent +30.00%\n"
                   "valid seed 0 ssft  lr 0.001: share 13.236%  child ppl 111.635 -> 90.000  parent +5.00%\n"
                   "valid seed 0 ssft  lr 0.004: share 13.236%  child ppl 111.635 -> 70.000  parent +25.00%\n"
                   "test seed 0 ssft  lr 0.004: share 13.236%  child ppl 118.637 -> 66.158  parent +44.40%\n")
    ep.sweep_parent_changes_from_log(sweep, log)
    assert sweep["ssft"]["valid_parent_change"] == pytest.approx({"0.001": 0.05, "0.004": 0.25})
    assert "valid_parent_change" not in sweep["seft"]
    mc = ep.matched_cost(sweep, lrs)
    # at last-n's +10%: ssft between (5%, 90) and (25%, 70) -> 90 - 5/20 * 20 = 85; at +30%: beyond ssft's range
    assert mc["parent_change"] == pytest.approx([0.1, 0.3])
    assert mc["child_ppl"]["ssft"][0] == pytest.approx(85.0) and mc["child_ppl"]["ssft"][1] is None
    assert mc["child_ppl"]["lastn"] == pytest.approx([80.0, 60.0])
    assert ep.matched_cost({"ssft": sweep["ssft"]}, lrs) is None  # no last-n sweep: nothing to match
