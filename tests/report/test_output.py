"""CLI output when piped: full-width tables, one plain progress line per language, nothing drawn when off."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
from tiny_world import char_tokenizer, make_base, make_corpus  # noqa: E402

from langmoe.commands.run import print_summary  # noqa: E402
from langmoe.console import PIPED_WIDTH, console, progress  # noqa: E402


def _summary(names):
    langs = ["en", "fr"]
    row = {"mean_ppl": 123.456, "mean_bpb": 2.3456, "ppl": {x: 100.0 for x in langs}, "params_total": 2_098_304,
           "params_active": 2_098_304, "tokens_seen": 204_800, "routing_accuracy": {"0": 0.6084}}
    return {"systems": {n: dict(row) for n in names}, "languages": langs,
            "note": "all systems trained for the same number of optimizer steps: equal token budget",
            "new_language": {"lang": "ga", "before": {"ppl": 282.5}, "after": {"ppl": 151.4}, "source_expert": 0,
                             "source_group": ["en"], "old_mean_ppl_change": 0.15153}}


def test_piped_tables_are_never_truncated(capsys):
    con = console()  # pytest captures stdout: not a terminal
    assert con.width == PIPED_WIDTH
    names = ["base", "dmoe_random_hard", "xelm_ensemble", "dmoe_random", "dmoe_hard", "cpt", "btx", "lora"]
    print_summary(_summary(names), con, title="a long title for a run with many systems")
    out = capsys.readouterr().out
    assert "…" not in out
    for n in names:
        assert n in out
    assert "60.8%" in out and "+15.2%" in out and "204.80K" in out
    assert max(len(line) for line in out.splitlines()) > 80  # wider than a default 80-column console


def test_progress_lines_when_not_a_terminal(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from langmoe.data.corpus import open_corpus
    from langmoe.eval.perplexity import evaluate_languages

    torch.set_num_threads(1)
    corpus = open_corpus(str(make_corpus(tmp_path / "corpus", langs=("en", "fr"), docs=(2, 1, 1))))
    model = AutoModelForCausalLM.from_pretrained(str(make_base(tmp_path / "base")))
    tok = char_tokenizer()
    capsys.readouterr()  # drop transformers' own save/load output
    scores = evaluate_languages(model, tok, corpus, ["en", "fr"], window=32, stride=16, progress="lines")
    err = capsys.readouterr().err.splitlines()
    assert err == [f"eval 1/2: en: ppl {scores['en'].ppl:.2f}", f"eval 2/2: fr: ppl {scores['fr'].ppl:.2f}"]
    evaluate_languages(model, tok, corpus, ["en"], window=32, stride=16)  # library default: silent
    assert capsys.readouterr().err == ""


def test_progress_off_and_bar_mode_print_nothing_when_piped(capsys):
    with progress("x", 2, enabled=False) as p:
        p.advance("a")
    with progress("x", 2, plain_lines=False) as p:  # "bar" mode: a bar on a terminal only
        p.advance("a")
    assert p.done == 1
    assert capsys.readouterr().err == ""


def test_bar_on_a_terminal_is_transient(monkeypatch, capsys):
    """On a terminal: a rich bar on stderr that clears itself, and no plain lines."""
    import langmoe.console as c

    monkeypatch.setattr(c, "_isatty", lambda _s: True)
    with progress("eval", 3) as p:
        for x in ("en", "fr", "de"):
            p.advance(x)
    assert p.done == 3
    err = capsys.readouterr().err
    assert "eval 1/3" not in err  # no plain lines on a terminal
