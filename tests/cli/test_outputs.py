"""The output policy (langmoe.io), the run lock (langmoe.lock) and the researcher warnings (langmoe.diagnostics):
what commands may write, replace and refuse, with which permissions, and which warnings they print."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.cli import main
from langmoe.errors import LangmoeError
from langmoe.io import (
    MARKER,
    atomic_path,
    check_output,
    read_marker,
    write_folder_atomically,
    write_json,
)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def _corpus(root: Path, n_docs: int = 40) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "de.txt").write_text("\n\n".join(f"Straße Nummer {i} ist schön und die Katze schläft." for i in
                                             range(n_docs)) + "\n", encoding="utf-8")
    (root / "fr.txt").write_text("\n\n".join(f"Le café numéro {i} est déjà fermé pour la soirée." for i in
                                             range(n_docs)) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from langmoe.data.corpus import open_corpus
    from langmoe.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("out")
    corpus = _corpus(root / "corpus")
    tok = train_tokenizer(open_corpus(str(corpus)), 300)
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     num_key_value_heads=2, intermediate_size=64, vocab_size=len(tok),
                                     max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0))
    m.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root / "model"


# ---- io: the guard and the folder writer ----------------------------------------------------------------------


def test_check_output_matrix(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "x").write_text("1")
    check_output(tmp_path / "new", "upcycle", inputs=[inp])  # new: fine
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", "upcycle")  # empty folder: fine
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "w").write_text("old")
    (mine / MARKER).write_text(json.dumps({"command": "upcycle"}))
    check_output(mine, "upcycle")  # written by the same command: fine
    with pytest.raises(LangmoeError, match="langmoe upcycle"):
        check_output(mine, "export")
    check_output(mine, "export", overwrite=True)
    with pytest.raises(LangmoeError, match="is the input"):
        check_output(inp, "x", inputs=[inp], overwrite=True)
    with pytest.raises(LangmoeError, match="inside the input"):
        check_output(inp / "sub", "x", inputs=[inp])
    with pytest.raises(LangmoeError, match="contains the input"):
        check_output(tmp_path, "x", inputs=[inp], overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(inp)
    with pytest.raises(LangmoeError, match="is the input"):  # through a symlink
        check_output(link, "x", inputs=[inp])
    with pytest.raises(LangmoeError, match="not written by langmoe"):
        check_output(inp, "x")
    with pytest.raises(LangmoeError, match="is a file"):
        check_output(inp / "x", "x", overwrite=True)
    with pytest.raises(LangmoeError, match="x is a file, not a folder"):
        check_output(inp / "x" / "deeper", "x")
    # files: new, or replaced only inside a langmoe folder or with --overwrite
    check_output(tmp_path / "f.json", "eval", kind="file")
    with pytest.raises(LangmoeError, match="already exists"):
        check_output(inp / "x", "eval", kind="file")
    check_output(inp / "x", "eval", kind="file", overwrite=True)
    (mine / "report.html").write_text("old")
    check_output(mine / "report.html", "report", kind="file")
    with pytest.raises(LangmoeError, match="is a folder"):
        check_output(inp, "eval", kind="file")


def test_write_folder_atomically_replaces_only_langmoe_folders(tmp_path):
    def writer(text):
        return lambda d: (d / "w.txt").write_text(text)

    out = write_folder_atomically(tmp_path / "m", writer("1"), command="upcycle")
    assert (out / "w.txt").read_text() == "1" and read_marker(out)["command"] == "upcycle"
    write_folder_atomically(out, writer("2"), command="upcycle")
    assert (out / "w.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"], "no temp or old folder left"

    def boom(d):
        (d / "w.txt").write_text("3")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_folder_atomically(out, boom)
    assert (out / "w.txt").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["m"]

    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    with pytest.raises(LangmoeError, match="not written by langmoe"):
        write_folder_atomically(user, writer("x"))
    assert (user / "notes.txt").read_text() == "precious"
    f = tmp_path / "file.txt"
    f.write_text("keep")
    with pytest.raises(LangmoeError, match="is a file"):
        write_folder_atomically(f, writer("x"), overwrite=True)
    assert f.read_text() == "keep" and not list(tmp_path.glob(".file.txt*"))
    write_folder_atomically(user, writer("x"), overwrite=True)  # an explicit --overwrite replaces it
    assert sorted(p.name for p in user.iterdir()) == [MARKER, "w.txt"]


def test_the_marker_lists_what_langmoe_wrote_and_names_what_it_did_not(tmp_path):
    from langmoe.io import foreign_files, list_files, set_command, write_marker

    out = write_folder_atomically(tmp_path / "m", lambda d: (d / "sub").mkdir() or (d / "sub" / "w").write_text("1"),
                                  command="upcycle")
    assert read_marker(out)["files"] == ["sub/w"] and read_marker(out)["layout"] == "whole"
    write_json(out / "later.json", {"x": 1})  # a langmoe write after the swap: put on the list
    write_json(out / "deeper" / "x.json", {"x": 1})
    write_folder_atomically(out / "nested", lambda d: (d / "n.txt").write_text("n"), command="upcycle")
    assert read_marker(out)["files"] == ["deeper/x.json", "later.json", "nested/n.txt", "sub/w"]
    assert foreign_files(out) == [] and not [f for f in read_marker(out)["files"] if ".tmp" in f]
    (out / "NOTES.txt").write_text("mine")
    (out / "sub" / "mine.txt").write_text("mine")
    (out / "photos").mkdir()
    (out / "photos" / "a.jpg").write_bytes(b"1")
    (out / "empty").mkdir()
    assert foreign_files(out) == ["NOTES.txt", "empty/", "photos/", "sub/mine.txt"]
    with pytest.raises(LangmoeError, match=r"--out .*m holds files `langmoe upcycle` did not write: NOTES.txt, empty/, "
                                           r"photos/, sub/mine.txt: move them out, or pass --overwrite"):
        check_output(out, "upcycle")
    check_output(out, "upcycle", overwrite=True)
    set_command(None)  # the end of that command: its --overwrite permission is gone
    with pytest.raises(LangmoeError, match="did not write: NOTES.txt"):  # the library writer refuses too
        write_folder_atomically(out, lambda d: None, command="upcycle")
    # one file: replaced when it is langmoe's, refused when it is the user's
    check_output(out / "later.json", "eval", kind="file")
    with pytest.raises(LangmoeError, match="NOTES.txt already exists"):
        check_output(out / "NOTES.txt", "eval", kind="file")
    # a folder filled step by step is never replaced whole: a user's file beside the run does not block a rerun
    run = tmp_path / "run"
    run.mkdir()
    write_marker(run, "train")
    assert read_marker(run)["layout"] == "growing" and "files" not in read_marker(run)
    (run / "NOTES.txt").write_text("mine")
    check_output(run, "train")
    assert list_files(run) == ["NOTES.txt"]


def test_a_file_another_command_wrote_into_a_whole_folder_is_kept_on_rerun(tmp_path):
    """`eval --json MODEL/eval.json` into an upcycled folder: eval may replace its own file, upcycle's rerun names it
    instead of deleting it, and --overwrite replaces the folder."""
    from langmoe.io import foreign_files, set_command

    out = write_folder_atomically(tmp_path / "m", lambda d: (d / "w").write_text("1"), command="upcycle")
    try:
        set_command("eval")
        check_output(out / "eval.json", "eval", kind="file")
        write_json(out / "eval.json", {"ppl": 1.0})
        check_output(out / "eval.json", "eval", kind="file")  # its own file: may be replaced
        write_json(out / "eval.json", {"ppl": 2.0})
        set_command("upcycle")
        write_json(out / "upcycle.json", {"x": 1})  # the folder's own command: on its list
    finally:
        set_command(None)
    marker = read_marker(out)
    assert marker["files"] == ["upcycle.json", "w"] and marker["others"] == {"eval.json": "eval"}
    assert foreign_files(out) == ["eval.json"]
    with pytest.raises(LangmoeError, match=r"`langmoe upcycle` did not write: eval.json \(written by `langmoe "
                                           r"eval`\): move them out, or pass --overwrite"):
        check_output(out, "upcycle")


def test_markers_written_before_file_lists(tmp_path):
    """A marker without `layout`/`files` (langmoe before this change): a folder its command replaces whole counts
    files changed more than a minute after the marker as someone else's; a training folder is not checked."""
    from langmoe.io import foreign_files

    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"1")
    (old / "add_language.json").write_text("{}")  # written just after the folder (within the minute)
    (old / MARKER).write_text(json.dumps({"command": "upcycle", "time": "t", "langmoe": "0.1.0"}))
    t0 = (old / MARKER).stat().st_mtime
    os.utime(old / "model.safetensors", (t0 - 5, t0 - 5))
    os.utime(old / "add_language.json", (t0 + 30, t0 + 30))
    check_output(old, "upcycle")
    (old / "NOTES.txt").write_text("mine")
    os.utime(old / "NOTES.txt", (t0 + 3600, t0 + 3600))
    assert foreign_files(old) == ["NOTES.txt"]
    with pytest.raises(LangmoeError, match=r"holds files `langmoe upcycle` did not write \(changed after langmoe wrote the "
                                           r"folder\): NOTES.txt"):
        check_output(old, "upcycle")
    train = tmp_path / "train"
    train.mkdir()
    (train / MARKER).write_text(json.dumps({"command": "train", "time": "t"}))
    (train / "late.txt").write_text("x")
    os.utime(train / "late.txt", (t0 + 3600, t0 + 3600))
    check_output(train, "train")  # filled step by step: later files are the run's own


def test_outputs_follow_the_umask(tmp_path, umask_027):
    write_json(tmp_path / "a.json", {"x": 1})
    assert _mode(tmp_path / "a.json") == 0o640
    with atomic_path(tmp_path / "b.bin") as t:
        t.write_bytes(b"1")
    assert _mode(tmp_path / "b.bin") == 0o640
    out = write_folder_atomically(tmp_path / "m", lambda d: (d / "sub").mkdir() or (d / "sub" / "w").write_text("1"))
    assert _mode(out) == 0o750 and _mode(out / "sub") == 0o750 and _mode(out / "sub" / "w") == 0o640
    assert _mode(out / MARKER) == 0o640


# ---- commands: rerun, replace, refuse ---------------------------------------------------------------------------


def test_upcycle_rerun_replaces_its_own_folder_and_modes_follow_umask(model_dir, tmp_path, umask_027, capsys):
    out = tmp_path / "moe"
    args = ["upcycle", "--model", str(model_dir), "--experts", "2", "--out", str(out)]
    assert main(args) == 0
    assert read_marker(out)["command"] == "upcycle"
    first = (out / "model.safetensors").read_bytes()
    assert main([*args, "--seed", "1"]) == 0  # the same command may replace its own output
    assert (out / "model.safetensors").read_bytes() != first
    assert {_mode(p) for p in out.iterdir()} == {0o640} and _mode(out) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moe"]
    # export may not replace the upcycled folder; a new folder is fine, and a rerun replaces it
    assert main(["export", "--model", str(out), "--out", str(tmp_path / "stock")]) == 0
    assert main(["export", "--model", str(out), "--out", str(tmp_path / "stock")]) == 0
    assert read_marker(tmp_path / "stock")["command"] == "export"
    assert main(["export", "--model", str(tmp_path / "stock"), "--out", str(out)]) == 2


def test_tokenizer_train_writes_a_whole_folder(model_dir, tmp_path, capsys):
    corpus = _corpus(tmp_path / "c")
    out = tmp_path / "tok"
    args = ["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "300", "--out", str(out)]
    assert main(args) == 0 and main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, "langmoe_tokenizer.json", "tokenizer.json", "tokenizer_config.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "tok"]


def test_train_save_every_zero_means_only_at_the_end(model_dir, tmp_path, capsys):
    out = tmp_path / "t"
    corpus = _corpus(tmp_path / "c")
    args = ["train", "--model", str(model_dir), "--corpus", str(corpus), "--out", str(out), "--steps", "3",
            "--block-len", "16", "--batch-size", "2", "--save-every", "0", "--log-every", "1"]
    assert main(args) == 0
    assert sorted(p.name for p in (out / "train" / "checkpoints").iterdir()) == ["step-3"]
    assert read_marker(out)["command"] == "train"
    assert main(args) == 0  # a rerun resumes its own folder (a no-op: the run is finished)


def test_overwrite_lets_train_write_into_a_foreign_folder_without_deleting(model_dir, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    corpus = _corpus(tmp_path / "c")
    args = ["train", "--model", str(model_dir), "--corpus", str(corpus), "--out", str(out), "--steps", "1",
            "--block-len", "16", "--batch-size", "2", "--save-every", "0"]
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "keep me" and (out / "config.json").is_file()


def test_recipe_run_name_is_a_slug(tmp_path):
    from langmoe.commands._checks import run_name_folder

    assert run_name_folder("dmoe-7b_v2.1") == Path("runs") / "dmoe-7b_v2.1"
    for bad in ("../x", "/abs", "a/b", "..", ".hidden", "", "a" * 200, "x\\y", "a..b"):
        with pytest.raises(LangmoeError, match="simple folder name"):
            run_name_folder(bad)


# ---- the lock -----------------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_refuses_live_holders_and_takes_over_stale_ones(tmp_path):
    from langmoe.lock import LOCK_FILE, acquire, folder_lock, is_stale, read_lock, release

    lock = tmp_path / LOCK_FILE
    with folder_lock(tmp_path, "run"):
        holder = read_lock(tmp_path)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and not is_stale(holder)
        with pytest.raises(LangmoeError, match=f"pid {os.getpid()}"):
            acquire(tmp_path, "demo")
    assert not lock.exists()
    dead = {"pid": _dead_pid(), "host": socket.gethostname(), "start": None, "command": "run", "time": "t"}
    lock.write_text(json.dumps(dead))
    assert is_stale(dead)
    acquire(tmp_path, "run")  # a dead holder on this host: taken over
    assert read_lock(tmp_path)["pid"] == os.getpid()
    release(tmp_path)
    reused = {"pid": os.getpid(), "host": socket.gethostname(), "start": "1", "command": "run", "time": "t"}
    assert is_stale(reused) == (Path("/proc/self/stat").exists())  # same pid, another start time: reused
    elsewhere = {"pid": dead["pid"], "host": "other-host", "start": None, "command": "run", "time": "t"}
    lock.write_text(json.dumps(elsewhere))
    with pytest.raises(LangmoeError, match="other-host"):  # cannot check a pid on another machine
        acquire(tmp_path, "run")
    assert json.loads(lock.read_text()) == elsewhere
    release(tmp_path)  # not ours: left alone
    assert lock.exists()


# ---- warnings -----------------------------------------------------------------------------------------------------


def test_eval_warnings_hand_cases():
    from langmoe.diagnostics import eval_warnings

    row = {"docs": 50, "bytes": 9000}
    table = {"settings": {"split": "test"}, "langs": {
        "de": {**row, "ppl": 10.0, "bits_per_byte": 1.2},
        "fr": {**row, "ppl": 12.0, "bits_per_byte": 1.3},
        "km": {**row, "ppl": 50.0, "bits_per_byte": 8.4},  # worse than a uniform byte guess
    }}
    w = eval_warnings(table)
    assert len(w) == 2
    assert "'km'" in w[0] and "8.40 bits per byte" in w[0] and "uniform" in w[0]
    assert "'km' contributes 69%" in w[1]  # 50 / (10 + 12 + 50)
    small = {"settings": {"split": "test"}, "langs": {"de": {"docs": 2, "bytes": 300, "ppl": 9.0,
                                                              "bits_per_byte": 1.0}}}
    (only,) = eval_warnings(small)
    assert "only 2 documents (300 bytes)" in only and "test_frac" in only
    two = {"langs": {"de": {**row, "ppl": 1.0, "bits_per_byte": 1.0}, "fr": {**row, "ppl": 99.0,
                                                                            "bits_per_byte": 7.9}}}
    assert eval_warnings(two) == []  # two languages: one always holds half the mean; no warning


def test_corpus_in_the_wrong_script_warns_in_one_line(tmp_path, capsys):
    c = tmp_path / "c"
    c.mkdir()
    (c / "ru.txt").write_text("This is English text, not Russian.\n\nAnother line.\n", encoding="utf-8")
    (c / "de.txt").write_text("Die Katze schläft.\n\nDer Hund bellt.\n", encoding="utf-8")
    assert main(["corpus", "stats", "--corpus", str(c), "--json"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("langmoe corpus: warning: ") and "ru.txt" in err[0]
    assert "Cyrillic" in err[0]


def test_eval_json_stores_the_warnings(model_dir, tmp_path, capsys):
    corpus = _corpus(tmp_path / "c", n_docs=40)
    (corpus / "corpus.yaml").write_text("test_frac: 0.1\n", encoding="utf-8")  # the held-out share setting
    out = tmp_path / "e.json"
    assert main(["eval", "--model", str(model_dir), "--corpus", str(corpus), "--window", "16", "--stride", "8",
                 "--no-unigram", "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert [x for x in lines if x.startswith("eval ")] == [  # progress when piped: a line per language
        f"eval {i}/2: {x}: ppl {table['langs'][x]['ppl']:.2f}" for i, x in enumerate(table["langs"], 1)]
    err = [x for x in lines if not x.startswith("eval ")]
    assert table["warnings"] and len(err) == len(table["warnings"])
    assert all(x.startswith("langmoe eval: warning: ") for x in err)
    assert any("too little to measure" in w for w in table["warnings"])  # ~4 test documents per language
    assert 1 <= table["langs"]["de"]["docs"] <= 10


def test_corpus_yaml_sets_the_held_out_share(tmp_path):
    from langmoe.data.corpus import open_corpus

    c = _corpus(tmp_path / "c", n_docs=400)
    base = open_corpus(str(c)).split_stats("de")["test"].docs
    (c / "corpus.yaml").write_text("test_frac: 0.25\nvalid_frac: 0.05\n", encoding="utf-8")
    opened = open_corpus(str(c))
    assert (opened.valid_frac, opened.test_frac) == (0.05, 0.25)
    test_docs = opened.split_stats("de")["test"].docs
    assert base < 20 and 70 <= test_docs <= 130  # 25% of 400, binomial spread
    assert open_corpus(str(c), test_frac=0.5).test_frac == 0.5  # an explicit argument wins


# ---- disk errors through the CLI -----------------------------------------------------------------------------------


def test_disk_full_while_writing_json_is_one_line(model_dir, tmp_path, monkeypatch, capsys):
    import langmoe.io as io

    real = io.os.replace

    def full(src, dst):
        if str(dst).endswith("groups.json"):
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", full)
    from langmoe.methods.dmoe.deviation import DeviationConfig, DeviationResult, ProbeInfo

    langs = ["de", "fr", "en"]
    DeviationResult(langs=langs, num_layers=2, dev_ffn={x: [0.1, 0.2] for x in langs}, vector_layers=[0, 1],
                    vector_dim=4, sketched=False, similarity=[[1.0 if a == b else 0.5 for b in langs] for a in langs],
                    config=DeviationConfig.parse({}),
                    probe={x: ProbeInfo(steps=1, tokens_seen=1, first_loss=1.0, last_loss=1.0, elapsed_s=0.0)
                           for x in langs}).save(tmp_path / "d.json", vectors=False)
    assert main(["group", "--deviation", str(tmp_path / "d.json"), "--groups", "2", "--out",
                 str(tmp_path / "groups.json")]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "No space left on device" in err[0] and "groups.json" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json"], "the temp file is removed"


def test_summary_warnings_name_the_system():
    from langmoe.diagnostics import summary_warnings

    summary = {"systems": {
        "base": {"ppl": {"de": 5.0, "fr": 6.0, "km": 40.0}, "bpb": {"de": 1.0, "fr": 1.1, "km": 9.0}},
        "dmoe": {"ppl": {"de": 5.0, "fr": 6.0, "km": 7.0}, "bpb": {"de": 1.0, "fr": 1.1, "km": 2.0}},
    }}
    w = summary_warnings(summary)
    assert len(w) == 2 and all(x.startswith("base: language 'km'") for x in w)


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_lock_of_a_live_process_whose_memory_and_cpu_time_grow_stays_held(tmp_path):
    """Staleness is judged by the holder's start time alone: a holder that keeps working (memory, page faults,
    CPU time all change in /proc/PID/stat) is still the same process, minutes after it took the lock."""
    from langmoe.lock import acquire, is_stale, read_lock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from langmoe.io import claim_output; from langmoe.lock import acquire\n"
        "claim_output(sys.argv[1], 'run'); acquire(sys.argv[1], 'run'); print('locked', flush=True)\n"
        "sys.stdin.readline(); keep = [b'x' * (64 << 20) for _ in range(3)]\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print('grown', flush=True); sys.stdin.readline()"), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        lock = read_lock(tmp_path)
        before = _stat_fields(holder.pid)
        holder.stdin.write("grow\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "grown"
        after = _stat_fields(holder.pid)
        changed = {i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b}
        # what changed: minflt (7), utime (11), vsize (20), rss (21); the start time (19) did not
        assert {7, 11, 20, 21} <= changed and 19 not in changed, changed
        assert int(after[20]) - int(before[20]) >= 150 << 20
        assert lock["pid"] == holder.pid and not is_stale(lock)
        with pytest.raises(LangmoeError, match=f"pid {holder.pid}"):
            acquire(tmp_path, "run")
        assert read_lock(tmp_path) == lock  # not taken over
    finally:
        holder.kill()
        holder.wait()
    assert is_stale(lock)  # now it is gone: stale, and the next acquire takes the lock over
    acquire(tmp_path, "run")
    assert read_lock(tmp_path)["pid"] == os.getpid()


def test_lock_of_another_users_process_is_never_stale(monkeypatch):
    """Signalling another user's process fails with EPERM: it is alive (not stale); only ESRCH means gone."""
    import langmoe.lock as lock_mod

    me = {"pid": os.getpid(), "host": socket.gethostname(), "start": lock_mod._start_time(os.getpid()),
          "command": "run", "time": "t"}

    def kill_with(exc):
        def kill(pid, sig):
            raise exc
        return kill

    monkeypatch.setattr(lock_mod.os, "kill", kill_with(PermissionError(1, "Operation not permitted")))
    assert not lock_mod.is_stale(me)
    monkeypatch.setattr(lock_mod.os, "kill", kill_with(ProcessLookupError(3, "No such process")))
    assert lock_mod.is_stale(me)


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/stat").exists(), reason="POSIX + /proc")
def test_lock_seen_from_another_user_really(tmp_path):
    """For real: a lock held by a process of user A, checked by a process of user B, is not stale and not taken.
    As root the checker is a child dropped to `nobody`; otherwise the holder is a process of another user."""
    import tempfile

    from langmoe.lock import _start_time, acquire, is_stale, release

    if os.geteuid() != 0:
        others = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and p.stat().st_uid != os.getuid()]
        if not others:
            pytest.skip("no process of another user to hold the lock")
        pid = others[0]
        holder = {"pid": pid, "host": socket.gethostname(), "start": _start_time(pid), "command": "run", "time": "t"}
        assert not is_stale(holder)
        return
    folder = Path(tempfile.mkdtemp(prefix="langmoe-lock-"))  # outside pytest's 0700 tmp: `nobody` must reach it
    try:
        folder.chmod(0o777)
        acquire(folder, "run")
        (folder / ".langmoe.lock").chmod(0o644)
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the forked child
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                try:
                    os.kill(os.getppid(), 0)
                    code = 2  # the drop did not work: the test would prove nothing
                except PermissionError:
                    from langmoe.lock import read_lock

                    holder = read_lock(folder)
                    if holder and holder["pid"] == os.getppid() and not is_stale(holder):
                        try:
                            acquire(folder, "run")
                            code = 3
                        except LangmoeError as e:
                            code = 0 if f"pid {os.getppid()}" in str(e) else 4
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert json.loads((folder / ".langmoe.lock").read_text())["pid"] == os.getpid()
        release(folder)
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
