"""End to end: `langmoe pretrain` on a tiny folder corpus, then `langmoe eval` and `langmoe train` on its output."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from langmoe.cli import main

TEXT = {
    "en": "the cat sat on the mat and the dog ran to the park with a red ball. ",
    "de": "die katze sitzt auf der matte und der hund rennt mit dem roten ball in den park. ",
    "ru": "кошка сидит на коврике, а собака бежит в парк с красным мячом. ",
}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    for lang, sentence in TEXT.items():
        rows = [{"id": f"{lang}{i}", "split": "test" if i % 10 == 0 else "train",
                 "text": (sentence * (3 + i % 4)).strip() + f" {i}"} for i in range(60)]
        (d / f"{lang}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return d


def _pretrain_args(corpus_dir, out, *extra):
    return ["pretrain", "--preset", "tiny", "--corpus", str(corpus_dir), "--out", str(out), "--steps", "4",
            "--seed", "1", "--vocab-size", "320", "--block-len", "32", "--batch-size", "2", "--save-every", "2",
            "--keep-checkpoints", "2",
            "--eval-window", "32", "--eval-stride", "16", "--eval-max-chars", "600", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def pretrained(corpus_dir, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "base"
    assert main(_pretrain_args(corpus_dir, out)) == 0
    return out


def test_pretrain_writes_a_plain_hf_folder(pretrained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("config.json", "model.safetensors", "tokenizer.json", "pretrain.json"):
        assert (pretrained / name).is_file(), name
    config = json.loads((pretrained / "config.json").read_text())
    assert "auto_map" not in config and config["architectures"] == ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_pretrained(str(pretrained))
    tok = AutoTokenizer.from_pretrained(str(pretrained))
    assert model.config.vocab_size == len(tok)
    rec = json.loads((pretrained / "pretrain.json").read_text())
    assert rec["seed"] == 1 and rec["command"].startswith("langmoe pretrain")
    assert rec["train"]["steps"] == 4 and rec["config"]["block_len"] == 32
    assert set(rec["eval"]["langs"]) == set(TEXT)
    for row in rec["eval"]["langs"].values():
        assert row["bits_per_byte"] > 0 and row["unigram_bits_per_byte"] > 0
    assert (pretrained / "train" / "checkpoints").is_dir()


def test_eval_reproduces_the_pretrain_table(pretrained, corpus_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = main(["eval", "--model", str(pretrained), "--corpus", str(corpus_dir), "--window", "32", "--stride", "16",
               "--max-chars", "600", "--json", str(out), "--threads", "1"])
    assert rc == 0
    assert "bits/byte" in capsys.readouterr().out
    table = json.loads(out.read_text())
    rec = json.loads((pretrained / "pretrain.json").read_text())
    for lang, row in rec["eval"]["langs"].items():
        assert table["langs"][lang]["bits_per_byte"] == pytest.approx(row["bits_per_byte"], rel=1e-5)
        assert table["langs"][lang]["unigram_bits_per_byte"] == pytest.approx(row["unigram_bits_per_byte"])
    one = tmp_path / "one.json"
    assert main(["eval", "--model", str(pretrained), "--corpus", str(corpus_dir), "--langs", "ru", "--window", "32",
                 "--stride", "16", "--max-chars", "600", "--json", str(one), "--no-unigram"]) == 0
    assert list(json.loads(one.read_text())["langs"]) == ["ru"]


def test_rerun_resumes_and_other_settings_are_refused(pretrained, corpus_dir, capsys):
    before = (pretrained / "model.safetensors").read_bytes()
    assert main(_pretrain_args(corpus_dir, pretrained)) == 0  # already at step 4: reloads the checkpoint
    assert (pretrained / "model.safetensors").read_bytes() == before
    capsys.readouterr()
    assert main(_pretrain_args(corpus_dir, pretrained, "--lr", "0.01")) == 2
    assert "different settings" in capsys.readouterr().err


def test_interrupted_run_resumes_exactly(pretrained, corpus_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    run = tmp_path / "resumed"
    shutil.copytree(pretrained / "train", run / "train")
    shutil.copy(pretrained / ".langmoe-output.json", run)  # the folder pretrain wrote (it may resume it)
    shutil.rmtree(run / "train" / "checkpoints" / "step-4")  # as if killed between step 2 and step 4
    assert (run / "train" / "checkpoints" / "step-2").is_dir()
    capsys.readouterr()
    assert main(_pretrain_args(corpus_dir, run)) == 0
    assert "training: resuming from step 2 of 4" in capsys.readouterr().out.splitlines()
    rec = json.loads((run / "pretrain.json").read_text())
    assert rec["train"]["resumed_from_step"] == 2 and rec["train"]["steps"] == 4
    a, b = load_file(str(pretrained / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_changing_steps_on_resume_is_warned_and_recorded(pretrained, corpus_dir, tmp_path, capsys):
    """--steps may change on a resume (extend or shorten a run): warned, and pretrain.json keeps which schedule
    each stretch followed; any other changed setting is still refused."""
    run = tmp_path / "longer"
    shutil.copytree(pretrained / "train", run / "train")
    shutil.copy(pretrained / ".langmoe-output.json", run)
    shutil.rmtree(run / "train" / "checkpoints" / "step-4")  # stopped at step 2 of 4, resumed with --steps 6
    capsys.readouterr()
    args = _pretrain_args(corpus_dir, run)
    args[args.index("--steps") + 1] = "6"
    assert main(args) == 0
    assert "--steps changed from 4 to 6 at step 2" in capsys.readouterr().err
    rec = json.loads((run / "pretrain.json").read_text())
    assert rec["train"]["steps"] == 6 and rec["train"]["resumed_from_step"] == 2
    assert rec["train"]["steps_history"] == [{"steps": 4, "from_step": 0}, {"steps": 6, "from_step": 2}]
    assert main(_pretrain_args(corpus_dir, run, "--steps", "6", "--lr", "0.01")) == 2


def test_continue_train(pretrained, corpus_dir, tmp_path):
    out = tmp_path / "cpt"
    rc = main(["train", "--model", str(pretrained), "--corpus", str(corpus_dir), "--langs", "en,de", "--out",
               str(out), "--steps", "2", "--block-len", "32", "--batch-size", "2", "--threads", "1"])
    assert rc == 0
    rec = json.loads((out / "train.json").read_text())
    assert rec["train"]["steps"] == 2 and rec["config"]["langs"] == ["en", "de"]
    from langmoe.models.base import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(out)
    base, _ = load_model_and_tokenizer(pretrained)
    assert not torch.equal(model.lm_head.weight, base.lm_head.weight)


def test_errors(pretrained, corpus_dir, tmp_path, capsys):
    assert main(_pretrain_args(corpus_dir, tmp_path / "x", "--block-len", "2048")) == 2
    assert "exceeds max positions" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--model", str(pretrained), "--corpus", str(corpus_dir), "--out", str(tmp_path / "t"),
                 "--block-len", "4096"]) == 2
    assert "max positions" in capsys.readouterr().err
    # A tokenizer with more tokens than the model's vocabulary.
    bad = tmp_path / "bad"
    shutil.copytree(pretrained, bad, ignore=shutil.ignore_patterns("train"))
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(str(bad))
    t.add_tokens(["zzzz-new-1", "zzzz-new-2"])
    t.save_pretrained(str(bad))
    assert main(["eval", "--model", str(bad), "--corpus", str(corpus_dir)]) == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1 and "the tokenizer has" in err
    assert main(["pretrain", "--out", str(tmp_path / "y"), "--preset", "huge", "--corpus", str(corpus_dir)]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_eval_builtin_base(tmp_path):
    out = tmp_path / "b.json"
    assert main(["eval", "--model", "builtin", "--langs", "en", "mk", "--max-chars", "300", "--json", str(out),
                 "--threads", "1"]) == 0
    table = json.loads(out.read_text())
    assert set(table["langs"]) == {"en", "mk"}
    assert all(r["bits_per_byte"] > 0 for r in table["langs"].values())


def test_recorded_command_reruns_as_given():
    """pretrain.json's command is the CLI line itself: no internal bookkeeping (CorpusAppend's list of given
    values) leaks into it, and mixed corpora repeat --corpus, as the user typed them."""
    import argparse

    from langmoe.commands._corpus_arg import CorpusAppend
    from langmoe.commands.eval import as_command

    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="builtin", action=CorpusAppend)
    ap.add_argument("--steps", type=int)
    one = ap.parse_args(["--corpus", "builtin", "--steps", "3"])
    assert as_command("pretrain", one) == "langmoe pretrain --corpus builtin --steps 3"
    two = ap.parse_args(["--corpus", "builtin", "--corpus", "my dir"])
    assert as_command("pretrain", two) == "langmoe pretrain --corpus builtin --corpus 'my dir'"
