"""Commands that write their output folder whole: everything they put there is on the marker's file list (also
files written after the folder was swapped in), so a rerun may replace the folder, while a file the user added
since is named and kept; `--overwrite` then replaces the folder (the path no other test took: check_output's
permission followed by the atomic folder write)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "methods" / "expansion"))
from expansion_world import make_base, make_corpus  # noqa: E402

from langmoe.cli import main  # noqa: E402
from langmoe.io import MARKER, foreign_files, list_files, read_marker  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reruns")
    w = {"root": root, "corpus": make_corpus(root / "corpus"), "base": make_base(root / "base")}
    w["moe"] = root / "moe"
    assert main(["upcycle", "--model", str(w["base"]), "--experts", "2", "--out", str(w["moe"])]) == 0
    w["legacy"] = Path(__file__).resolve().parents[1] / "models" / "data" / "legacy_gpt2"  # for `convert`
    w["dmoe"] = root / "dmoe"
    assert main(["upcycle", "--model", str(w["base"]), "--experts", "2", "--out", str(w["dmoe"])]) == 0
    from langmoe.methods.dmoe.new_language_stage import write_languages_file

    write_languages_file(w["dmoe"], {"en": 0, "de": 1})  # recorded in dmoe's marker list: written by langmoe
    return w


EXPAND_FAST = ["--stage1-steps", "1", "--stage2-steps", "1", "--block-len", "16", "--micro-batch-size", "2",
               "--max-train-tokens", "400", "--threads", "1", "--no-eval"]

COMMANDS = {
    "upcycle": lambda w, out: ["upcycle", "--model", w["base"], "--experts", "2", "--out", out],
    "export": lambda w, out: ["export", "--model", w["moe"], "--out", out],
    "convert": lambda w, out: ["convert", "--model", w["legacy"], "--out", out],
    "tokenizer": lambda w, out: ["tokenizer", "train", "--corpus", w["corpus"], "--vocab-size", "300", "--out", out],
    "routing": lambda w, out: ["routing", "--model", w["moe"], "--corpus", w["corpus"], "--langs", "en", "de",
                               "--split", "train", "--tokens-per-lang", "64", "--window", "16", "--out", out],
    "adapt": lambda w, out: ["adapt", "--model", w["moe"], "--corpus", w["corpus"], "--child", "nl", "--parent", "de",
                             "--mode", "lastn", "--steps", "1", "--batch-size", "2", "--block-len", "16",
                             "--tokens-per-lang", "64", "--eval-chars", "200", "--out", out],
    "expand": lambda w, out: ["expand", "--method", "moe_lpr", "--model", w["base"], "--new", "es", "--old", "en",
                              "--corpus", w["corpus"], *EXPAND_FAST, "--out", out],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_rerun_replaces_only_what_langmoe_wrote(world, tmp_path, capsys, name):
    out = tmp_path / "out"
    argv = [str(a) for a in COMMANDS[name](world, out)]
    assert main(argv) == 0, capsys.readouterr().err
    marker = read_marker(out)
    assert marker["layout"] == "whole" and marker["files"] == list_files(out), "the list is the folder's content"
    assert foreign_files(out) == []
    (out / "NOTES.txt").write_text("mine\n")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NOTES.txt" in err[0] and "--overwrite" in err[0], err
    assert (out / "NOTES.txt").read_text() == "mine\n"
    (out / "NOTES.txt").unlink()
    assert main(argv) == 0  # its own folder, nothing else in it: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temp or old folder left beside it"


def test_overwrite_then_atomic_write_replaces_the_folder(world, tmp_path, capsys):
    """`--overwrite` permits check_output, and that permission lets the later atomic folder write replace a folder
    holding a user's file (the documented meaning of --overwrite); the next command has no such permission."""
    out = tmp_path / "out"
    argv = [str(a) for a in COMMANDS["upcycle"](world, out)]
    assert main(argv) == 0
    (out / "NOTES.txt").write_text("mine\n")
    (out / "mine").mkdir()
    (out / "mine" / "a.txt").write_text("x")
    assert main(argv) == 2 and "NOTES.txt, mine/" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "NOTES.txt").exists() and not (out / "mine").exists()
    assert read_marker(out)["files"] == list_files(out) and "model.safetensors" in list_files(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (out / "NOTES.txt").write_text("mine\n")
    assert main(argv) == 2  # the permission ended with the command that was given --overwrite
    assert (out / "NOTES.txt").is_file()


def test_overwrite_of_a_foreign_folder_then_rerun(world, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "theirs.bin").write_bytes(b"1")
    argv = [str(a) for a in COMMANDS["export"](world, out)]
    assert main(argv) == 2 and "not written by langmoe" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "theirs.bin").exists() and read_marker(out)["command"] == "export"
    assert main(argv) == 0


def test_add_language_output_lists_its_json_files(world, tmp_path, capsys):
    """add-language saves the model folder, then writes two JSON files into it: both are on the list."""
    out = tmp_path / "al"
    assert main(["add-language", "--model", str(world["dmoe"]), "--lang", "es", "--corpus", str(world["corpus"]),
                 "--out", str(out), "--steps", "1", "--block-len", "16", "--micro-batch-size", "2",
                 "--max-tokens", "200", "--window", "16", "--stride", "8", "--max-chars", "100"]) == 0
    assert {"add_language.json", "langmoe_languages.json"} <= set(read_marker(out)["files"])
    assert foreign_files(out) == []
    assert json.loads((out / "langmoe_languages.json").read_text())["expert_of"] == {"en": 0, "de": 1, "es": 2}
    assert (out / MARKER).is_file()


def test_add_language_reruns_into_its_own_folder_and_keeps_a_users_file(world, tmp_path, capsys):
    """Like upcycle and expand: the same command again into its own folder replaces it; once the user added a
    file there, one line names it and nothing is replaced (--overwrite allows)."""
    out = tmp_path / "al"
    argv = ["add-language", "--model", str(world["dmoe"]), "--lang", "es", "--corpus", str(world["corpus"]),
            "--out", str(out), "--steps", "1", "--block-len", "16", "--micro-batch-size", "2", "--max-tokens",
            "200", "--window", "16", "--stride", "8", "--max-chars", "100"]
    assert main(argv) == 0
    assert main(argv) == 0, capsys.readouterr().err
    assert foreign_files(out) == [] and not (tmp_path / ".al.work").exists()
    (out / "NOTES.txt").write_text("mine")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NOTES.txt" in err[0], err
    assert (out / "NOTES.txt").read_text() == "mine"
