"""The routing benchmarks' verdict logic on hand-made numbers (the scripts themselves run the heavy part)."""

from __future__ import annotations

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
