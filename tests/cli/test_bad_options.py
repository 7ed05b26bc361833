"""Every option of every command that takes a path, a language list or a choice, read from the argparse parsers
themselves, gets its bad values: each exits 2 with one stderr line naming the problem (no usage block, no
traceback) and leaves every file as it was.

`KINDS` says what each text option holds; `test_every_option_is_classified` fails for an option it does not know
(a new `--token-store` must be classified here, and then gets its cases). Options with argparse `choices=` are
found on their own. Numbers (type=int/float) and switches are out of scope here (test_bad_input.py has the range
checks). `BASE` is a valid invocation of each command; a case replaces one option's value in it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import test_bad_input
from test_bad_input import _snapshot, fails

from langmoe.cli import build_parser
from langmoe.io import MARKER

# ---- what each text option holds ---------------------------------------------------------------------------------

IN_MODEL, IN_CORPUS, IN_FILE, IN_FOLDER = "in-model", "in-corpus", "in-file", "in-folder"
OUT_WHOLE, OUT_GROWING, OUT_FILE = "out-whole", "out-growing", "out-file"  # replaced whole / filled / one file
LANGS, NAME, TEXT, RECIPE_COPY = "langs", "name", "text", "recipe-copy"  # NAME: one of a fixed set, not choices=
STORE = "token-store"  # a token store: read, or created and filled when new or empty

KINDS: dict[tuple[str, str], str] = {
    ("adapt", "--model"): IN_MODEL, ("adapt", "--corpus"): IN_CORPUS, ("adapt", "--child"): LANGS,
    ("adapt", "--parent"): LANGS, ("adapt", "--counts"): IN_FILE, ("adapt", "--langs"): LANGS,
    ("adapt", "--counts-split"): NAME, ("adapt", "--out"): OUT_WHOLE,
    ("add-language", "--model"): IN_MODEL, ("add-language", "--lang"): LANGS, ("add-language", "--corpus"): IN_CORPUS,
    ("add-language", "--out"): OUT_WHOLE, ("add-language", "--base"): IN_MODEL, ("add-language", "--groups"): LANGS,
    ("convert", "--model"): IN_MODEL, ("convert", "--out"): OUT_WHOLE,
    ("corpus stats", "--corpus"): IN_CORPUS, ("corpus stats", "--langs"): LANGS,
    ("corpus show", "--lang"): LANGS, ("corpus show", "--split"): NAME, ("corpus show", "--corpus"): IN_CORPUS,
    ("demo", "--out"): OUT_GROWING, ("demo", "--recipe"): IN_FILE,
    ("deviation", "--model"): IN_MODEL, ("deviation", "--corpus"): IN_CORPUS, ("deviation", "--langs"): LANGS,
    ("deviation", "--out"): OUT_GROWING,
    ("eval", "--model"): IN_MODEL, ("eval", "--corpus"): IN_CORPUS, ("eval", "--langs"): LANGS,
    ("eval", "--split"): NAME, ("eval", "--json"): OUT_FILE,
    ("expand", "--model"): IN_MODEL, ("expand", "--new"): LANGS, ("expand", "--old"): LANGS,
    ("expand", "--corpus"): IN_CORPUS, ("expand", "--out"): OUT_WHOLE, ("expand", "--variant"): NAME,
    ("expand", "--method"): NAME, ("expand", "--work-dir"): OUT_GROWING,
    ("export", "--model"): IN_MODEL, ("export", "--out"): OUT_WHOLE,
    ("generate", "--model"): IN_MODEL, ("generate", "--prompt"): TEXT, ("generate", "--lang"): LANGS,
    ("generate", "--corpus"): IN_CORPUS,
    ("group", "--deviation"): IN_FILE, ("group", "--out"): OUT_FILE,
    ("languages", "codes"): LANGS, ("languages", "--family"): NAME, ("languages", "--script"): NAME,
    ("lm-eval", "--model"): IN_MODEL, ("lm-eval", "--tasks"): NAME, ("lm-eval", "--include-path"): IN_FOLDER,
    ("lm-eval", "--device"): NAME, ("lm-eval", "--corpus"): IN_CORPUS, ("lm-eval", "--langs"): LANGS,
    ("lm-eval", "--out"): OUT_FILE,
    ("lm-eval-tasks", "--out"): OUT_GROWING, ("lm-eval-tasks", "--corpus"): IN_CORPUS,
    ("lm-eval-tasks", "--langs"): LANGS, ("lm-eval-tasks", "--split"): NAME,
    ("pretrain", "--preset"): NAME, ("pretrain", "--corpus"): IN_CORPUS, ("pretrain", "--langs"): LANGS,
    ("pretrain", "--out"): OUT_GROWING, ("pretrain", "--tokenizer"): IN_FOLDER,
    ("recipes", "--copy"): RECIPE_COPY,
    ("report", "run_dir"): IN_FOLDER, ("report", "--out"): OUT_FILE, ("report", "--title"): TEXT,
    ("routing", "--model"): IN_MODEL, ("routing", "--corpus"): IN_CORPUS, ("routing", "--langs"): LANGS,
    ("routing", "--out"): OUT_WHOLE, ("routing", "--split"): NAME, ("routing", "--log-base"): NAME,
    ("routing", "--adapt-pairs"): TEXT, ("routing", "--compare"): IN_MODEL, ("routing", "--compare-lang"): NAME,
    ("run", "recipe"): IN_FILE, ("run", "--run-dir"): OUT_GROWING,
    ("select-layers", "--deviation"): IN_FILE, ("select-layers", "--out"): OUT_FILE,
    ("tokenizer train", "--corpus"): IN_CORPUS, ("tokenizer train", "--langs"): LANGS,
    ("tokenizer train", "--out"): OUT_WHOLE,
    ("train", "--model"): IN_MODEL, ("train", "--corpus"): IN_CORPUS, ("train", "--langs"): LANGS,
    ("train", "--out"): OUT_GROWING,
    ("upcycle", "--model"): IN_MODEL, ("upcycle", "--layers"): TEXT, ("upcycle", "--experts"): TEXT,
    ("upcycle", "--classifier-layers"): TEXT, ("upcycle", "--out"): OUT_WHOLE,
    ("deviation", "--kind"): NAME, ("deviation", "--params"): NAME, ("deviation", "--base-copy"): NAME,
    ("deviation", "--optimizer-state"): NAME, ("deviation", "--sketch-method"): NAME,
    ("tokenize", "--model"): IN_MODEL, ("tokenize", "--tokenizer"): IN_FOLDER, ("tokenize", "--corpus"): IN_CORPUS,
    ("tokenize", "--langs"): LANGS, ("tokenize", "--splits"): NAME, ("tokenize", "--out"): STORE,
    **{(cmd, "--token-store"): STORE for cmd in ("adapt", "add-language", "demo", "deviation", "eval", "expand",
                                                  "pretrain", "routing", "run", "train")},
}
CHOICE = "choice"  # argparse choices=: found from the parser

env = test_bad_input.env  # the shared inputs (a tiny model, corpora, foreign and marked folders), built per module


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every leaf command's parser by its words ('corpus stats')."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[" ".join(words)] = parser
        for sub in subs:
            for name, p in sub.choices.items():
                walk(p, [*words, name])

    walk(build_parser(), [])
    return out


def _key(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


def _options() -> dict[tuple[str, str], tuple[str, argparse.Action]]:
    """(command, option) -> (kind, action) for every option in scope; an unknown text option has kind None."""
    found = {}
    for cmd, parser in _commands().items():
        for a in parser._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._StoreTrueAction,
                              argparse._StoreFalseAction)) or a.type in (int, float):
                continue
            found[(cmd, _key(a))] = (CHOICE if a.choices else KINDS.get((cmd, _key(a))), a)
    return found


# ---- valid invocations: each case breaks one option of these ----------------------------------------------------

FAST_EVAL = {"--window": "16", "--stride": "8"}


def BASE(e: dict[str, Path], t: Path) -> dict[str, dict[str, Any]]:  # noqa: N802 - a table
    """A valid command line per command (option -> value; positionals by name, first)."""
    return {
        "adapt": {"--model": e["moe"], "--corpus": e["corpus3"], "--child": "it", "--parent": "fr", "--langs": "de",
                  "--tokens-per-lang": "200", "--block-len": "16", "--steps": "1", "--out": t / "a"},
        "add-language": {"--model": e["dmoe"], "--lang": "it", "--corpus": e["corpus3"], "--out": t / "al",
                         "--steps": "1", "--block-len": "16"},
        "convert": {"--model": e["mixtral"], "--out": t / "c"},
        "corpus stats": {"--corpus": e["corpus"]},
        "corpus show": {"--corpus": e["corpus"], "--lang": "de"},
        "demo": {"--out": t / "demo"},
        "deviation": {"--model": e["model"], "--corpus": e["corpus"], "--langs": ["de", "fr"], "--steps": "1",
                      "--out": t / "d"},
        "eval": {"--model": e["model"], "--corpus": e["corpus"], "--no-unigram": None, **FAST_EVAL},
        "expand": {"--method": "moe_lpr", "--model": e["model"], "--new": "it", "--old": "de,fr",
                   "--corpus": e["corpus3"], "--out": t / "x", "--stage1-steps": "1", "--stage2-steps": "1"},
        "export": {"--model": e["moe"], "--out": t / "e"},
        "generate": {"--model": e["model"], "--corpus": e["corpus"], "--lang": "de", "--max-new-tokens": "2"},
        "group": {"--deviation": e["dev3"], "--groups": "2", "--out": t / "g.json"},
        "languages": {},
        "lm-eval": {"--model": e["model"], "--tasks": ["langmoe_bpb_de"], "--corpus": e["corpus"], "--limit": "1"},
        "lm-eval-tasks": {"--out": t / "tasks", "--corpus": e["corpus"], "--split": "train", "--max-docs": "2"},
        "pretrain": {"--corpus": e["corpus"], "--steps": "1", "--out": t / "p"},
        "recipes": {"--copy": ["dmoe", t / "rc"]},
        "report": {"run_dir": e["summary_run"], "--out": t / "r.html"},
        "routing": {"--model": e["moe"], "--corpus": e["corpus"], "--langs": ["de", "fr"], "--window": "16",
                    "--tokens-per-lang": "100", "--out": t / "rt"},
        "run": {"recipe": e["r_good"], "--run-dir": t / "run"},
        "select-layers": {"--deviation": e["dev2"], "--out": t / "s.json"},
        "tokenizer train": {"--corpus": e["corpus"], "--vocab-size": "300", "--out": t / "tok"},
        "tokenize": {"--model": e["model"], "--corpus": e["corpus"], "--langs": "de", "--max-tokens-per-lang": "50",
                     "--out": t / "store"},
        "train": {"--model": e["model"], "--corpus": e["corpus"], "--steps": "1", "--batch-size": "2",
                  "--block-len": "16", "--out": t / "o"},
        "upcycle": {"--model": e["model"], "--experts": "2", "--out": t / "u"},
    }


EXCLUSIVE = {("generate", "--prompt"): "--lang", ("generate", "--lang"): None,
             ("tokenize", "--tokenizer"): "--model"}  # a case on --prompt drops --lang


def _argv(cmd: str, options: dict[str, Any]) -> list[str]:
    argv = cmd.split()
    positional = [(k, v) for k, v in options.items() if not k.startswith("-")]
    for _, v in positional:
        argv += [str(x) for x in (v if isinstance(v, list) else [v])]
    for k, v in options.items():
        if k.startswith("-"):
            argv += [k] + ([] if v is None else [str(x) for x in (v if isinstance(v, list) else [v])])
    return argv


# ---- the bad values of each kind ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defect:
    name: str
    value: Callable[[dict, Path, str], Any]  # (env, tmp_path, command) -> the bad value (may create files in tmp)
    needles: Callable[[dict, Path, Any], tuple[str, ...]]  # what the error line must name


def _missing(e, t, cmd):
    return t / "no-such-path"


def _own_folder_with_a_note(e, t, cmd):
    """A folder `cmd` wrote whole earlier, to which the user then added a note."""
    d = t / "own"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"\0" * 8)
    (d / MARKER).write_text(json.dumps({"command": cmd.split()[0], "time": "t", "layout": "whole",
                                        "files": ["model.safetensors"]}))
    (d / "NOTES.txt").write_text("mine\n")
    return d


def _note_in_langmoe_folder(e, t, cmd):
    d = _own_folder_with_a_note(e, t, "upcycle")
    return d / "NOTES.txt"


def _names(*needles: str):
    return lambda e, t, v: needles


def _named(e, t, v):
    return (Path(v if not isinstance(v, list) else v[-1]).name,)


EMPTY = Defect("empty", lambda e, t, c: "", _names("is empty"))
NO_LANGUAGE = [Defect("empty", lambda e, t, c: "", _names("names no language")),
               Defect("only-commas", lambda e, t, c: " , ", _names("names no language"))]
UNDER_FILE = Defect("under-a-file", lambda e, t, c: e["file"] / "x", _names("afile.txt"))
FOREIGN = Defect("foreign-folder", lambda e, t, c: e["foreign"], _names("not written by langmoe", "--overwrite"))

DEFECTS: dict[str, list[Defect]] = {
    IN_MODEL: [EMPTY, Defect("missing", _missing, _named), Defect("a-file", lambda e, t, c: e["file"], _named)],
    IN_CORPUS: [EMPTY, Defect("missing", _missing, _named), Defect("a-file", lambda e, t, c: e["file"], _named)],
    IN_FILE: [EMPTY, Defect("missing", _missing, _named), Defect("a-folder", lambda e, t, c: e["foreign"], _named)],
    IN_FOLDER: [EMPTY, Defect("missing", _missing, _named), Defect("a-file", lambda e, t, c: e["file"], _named)],
    OUT_WHOLE: [EMPTY, UNDER_FILE, FOREIGN,
                Defect("own-folder-with-a-user-file", _own_folder_with_a_note, _names("NOTES.txt", "--overwrite"))],
    OUT_GROWING: [EMPTY, UNDER_FILE, FOREIGN],
    OUT_FILE: [EMPTY, UNDER_FILE, Defect("a-folder", lambda e, t, c: t, _names("is a folder")),
               Defect("a-user-file", lambda e, t, c: e["existing_json"], _names("already exists", "--overwrite")),
               Defect("a-user-file-in-a-langmoe-folder", _note_in_langmoe_folder, _names("already exists"))],
    LANGS: [*NO_LANGUAGE, Defect("unknown", lambda e, t, c: "qq", _names("qq"))],
    NAME: [EMPTY, Defect("bogus", lambda e, t, c: "bogus", _names("bogus"))],
    TEXT: [EMPTY],
    STORE: [EMPTY, UNDER_FILE, Defect("a-file", lambda e, t, c: e["file"], _named), Defect("foreign-folder", lambda e, t, c: e["foreign"], _names("not a token store"))],
    RECIPE_COPY: [Defect("name-empty", lambda e, t, c: ["", t / "rc"], _names("is empty")),
                  Defect("name-bogus", lambda e, t, c: ["bogus", t / "rc"], _names("bogus", "dmoe")),
                  Defect("folder-a-file", lambda e, t, c: ["dmoe", e["file"]], _names("afile.txt")),
                  Defect("folder-under-a-file", lambda e, t, c: ["dmoe", e["file"] / "x"], _names("afile.txt"))],
}


# Where the line names the valid values rather than the given one (the expansion config's own validation).
NEEDLES = {("expand", "--variant", "bogus"): ("variant", "moe_lpr", "full_ft", "lora")}


def _choice_defect(action: argparse.Action) -> Defect:
    return Defect("bogus", lambda e, t, c: "bogus",
                  lambda e, t, v: ("'bogus' is not a valid choice", *map(str, action.choices)))


def _cases() -> list[tuple[str, str, Defect]]:
    cases = []
    for (cmd, opt), (kind, action) in sorted(_options().items()):
        defects = [_choice_defect(action)] if kind == CHOICE else DEFECTS.get(kind or "", [])
        cases += [(cmd, opt, d) for d in defects]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def world(env, tmp_path_factory) -> dict[str, Path]:
    """`env` plus: a DMoE folder with its languages file, a three-language corpus, a run folder with a summary."""
    from langmoe.methods.dmoe.new_language_stage import write_languages_file

    e = dict(env)
    root = tmp_path_factory.mktemp("opts")
    e["dmoe"] = root / "dmoe"
    shutil.copytree(env["moe"], e["dmoe"])
    write_languages_file(e["dmoe"], {"de": 0, "fr": 1})
    e["corpus3"] = root / "corpus3"
    shutil.copytree(env["corpus"], e["corpus3"])
    (e["corpus3"] / "it.txt").write_text("\n\n".join(f"Il gatto numero {i} dorme sul divano." for i in range(12)),
                                         encoding="utf-8")
    (e["corpus3"] / "es.txt").write_text("\n\n".join(f"El gato número {i} duerme en el sofá." for i in range(12)),
                                         encoding="utf-8")
    e["summary_run"] = root / "summary_run"
    e["summary_run"].mkdir()
    (e["summary_run"] / "summary.json").write_text(json.dumps(
        {"systems": {"base": {"mean_ppl": 9.0, "mean_bpb": 1.0}}}), encoding="utf-8")
    e["opts_root"] = root
    return e


@pytest.mark.parametrize("cmd, opt, defect", CASES, ids=[f"{c.replace(' ', '-')}{o}-{d.name}" for c, o, d in CASES])
def test_bad_option_value(world, tmp_path, capsys, cmd, opt, defect):
    options = dict(BASE(world, tmp_path)[cmd])
    if EXCLUSIVE.get((cmd, opt)):
        options.pop(EXCLUSIVE[(cmd, opt)])
    value = defect.value(world, tmp_path, cmd)
    action = _options()[(cmd, opt)][1]
    options[opt] = [value] if action.nargs in ("+", "*") and not isinstance(value, list) else value
    before = _snapshot(world["root"], world["opts_root"], tmp_path)
    needles = NEEDLES.get((cmd, opt, defect.name)) or defect.needles(world, tmp_path, value)
    fails(capsys, _argv(cmd, options), *needles)
    after = _snapshot(world["root"], world["opts_root"], tmp_path)
    assert {p: h for p, h in after.items() if before.get(p) != h} == {} and set(before) <= set(after)


def test_every_option_is_classified():
    """A text option nobody classified (a new path, language list or name) fails here until KINDS holds it, and
    every command with an option in scope has a valid invocation in BASE."""
    options = _options()
    unknown = sorted(k for k, (kind, _) in options.items() if kind is None)
    assert not unknown, f"classify these options in KINDS (and so give them bad-value cases): {unknown}"
    stale = sorted(k for k in KINDS if k not in options)
    assert not stale, f"KINDS names options the CLI no longer has: {stale}"
    no_base = sorted({cmd for cmd, _ in options} - set(BASE(_AnyKey(), Path())))
    assert not no_base, f"give these commands a valid invocation in BASE: {no_base}"
    assert len(CASES) >= 200, len(CASES)


class _AnyKey(dict):
    def __missing__(self, key):
        return Path(key)


def test_add_language_groups_must_match_the_models_record(world, tmp_path, capsys):
    """--groups that contradicts the model's langmoe_languages.json would write wrong metadata: refused, naming the
    difference; one that agrees passes (the run then stops at the next check, a missing --base)."""
    base = ["add-language", "--model", world["dmoe"], "--lang", "it", "--corpus", world["corpus3"], "--out",
            tmp_path / "out", "--steps", "1", "--block-len", "16"]
    fails(capsys, [*base, "--groups", "fr/de"], "contradicts", "langmoe_languages.json", "de: expert 1, recorded 0",
          "fr: expert 0, recorded 1")
    fails(capsys, [*base, "--groups", "de"], "fr: missing (recorded on expert 1)")
    fails(capsys, [*base, "--groups", "de/fr,es"], "es: not in the record")
    fails(capsys, [*base, "--groups", "de/fr", "--base", tmp_path / "no-base"], "no-base")  # agreed: got further
    fails(capsys, [*base, "--base", tmp_path / "no-base"], "no-base")
    no_record = [*base[:2], world["moe"], *base[3:]]  # the groups come from --groups alone: experts must exist
    fails(capsys, [*no_record, "--groups", "de/fr/es"], "expert 2", "2 experts per MoE layer")
    fails(capsys, no_record, "langmoe_languages.json", "--groups")
    damaged = tmp_path / "damaged"
    shutil.copytree(world["dmoe"], damaged)
    (damaged / "langmoe_languages.json").write_text('{"expert_of": {"de": "zero"}}')
    fails(capsys, [*base[:2], damaged, *base[3:]], "langmoe_languages.json is damaged")
    assert not (tmp_path / "out").exists()
