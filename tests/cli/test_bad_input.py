"""Bad input across the whole CLI: every case exits non-zero with exactly one stderr line
`langmoe <cmd>: error: ...` that names the problem, and never a traceback.

Inputs are built in tmp folders: a tiny Llama folder + tokenizer, corpora with bad files, corrupt weights and
checkpoints, broken recipes and deviation results. Nothing here trains for more than a step or two.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

from langmoe.cli import main


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _corpus(root: Path, n_docs: int = 12) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "de.txt").write_text(
        "\n\n".join(f"Straße Nummer {i} ist schön und die Katze schläft." for i in range(n_docs)) + "\n",
        encoding="utf-8")
    (root / "fr.txt").write_text(
        "\n\n".join(f"Le café numéro {i} est déjà fermé pour la soirée." for i in range(n_docs)) + "\n",
        encoding="utf-8")
    return root


def _llama(vocab: int = 300, max_pos: int = 64) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
        vocab_size=vocab, max_position_embeddings=max_pos, bos_token_id=0, eos_token_id=0, pad_token_id=0))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """Shared inputs: a corpus, a good tiny model folder, and several broken variants."""
    from langmoe.data.corpus import open_corpus
    from langmoe.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("bad")
    corpus = _corpus(root / "corpus")
    tok = train_tokenizer(open_corpus(str(corpus)), 300)
    n = len(tok)

    good = root / "model"
    _llama(vocab=n).save_pretrained(good)
    tok.save_pretrained(good)

    small_vocab = root / "small_vocab"  # tokenizer has more tokens than the model's embedding rows
    _llama(vocab=n - 20).save_pretrained(small_vocab)
    tok.save_pretrained(small_vocab)

    corrupt = root / "corrupt"  # weights truncated mid-file
    _llama(vocab=n).save_pretrained(corrupt)
    tok.save_pretrained(corrupt)
    w = corrupt / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])

    bad_json = root / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json", encoding="utf-8")

    no_weights = root / "no_weights"
    _llama(vocab=n).config.save_pretrained(no_weights)
    tok.save_pretrained(no_weights)

    no_config = root / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"")

    moe = root / "mixtral"  # already a Mixture-of-Experts: nothing to upcycle
    torch.manual_seed(0)
    MixtralForCausalLM(MixtralConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                     intermediate_size=64, num_local_experts=2, vocab_size=n,
                                     max_position_embeddings=64, bos_token_id=0, eos_token_id=0)).save_pretrained(moe)
    tok.save_pretrained(moe)

    return {"root": root, "corpus": corpus, "model": good, "small_vocab": small_vocab, "corrupt": corrupt,
            "bad_json": bad_json, "no_weights": no_weights, "no_config": no_config, "moe": moe}


def fails(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI; assert a non-zero exit and one clean error line naming every needle; return that line."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    verb = argv[0]
    assert code != 0, f"{argv} exited 0; stderr: {err!r}"
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith(f"langmoe {verb}: error: "), line
    for n in needles:
        assert n.lower() in line.lower(), f"{n!r} not in {line!r}"
    if os.environ.get("LANGMOE_SHOW_ERRORS"):  # print every message (to refresh docs/errors.md)
        sys.__stdout__.write(line + "\n")
    return line


# ---- corpus ---------------------------------------------------------------------------------------------------


def test_corpus_bad_inputs(env, tmp_path, capsys):
    fails(capsys, ["corpus", "stats", "--corpus", tmp_path / "missing"], "does not exist")
    fails(capsys, ["corpus", "stats", "--corpus", env["corpus"], "--langs", "xx"], "xx")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    fails(capsys, ["corpus", "stats", "--corpus", empty], str(empty))

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "zz.txt").write_text("some text here\n", encoding="utf-8")
    fails(capsys, ["corpus", "stats", "--corpus", unknown], "zz")

    binary = _corpus(tmp_path / "binary")
    (binary / "de.txt").write_bytes(b"Stra\xdfe ist sch\xf6n\n\n\xff\xfe\x00 more\n")  # latin-1, not UTF-8
    fails(capsys, ["corpus", "stats", "--corpus", binary], "de.txt", "utf-8")

    empty_file = _corpus(tmp_path / "empty_file")
    (empty_file / "fr.txt").write_text("", encoding="utf-8")
    fails(capsys, ["corpus", "stats", "--corpus", empty_file], "fr")

    blank = tmp_path / "blank"  # only whitespace: no document survives
    blank.mkdir()
    (blank / "de.txt").write_text("\n\n   \n\n", encoding="utf-8")
    fails(capsys, ["corpus", "stats", "--corpus", blank], "de.txt", "no non-empty documents")
    fails(capsys, ["tokenizer", "train", "--corpus", blank, "--out", tmp_path / "t"], "no non-empty documents")

    bad_jsonl = _corpus(tmp_path / "bad_jsonl")
    (bad_jsonl / "fr.txt").unlink()
    (bad_jsonl / "fr.jsonl").write_text('{"text": "ok"}\n{broken\n', encoding="utf-8")
    fails(capsys, ["corpus", "stats", "--corpus", bad_jsonl], "fr.jsonl")


# ---- tokenizer ------------------------------------------------------------------------------------------------


def test_tokenizer_bad_inputs(env, tmp_path, capsys):
    out = tmp_path / "tok"
    fails(capsys, ["tokenizer", "train", "--corpus", env["corpus"], "--vocab-size", "10", "--out", out], "257")
    fails(capsys, ["tokenizer", "train", "--corpus", env["corpus"], "--langs", "qq", "--vocab-size", "300",
                   "--out", out], "qq")
    fails(capsys, ["tokenizer", "train", "--corpus", tmp_path / "nope", "--out", out], "does not exist")


# ---- models: eval loads them ----------------------------------------------------------------------------------


def test_eval_bad_model_folders(env, tmp_path, capsys):
    c = ["--corpus", env["corpus"], "--no-unigram", "--window", "16", "--stride", "8"]
    fails(capsys, ["eval", "--model", tmp_path / "missing", *c], "does not exist")
    fails(capsys, ["eval", "--model", env["no_config"], *c], "config.json")
    fails(capsys, ["eval", "--model", env["bad_json"], *c], "config.json")
    fails(capsys, ["eval", "--model", env["corrupt"], *c], "cannot load")
    fails(capsys, ["eval", "--model", env["no_weights"], *c], "cannot load")
    fails(capsys, ["eval", "--model", env["small_vocab"], *c], "tokenizer")
    f = tmp_path / "file.txt"
    f.write_text("x", encoding="utf-8")
    fails(capsys, ["eval", "--model", f, *c], "not a model folder")


def test_eval_bad_settings(env, tmp_path, capsys):
    m = ["--model", env["model"], "--corpus", env["corpus"], "--no-unigram"]
    fails(capsys, ["eval", *m, "--langs", "xx"], "xx")
    fails(capsys, ["eval", *m, "--split", "dev", "--window", "16", "--stride", "8"], "dev")
    fails(capsys, ["eval", *m, "--window", "16", "--stride", "32"], "stride")
    fails(capsys, ["eval", *m, "--window", "128", "--stride", "64"], "128", "64")  # window > max positions
    fails(capsys, ["eval", *m, "--threads", "0"], "threads")
    only_train = _corpus(tmp_path / "only_train")
    (only_train / "fr.txt").unlink()
    (only_train / "fr.jsonl").write_text("".join(json.dumps({"text": f"Le café {i}.", "split": "train"}) + "\n"
                                                 for i in range(5)), encoding="utf-8")
    fails(capsys, ["eval", "--model", env["model"], "--corpus", only_train, "--no-unigram", "--window", "16",
                   "--stride", "8", "--langs", "fr"], "no language has text")  # nothing left in the test split
    fails(capsys, ["eval", *m, "--dtype", "float32", "--batch-size", "0", "--window", "16", "--stride", "8"],
          "batch")


# ---- pretrain / train -----------------------------------------------------------------------------------------


def test_pretrain_bad_inputs(env, tmp_path, capsys):
    def base(out: str) -> list:
        return ["pretrain", "--corpus", env["corpus"], "--out", tmp_path / out, "--steps", "1"]

    fails(capsys, [*base("a"), "--preset", "huge"], "huge")
    fails(capsys, [*base("b"), "--block-len", "128", "--max-positions", "64", "--vocab-size", "300"], "128", "64")
    fails(capsys, [*base("c"), "--tokenizer", tmp_path / "no_tok"], "tokenizer")
    fails(capsys, [*base("d"), "--langs", "de", "xx"], "xx")
    fails(capsys, [*base("e"), "--steps", "0"], "steps")


def test_train_bad_inputs(env, tmp_path, capsys):
    base = ["train", "--model", env["model"], "--corpus", env["corpus"], "--steps", "1", "--batch-size", "2"]
    fails(capsys, [*base, "--out", tmp_path / "t", "--block-len", "128"], "block", "128", "64")
    fails(capsys, [*base, "--out", tmp_path / "t", "--block-len", "16", "--lr", "-1"], "lr")
    fails(capsys, [*base, "--out", tmp_path / "t", "--block-len", "16", "--langs", "xx"], "xx")
    fails(capsys, ["train", "--model", env["small_vocab"], "--corpus", env["corpus"], "--out", tmp_path / "t2",
                   "--block-len", "16"], "tokenizer")


def test_train_corrupt_checkpoint(env, tmp_path, capsys):
    out = tmp_path / "t"
    ok = ["train", "--model", env["model"], "--corpus", env["corpus"], "--out", out, "--block-len", "16",
          "--batch-size", "2", "--max-train-tokens", "200", "--save-every", "1", "--log-every", "1"]
    assert main([str(a) for a in [*ok, "--steps", "1"]]) == 0
    ckpts = sorted((out / "train" / "checkpoints").glob("step-*"))
    assert ckpts, "training wrote no checkpoint"
    for f in ckpts[-1].rglob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:100])
    for f in ckpts[-1].rglob("*.bin"):
        f.write_bytes(b"garbage")
    line = fails(capsys, [*ok, "--steps", "1"], "is corrupt", "delete it")  # same options: resumes from it
    assert ckpts[-1].name in line


# ---- deviation / group / select-layers ------------------------------------------------------------------------


def _deviation_json(path: Path, langs: list[str], dev_ffn: dict[str, list[float]]) -> Path:
    from langmoe.methods.dmoe.deviation import DeviationConfig, DeviationResult, ProbeInfo

    n = len(next(iter(dev_ffn.values())))
    sim = [[1.0 if a == b else 0.5 for b in langs] for a in langs]
    res = DeviationResult(
        langs=langs, num_layers=n, dev_ffn=dev_ffn, vector_layers=list(range(n)), vector_dim=4, sketched=False,
        similarity=sim, config=DeviationConfig.parse({}),
        probe={x: ProbeInfo(steps=1, tokens_seen=1, first_loss=1.0, last_loss=1.0, elapsed_s=0.0) for x in langs})
    res.save(path, vectors=False)
    return path


def test_deviation_bad_inputs(env, tmp_path, capsys):
    base = ["deviation", "--model", env["model"], "--corpus", env["corpus"], "--out", tmp_path / "d"]
    fails(capsys, [*base, "--langs", "de", "xx"], "xx")
    fails(capsys, [*base, "--langs", "de", "fr", "--steps", "0"], "steps")
    fails(capsys, [*base, "--langs", "de", "fr", "--block-len", "128"], "128", "64")
    fails(capsys, ["deviation", "--model", env["corrupt"], "--corpus", env["corpus"], "--out", tmp_path / "d",
                   "--langs", "de", "fr"], "cannot load")


def test_group_bad_inputs(tmp_path, capsys):
    dev = _deviation_json(tmp_path / "deviation.json", ["de", "fr", "en"],
                          {"de": [0.1, 0.5], "fr": [0.2, 0.4], "en": [0.1, 0.6]})
    fails(capsys, ["group", "--deviation", tmp_path / "missing.json", "--groups", "2"], "does not exist")
    fails(capsys, ["group", "--deviation", dev, "--groups", "5"], "5", "3")
    fails(capsys, ["group", "--deviation", dev, "--groups", "0"], "0")
    fails(capsys, ["group", "--deviation", dev, "--group-size", "0"], "0")
    broken = tmp_path / "broken.json"
    broken.write_text('{"langs": ["de"', encoding="utf-8")
    fails(capsys, ["group", "--deviation", broken, "--groups", "2"], "not a deviation result")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"langs": "de"}), encoding="utf-8")
    fails(capsys, ["group", "--deviation", wrong, "--groups", "2"], "not a deviation result", "langs")
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"langs": ["d\xe9"]}')
    fails(capsys, ["group", "--deviation", latin1, "--groups", "2"], "latin1.json")


def test_select_layers_bad_inputs(tmp_path, capsys):
    dev = _deviation_json(tmp_path / "deviation.json", ["de", "fr"],
                          {"de": [0.1, 0.5, 0.3], "fr": [0.2, 0.4, 0.3]})
    fails(capsys, ["select-layers", "--deviation", dev, "--epsilon", "1.5"], "selects no layer")
    fails(capsys, ["select-layers", "--deviation", dev, "--epsilon", "-0.1"], "epsilon")
    fails(capsys, ["select-layers", "--deviation", dev, "--top-n", "9"], "top_n")
    fails(capsys, ["select-layers", "--deviation", tmp_path / "nope.json"], "does not exist")
    nan = _deviation_json(tmp_path / "nan.json", ["de"], {"de": [float("nan"), 0.1]})
    fails(capsys, ["select-layers", "--deviation", nan], "nan")


# ---- upcycle / export -----------------------------------------------------------------------------------------


def test_upcycle_bad_inputs(env, tmp_path, capsys):
    out = ["--out", tmp_path / "u"]
    fails(capsys, ["upcycle", "--model", env["moe"], *out], "mixtral", "already a Mixture-of-Experts")
    fails(capsys, ["upcycle", "--model", env["model"], "--layers", "7", *out], "7")
    fails(capsys, ["upcycle", "--model", env["model"], "--layers", "a,b", *out], "layers")
    fails(capsys, ["upcycle", "--model", env["model"], "--experts", "x", *out], "experts")
    fails(capsys, ["upcycle", "--model", env["model"], "--experts", "1", *out], "expert")
    fails(capsys, ["upcycle", "--model", env["model"], "--top-k", "5", *out], "top")
    fails(capsys, ["upcycle", "--model", env["model"]], "--out")
    fails(capsys, ["upcycle", "--model", env["model"], "--classifier-layers", "0", *out], "classifier")
    fails(capsys, ["upcycle", "--model", env["corrupt"], *out], "cannot load")
    fails(capsys, ["upcycle", "--model", tmp_path / "missing", *out], "does not exist")


def test_export_bad_inputs(env, tmp_path, capsys):
    fails(capsys, ["export", "--model", env["model"], "--out", tmp_path / "e"], "dense")
    fails(capsys, ["export", "--model", tmp_path / "missing", "--out", tmp_path / "e"], "does not exist")
    up = tmp_path / "up"
    assert main(["upcycle", "--model", str(env["model"]), "--layers", "0", "--experts", "2", "--frozen-expert0",
                 "--classifier-layers", "0", "--out", str(up)]) == 0
    fails(capsys, ["export", "--model", up, "--out", tmp_path / "e"], "classifier")
    gpt_like = tmp_path / "up2"
    assert main(["upcycle", "--model", str(env["model"]), "--experts", "2", "--out", str(gpt_like)]) == 0
    w = next(gpt_like.glob("*.safetensors"))
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    fails(capsys, ["export", "--model", gpt_like, "--out", tmp_path / "e"], str(gpt_like.name))


# ---- run / demo / report --------------------------------------------------------------------------------------


def _recipe(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_run_bad_recipes(env, tmp_path, capsys):
    good = (f"model: {env['model']}\ncorpus: {env['corpus']}\nlanguages: [de, fr]\n"
            "eval: {window: 32, stride: 16}\ndata: {block_len: 16}\n")
    fails(capsys, ["run", tmp_path / "missing.yaml"], "does not exist")
    fails(capsys, ["run", _recipe(tmp_path / "syntax.yaml", "languages: [de, fr\n")], "not valid YAML")
    fails(capsys, ["run", _recipe(tmp_path / "key.yaml", good + "langauges_typo: 1\n")], "langauges_typo")
    fails(capsys, ["run", _recipe(tmp_path / "type.yaml", good + "top_k: many\n")], "top_k")
    fails(capsys, ["run", _recipe(tmp_path / "nested.yaml", good + "stage1: {steps: -3}\n")], "stage1.steps")
    fails(capsys, ["run", _recipe(tmp_path / "k.yaml", good + "num_groups: 3\n")], "num_groups")
    fails(capsys, ["run", _recipe(tmp_path / "list.yaml", "- a\n- b\n")], "mapping")
    fails(capsys, ["run", _recipe(tmp_path / "one.yaml", "languages: [de]\n")], "languages")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: caf\xe9\nlanguages: [de, fr]\n")
    fails(capsys, ["run", latin1], "latin1.yaml")
    fails(capsys, ["run", tmp_path], "recipe")
    rd = ["--run-dir", tmp_path / "r"]
    fails(capsys, ["run", _recipe(tmp_path / "xx.yaml", good.replace("[de, fr]", "[de, xx]")), *rd], "xx")
    fails(capsys, ["run", _recipe(tmp_path / "m.yaml", good.replace(str(env["model"]), str(tmp_path / "no"))),
                   *rd], "does not exist")
    fails(capsys, ["run", _recipe(tmp_path / "bl.yaml", good.replace("block_len: 16", "block_len: 128")), *rd], "128", "64")
    fails(capsys, ["run", _recipe(tmp_path / "win.yaml", good.replace("window: 32", "window: 128")), *rd],
          "128", "64")
    fails(capsys, ["run", _recipe(tmp_path / "vocab.yaml", good.replace(str(env["model"]),
                                                                        str(env["small_vocab"]))), *rd], "tokenizer")


def test_demo_and_report_bad_inputs(tmp_path, capsys):
    fails(capsys, ["demo", "--recipe", tmp_path / "missing.yaml", "--out", tmp_path / "d"], "does not exist")
    fails(capsys, ["report", tmp_path / "missing"], "does not exist")
    f = tmp_path / "summary.json"
    f.write_text("{}", encoding="utf-8")
    fails(capsys, ["report", f], "summary.json", "is a file")


def test_output_path_is_a_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    fails(capsys, ["report", run, "--out", run], "is a folder")


def test_run_threads_zero_is_not_ignored(tmp_path, capsys):
    rec = _recipe(tmp_path / "r.yaml", "languages: [de, fr]\n")
    fails(capsys, ["run", rec, "--threads", "0"], "threads")


def test_argparse_errors_end_with_the_error_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["group"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("langmoe group: error: ")


# ---- the central handler: escaped input errors become one line, bugs keep their traceback ---------------------


def _failing_command(monkeypatch, exc: BaseException) -> None:
    import langmoe.commands.report as report

    def boom(args):
        raise exc

    monkeypatch.setattr(report, "run", boom)


@pytest.mark.parametrize("make, needle", [
    (lambda: Path("/nonexistent-langmoe/y.txt").read_text(), "/nonexistent-langmoe/y.txt"),
    (lambda: Path("/tmp").read_text(), "is a directory: /tmp"),
    (lambda: b"caf\xe9".decode("utf-8"), "utf-8"),
    (lambda: __import__("yaml").safe_load("a: [1"), "invalid yaml"),
    (lambda: __import__("pydantic").TypeAdapter(int).validate_python("x"), "integer"),
    (lambda: __import__("safetensors.torch").torch.load(b"\x00" * 12), "corrupt or truncated"),
])
def test_central_handler_maps_input_errors(monkeypatch, capsys, make, needle):
    try:
        make()
    except Exception as e:  # noqa: BLE001 - we want the real exception object each library raises
        exc = e
    else:
        raise AssertionError("the input did not fail")
    _failing_command(monkeypatch, exc)
    fails(capsys, ["report", "anything"], needle)


def test_central_handler_keeps_tracebacks_for_bugs(monkeypatch, capsys):
    _failing_command(monkeypatch, ZeroDivisionError("division by zero"))
    with pytest.raises(ZeroDivisionError):
        main(["report", "anything"])
    err = capsys.readouterr().err
    assert "internal error (ZeroDivisionError)" in err and "please report" in err


def test_every_subcommand_has_bad_input_cases():
    """A new subcommand must get its bad-input cases here (and rows in docs/errors.md)."""
    import argparse

    from langmoe.cli import build_parser

    covered = {"corpus", "tokenizer", "eval", "pretrain", "train", "deviation", "group", "select-layers", "upcycle",
               "export", "run", "demo", "report", "add-language"}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) <= covered, f"no bad-input tests for: {sorted(set(sub.choices) - covered)}"


def test_add_language_bad_input(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("1")
    base = ["add-language", "--lang", "ga", "--corpus", "builtin"]
    fails(capsys, [*base, "--model", "builtin", "--out", out], "not empty")
    fails(capsys, [*base, "--model", "builtin", "--out", tmp_path / "o1"], "langmoe_languages.json", "--groups")
    fails(capsys, [*base, "--model", "builtin", "--out", tmp_path / "o2", "--groups", "en,de/en"], "twice")
    fails(capsys, [*base, "--model", "builtin", "--out", tmp_path / "o3", "--groups", "en,ga/fr"], "ga")
    fails(capsys, [*base, "--model", "builtin", "--out", tmp_path / "o4", "--groups", "en/fr"], "not an MoE model")
    fails(capsys, [*base, "--model", "builtin", "--out", tmp_path / "o5", "--groups", "en/xx"], "xx", "corpus")
