"""Bad input across the whole CLI, one parametrised case per mistake: every case exits with code 2 and exactly one
stderr line `langmoe <cmd>: error: ...` naming the problem, never a traceback, and leaves every file that existed
before (inputs, earlier outputs) byte-identical.

Inputs are built once per module in a tmp folder: a tiny Llama folder + tokenizer, broken model folders, corpora
with one defect each, deviation results with one defect each, recipes, foreign and locked output folders. Nothing
here trains for more than a step or two; most cases fail before loading a model.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


def _deviation_json(path: Path, langs: list[str], dev_ffn: dict[str, list[float]], sim=None, **extra) -> Path:
    from langmoe.methods.dmoe.deviation import DeviationConfig, DeviationResult, ProbeInfo

    n = len(next(iter(dev_ffn.values())))
    sim = sim if sim is not None else [[1.0 if a == b else 0.5 for b in langs] for a in langs]
    res = DeviationResult(
        langs=langs, num_layers=n, dev_ffn=dev_ffn, vector_layers=list(range(n)), vector_dim=4, sketched=False,
        similarity=sim, config=DeviationConfig.parse({}),
        probe={x: ProbeInfo(steps=1, tokens_seen=1, first_loss=1.0, last_loss=1.0, elapsed_s=0.0) for x in langs})
    data = res.model_dump(mode="json")
    data.update(extra)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _edit_json(src: Path, dest: Path, fn: Callable[[dict], None]) -> Path:
    data = json.loads(src.read_text(encoding="utf-8"))
    fn(data)
    dest.write_text(json.dumps(data), encoding="utf-8")
    return dest


def _corpus_with(root: Path, name: str, files: dict[str, bytes | str]) -> Path:
    """The good de/fr corpus with `files` replacing or adding entries (None-like b'' still written)."""
    c = _corpus(root / name)
    for fname, content in files.items():
        if fname.startswith("-"):
            (c / fname[1:]).unlink()
            continue
        data = content.encode("utf-8") if isinstance(content, str) else content
        (c / fname).write_bytes(data)
    return c


def _parquet(path: Path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """Shared inputs: good ones, and broken variants (one defect each)."""
    from langmoe.data.corpus import open_corpus
    from langmoe.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("bad")
    e: dict[str, Path] = {"root": root}
    corpus = e["corpus"] = _corpus(root / "corpus")
    tok = train_tokenizer(open_corpus(str(corpus)), 300)
    n = len(tok)

    def model(name: str, vocab: int = n, **kw) -> Path:
        p = root / name
        _llama(vocab=vocab, **kw).save_pretrained(p)
        tok.save_pretrained(p)
        e[name] = p
        return p

    model("model")
    model("small_vocab", vocab=n - 20)  # the tokenizer has more tokens than the embedding rows
    corrupt = model("corrupt")
    w = corrupt / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    e["bad_json"] = root / "bad_json"
    e["bad_json"].mkdir()
    (e["bad_json"] / "config.json").write_text("{not json", encoding="utf-8")
    no_weights = e["no_weights"] = root / "no_weights"
    _llama(vocab=n).config.save_pretrained(no_weights)
    tok.save_pretrained(no_weights)
    e["no_config"] = root / "no_config"
    e["no_config"].mkdir()
    (e["no_config"] / "model.safetensors").write_bytes(b"")
    for name, edit in {
        "cfg_bad_field": lambda c: c.update(hidden_size="wide"),
        "cfg_no_type": lambda c: c.pop("model_type"),
        "cfg_unknown_type": lambda c: c.update(model_type="no_such_arch"),
        "cfg_list": None,
        "cfg_latin1": None,
    }.items():
        p = model(name)
        if name == "cfg_list":
            (p / "config.json").write_text("[1, 2]", encoding="utf-8")
        elif name == "cfg_latin1":
            (p / "config.json").write_bytes(b'{"model_type": "llama", "name": "caf\xe9"}')
        else:
            _edit_json(p / "config.json", p / "config.json", edit)
    moe = e["mixtral"] = root / "mixtral"  # already a Mixture-of-Experts: nothing to upcycle
    torch.manual_seed(0)
    MixtralForCausalLM(MixtralConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                     intermediate_size=64, num_local_experts=2, vocab_size=n,
                                     max_position_embeddings=64, bos_token_id=0, eos_token_id=0)).save_pretrained(moe)
    tok.save_pretrained(moe)
    e["tok"] = root / "tok"
    tok.save_pretrained(e["tok"])
    e["empty_tok"] = root / "empty_tok"
    e["empty_tok"].mkdir()

    # upcycled models for export
    e["moe"] = root / "moe"
    assert main(["upcycle", "--model", str(e["model"]), "--experts", "2", "--out", str(e["moe"])]) == 0
    e["moe_cls"] = root / "moe_cls"
    assert main(["upcycle", "--model", str(e["model"]), "--layers", "0", "--experts", "2", "--frozen-expert0",
                 "--classifier-layers", "0", "--out", str(e["moe_cls"])]) == 0
    e["moe_trunc"] = root / "moe_trunc"
    assert main(["upcycle", "--model", str(e["model"]), "--experts", "2", "--out", str(e["moe_trunc"])]) == 0
    w = e["moe_trunc"] / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])

    # outputs that exist already
    e["file"] = root / "afile.txt"
    e["file"].write_text("a file, not a folder\n", encoding="utf-8")
    e["foreign"] = root / "foreign"  # a user's folder with unrelated content
    e["foreign"].mkdir()
    (e["foreign"] / "notes.txt").write_text("precious\n", encoding="utf-8")
    e["marked_export"] = root / "marked_export"  # written by another command
    e["marked_export"].mkdir()
    (e["marked_export"] / ".langmoe-output.json").write_text(json.dumps({"command": "export", "time": "x"}))
    (e["marked_export"] / "weights.bin").write_bytes(b"\0" * 16)
    e["existing_json"] = root / "existing.json"
    e["existing_json"].write_text('{"mine": true}\n', encoding="utf-8")
    e["locked"] = root / "locked"  # a run folder another live process holds
    e["locked"].mkdir()
    (e["locked"] / ".langmoe-output.json").write_text(json.dumps({"command": "run", "time": "x"}))
    (e["locked"] / ".langmoe.lock").write_text(json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "start": None, "command": "run", "time": "now"}))
    e["locked_demo"] = root / "locked_demo"
    e["locked_demo"].mkdir()
    (e["locked_demo"] / ".langmoe-output.json").write_text(json.dumps({"command": "demo", "time": "x"}))
    (e["locked_demo"] / ".langmoe.lock").write_text(json.dumps(
        {"pid": 1, "host": "another-host", "start": None, "command": "demo", "time": "now"}))

    # corpora with one defect each
    c = root / "corpora"
    e["c_latin1"] = _corpus_with(c, "latin1", {"de.txt": b"Stra\xdfe ist sch\xf6n\n\n\xff\xfe more\n"})
    e["c_empty_file"] = _corpus_with(c, "empty_file", {"fr.txt": b""})
    e["c_blank"] = _corpus_with(c, "blank", {"de.txt": "\n\n   \n\n"})
    e["c_bad_jsonl"] = _corpus_with(c, "bad_jsonl", {"-fr.txt": "", "fr.jsonl": '{"text": "ok"}\n{broken\n'})
    e["c_jsonl_no_text"] = _corpus_with(c, "jsonl_no_text", {"-fr.txt": "", "fr.jsonl": '{"body": "x"}\n'})
    e["c_jsonl_num"] = _corpus_with(c, "jsonl_num", {"-fr.txt": "", "fr.jsonl": '{"text": 42}\n'})
    e["c_jsonl_list"] = _corpus_with(c, "jsonl_list", {"-fr.txt": "", "fr.jsonl": '["a", "b"]\n'})
    e["c_jsonl_split"] = _corpus_with(c, "jsonl_split",
                                      {"-fr.txt": "", "fr.jsonl": '{"text": "Le chat.", "split": "later"}\n'})
    e["c_gz_plain"] = _corpus_with(c, "gz_plain", {"-fr.txt": "", "fr.jsonl.gz": '{"text": "pas gzip"}\n'})
    good_gz = gzip.compress(("".join(json.dumps({"text": f"Le café {i}."}) + "\n" for i in range(200))).encode())
    e["c_gz_trunc"] = _corpus_with(c, "gz_trunc", {"-fr.txt": "", "fr.jsonl.gz": good_gz[: len(good_gz) // 2]})
    e["c_gz_latin1"] = _corpus_with(c, "gz_latin1", {"-fr.txt": "", "fr.txt.gz": gzip.compress(b"caf\xe9\n")})
    e["c_parquet_int"] = _corpus_with(c, "parquet_int", {"-fr.txt": ""})
    _parquet(e["c_parquet_int"] / "fr.parquet", {"text": [1, 2, 3]})
    e["c_parquet_list"] = _corpus_with(c, "parquet_list", {"-fr.txt": ""})
    _parquet(e["c_parquet_list"] / "fr.parquet", {"text": [["a"], ["b"]]})
    e["c_parquet_nocol"] = _corpus_with(c, "parquet_nocol", {"-fr.txt": ""})
    _parquet(e["c_parquet_nocol"] / "fr.parquet", {"body": ["a", "b"]})
    e["c_parquet_garbage"] = _corpus_with(c, "parquet_garbage", {"-fr.txt": "", "fr.parquet": b"PAR1 not really"})
    e["c_unknown"] = _corpus_with(c, "unknown", {"zz.txt": "some text here\n"})
    e["c_unsupported"] = _corpus_with(c, "unsupported", {"de.docx": "x"})
    e["c_two_sources"] = _corpus_with(c, "two_sources", {"de.jsonl": '{"text": "Hallo"}\n'})
    e["c_subdir"] = _corpus_with(c, "subdir", {})
    (e["c_subdir"] / "de_extra").mkdir()
    e["c_empty_dir"] = c / "empty_dir"
    e["c_empty_dir"].mkdir()
    langs_yaml = {
        "ly_string": "xx: Klingon\n",
        "ly_missing": "xx: {name: Klingon, family: Klingonic, genus: Klingonic}\n",
        "ly_unknown_field": "xx: {name: K, family: K, genus: K, script: Latin, scirpt: Latin}\n",
        "ly_bool_key": "no: {name: Norwegian, family: IE, genus: Germanic, script: Latin}\n",
        "ly_list_no_code": "- {name: K, family: K, genus: K, script: Latin}\n",
        "ly_syntax": "xx: {name: K, family: [\n",
        "ly_top_list_str": "- xx\n- yy\n",
        "ly_number_field": "xx: {name: 5, family: K, genus: K, script: Latin}\n",
        "ly_bad_code": "Klingon-Language!: {name: K, family: K, genus: K, script: Latin}\n",
        "ly_scalar": "just a sentence\n",
    }
    for name, text in langs_yaml.items():
        e[name] = _corpus_with(c, name, {"languages.yaml": text, "xx.txt": "Qapla batlh.\n\nnuqneH.\n"})
    e["ly_latin1"] = _corpus_with(c, "ly_latin1", {"languages.yaml": b"xx: {name: K\xe9}\n", "xx.txt": "Qapla\n"})
    for name, text in {"cy_range": "test_frac: 1.5\n", "cy_unknown": "testfrac: 0.1\n",
                       "cy_type": "test_frac: many\n", "cy_sum": "valid_frac: 0.5\ntest_frac: 0.5\n",
                       "cy_list": "- 0.1\n"}.items():
        e[name] = _corpus_with(c, name, {"corpus.yaml": text})
    e["c_only_train"] = _corpus_with(c, "only_train", {"-fr.txt": "", "fr.jsonl": "".join(
        json.dumps({"text": f"Le café {i}.", "split": "train"}) + "\n" for i in range(5))})

    # deviation results
    d = root / "dev"
    d.mkdir()
    e["dev3"] = _deviation_json(d / "dev3.json", ["de", "fr", "en"],
                                {"de": [0.1, 0.5], "fr": [0.2, 0.4], "en": [0.1, 0.6]})
    e["dev2"] = _deviation_json(d / "dev2.json", ["de", "fr"], {"de": [0.1, 0.5, 0.3], "fr": [0.2, 0.4, 0.3]})
    e["dev_nan"] = _deviation_json(d / "nan.json", ["de", "fr"], {"de": [float("nan"), 0.1], "fr": [0.2, 0.1]})
    e["dev_inf"] = _deviation_json(d / "inf.json", ["de", "fr"], {"de": [float("inf"), 0.1], "fr": [0.2, 0.1]})
    e["dev_neg"] = _deviation_json(d / "neg.json", ["de", "fr", "en"],
                                   {"de": [0.1, -0.5], "fr": [0.2, 0.4], "en": [0.1, 0.6]})
    e["dev_missing_lang"] = _edit_json(e["dev3"], d / "missing_lang.json", lambda x: x["dev_ffn"].pop("en"))
    e["dev_extra_lang"] = _edit_json(e["dev3"], d / "extra_lang.json", lambda x: x["dev_ffn"].update(it=[0.1, 0.2]))
    e["dev_ragged"] = _edit_json(e["dev3"], d / "ragged.json", lambda x: x["dev_ffn"].update(fr=[0.2]))
    e["dev_sim_ragged"] = _edit_json(e["dev3"], d / "sim_ragged.json", lambda x: x["similarity"][1].pop())
    e["dev_sim_nan"] = _deviation_json(
        d / "sim_nan.json", ["de", "fr", "en"], {"de": [0.1, 0.5], "fr": [0.2, 0.4], "en": [0.1, 0.6]},
        sim=[[1.0, float("nan"), 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]])
    e["dev_dup_lang"] = _edit_json(e["dev3"], d / "dup.json", lambda x: x["langs"].__setitem__(2, "de"))
    e["dev_zero_layers"] = _edit_json(e["dev3"], d / "zero_layers.json", lambda x: x.update(
        num_layers=0, dev_ffn={k: [] for k in x["dev_ffn"]}, vector_layers=[]))
    e["dev_layers_oob"] = _edit_json(e["dev3"], d / "layers_oob.json", lambda x: x.update(vector_layers=[5]))
    e["dev_broken"] = d / "broken.json"
    e["dev_broken"].write_text('{"langs": ["de"', encoding="utf-8")
    e["dev_wrong"] = d / "wrong.json"
    e["dev_wrong"].write_text(json.dumps({"langs": "de"}), encoding="utf-8")
    e["dev_latin1"] = d / "latin1.json"
    e["dev_latin1"].write_bytes(b'{"langs": ["d\xe9"]}')
    e["dev_list"] = d / "list.json"
    e["dev_list"].write_text("[1, 2]", encoding="utf-8")
    e["dev_vec"] = d / "vec" / "deviation.json"  # a damaged vectors file beside a good JSON
    e["dev_vec"].parent.mkdir()
    _deviation_json(e["dev_vec"], ["de", "fr", "en"], {"de": [0.1, 0.5], "fr": [0.2, 0.4], "en": [0.1, 0.6]})
    (e["dev_vec"].parent / "deviation.vectors.pt").write_bytes(b"not a torch file")

    # recipes
    r = root / "recipes"
    r.mkdir()
    good = (f"model: {e['model']}\ncorpus: {e['corpus']}\nlanguages: [de, fr]\n"
            "eval: {window: 32, stride: 16}\ndata: {block_len: 16}\n")
    recipes = {
        "syntax": "languages: [de, fr\n", "key": good + "langauges_typo: 1\n", "type": good + "top_k: many\n",
        "nested": good + "stage1: {steps: -3}\n", "k": good + "num_groups: 3\n", "list": "- a\n- b\n",
        "one": "languages: [de]\n", "xx": good.replace("[de, fr]", "[de, xx]"),
        "model_missing": good.replace(str(e["model"]), str(root / "no")),
        "bl": good.replace("block_len: 16", "block_len: 128"), "win": good.replace("window: 32", "window: 128"),
        "vocab": good.replace(str(e["model"]), str(e["small_vocab"])),
        "escape": good + "name: ../../escape\n", "absolute": good + f"name: {root / 'abs_run'}\n",
        "dotdot": good + "name: ..\n", "partition": good + "groups: [[de], [de]]\n",
        "topk": good + "top_k: 3\n", "stride": good.replace("stride: 16", "stride: 32"),
        "corpus_missing": good.replace(str(e["corpus"]), str(root / "nocorpus")),
        "cfg_invalid": good.replace(str(e["model"]), str(e["cfg_bad_field"])),
        "empty": "", "dup": good.replace("[de, fr]", "[de, de]"), "systems": good + "systems: [base, magic]\n",
        "good": good,
        "into_corpus": good,
    }
    for name, text in recipes.items():
        e[f"r_{name}"] = r / f"{name}.yaml"
        e[f"r_{name}"].write_text(text, encoding="utf-8")
    e["r_latin1"] = r / "latin1.yaml"
    e["r_latin1"].write_bytes(b"name: caf\xe9\nlanguages: [de, fr]\n")
    e["run_dir"] = root / "runs_ok"
    (root / "summary_only").mkdir()
    e["summary_only"] = root / "summary_only"
    (e["summary_only"] / "summary.json").write_text("{}", encoding="utf-8")
    return e


def _snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file (and the names of every folder) under the roots."""
    out: dict[str, str] = {}
    for root in roots:
        for p in sorted(root.rglob("*")) if root.exists() else []:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def fails(capsys, argv: list, *needles: str) -> str:
    """Run the CLI; assert exit code 2 and one clean error line naming every needle; return that line."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    verb = str(argv[0])
    assert code == 2, f"{argv} exited {code}; stderr: {err!r}"
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith(f"langmoe {verb}: error: "), line
    for n in needles:
        assert str(n).lower() in line.lower(), f"{n!r} not in {line!r}"
    if os.environ.get("LANGMOE_SHOW_ERRORS"):  # print every message (to refresh docs/errors.md)
        sys.__stdout__.write(line + "\n")
    return line


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[dict, Path], list]  # (env, tmp_path) -> argv
    needles: tuple[str, ...] = ()


def C(id: str, argv: Callable[[dict, Path], list], *needles: str) -> Case:  # noqa: N802 - a table row
    return Case(id, argv, tuple(needles))


# ---- the cases: (id, argv, needles) --------------------------------------------------------------------------

CS = ["corpus", "stats", "--corpus"]
EV = ["--no-unigram", "--window", "16", "--stride", "8"]


def _ev(model_key: str, *extra):
    return lambda e, t: ["eval", "--model", e[model_key], "--corpus", e["corpus"], *EV, *extra]


def _up(*extra, model: str = "model", out: bool = True):
    return lambda e, t: ["upcycle", "--model", e[model], *extra, *(["--out", t / "u"] if out else [])]


def _tr(*extra, model: str = "model", corpus: str = "corpus"):
    return lambda e, t: ["train", "--model", e[model], "--corpus", e[corpus], "--steps", "1", "--batch-size", "2",
                         "--block-len", "16", *extra]


def _pt(*extra):
    return lambda e, t: ["pretrain", "--corpus", e["corpus"], "--steps", "1", *extra]


def _dv(*extra, model: str = "model"):
    return lambda e, t: ["deviation", "--model", e[model], "--corpus", e["corpus"], "--langs", "de", "fr", *extra]


CORPUS_CASES = [
    C("corpus-missing", lambda e, t: [*CS, t / "missing"], "does not exist"),
    C("corpus-is-a-file", lambda e, t: [*CS, e["file"]], "is a file"),
    C("corpus-empty-folder", lambda e, t: [*CS, e["c_empty_dir"]], "holds no"),
    C("corpus-langs-xx", lambda e, t: [*CS, e["corpus"], "--langs", "xx"], "xx"),
    C("corpus-unknown-code", lambda e, t: [*CS, e["c_unknown"]], "zz", "languages.yaml"),
    C("corpus-unsupported-file", lambda e, t: [*CS, e["c_unsupported"]], "de.docx", "unsupported"),
    C("corpus-two-sources", lambda e, t: [*CS, e["c_two_sources"]], "two sources"),
    C("corpus-plain-subfolder", lambda e, t: [*CS, e["c_subdir"]], "de_extra", "save_to_disk"),
    C("corpus-latin1", lambda e, t: [*CS, e["c_latin1"]], "de.txt", "utf-8"),
    C("corpus-empty-file", lambda e, t: [*CS, e["c_empty_file"]], "fr.txt", "empty"),
    C("corpus-blank-file", lambda e, t: [*CS, e["c_blank"]], "de.txt", "no non-empty documents"),
    C("corpus-bad-jsonl", lambda e, t: [*CS, e["c_bad_jsonl"]], "fr.jsonl", "line 2"),
    C("corpus-jsonl-no-text", lambda e, t: [*CS, e["c_jsonl_no_text"]], "fr.jsonl", "text"),
    C("corpus-jsonl-text-number", lambda e, t: [*CS, e["c_jsonl_num"]], "fr.jsonl", "string"),
    C("corpus-jsonl-line-is-list", lambda e, t: [*CS, e["c_jsonl_list"]], "fr.jsonl", "text"),
    C("corpus-jsonl-bad-split", lambda e, t: [*CS, e["c_jsonl_split"]], "fr.jsonl", "later"),
    C("corpus-gz-not-gzip", lambda e, t: [*CS, e["c_gz_plain"]], "fr.jsonl.gz", "gzip"),
    C("corpus-gz-truncated", lambda e, t: [*CS, e["c_gz_trunc"]], "fr.jsonl.gz", "truncated"),
    C("corpus-gz-latin1", lambda e, t: [*CS, e["c_gz_latin1"]], "fr.txt.gz", "utf-8"),
    C("corpus-parquet-int-text", lambda e, t: [*CS, e["c_parquet_int"]], "fr.parquet", "not strings"),
    C("corpus-parquet-list-text", lambda e, t: [*CS, e["c_parquet_list"]], "fr.parquet", "not strings"),
    C("corpus-parquet-no-text", lambda e, t: [*CS, e["c_parquet_nocol"]], "fr.parquet", "text"),
    C("corpus-parquet-garbage", lambda e, t: [*CS, e["c_parquet_garbage"]], "fr.parquet", "parquet"),
    C("langs-yaml-entry-string", lambda e, t: [*CS, e["ly_string"]], "languages.yaml", "xx", "mapping"),
    C("langs-yaml-missing-script", lambda e, t: [*CS, e["ly_missing"]], "languages.yaml", "script"),
    C("langs-yaml-unknown-field", lambda e, t: [*CS, e["ly_unknown_field"]], "languages.yaml", "scirpt"),
    C("langs-yaml-bool-key", lambda e, t: [*CS, e["ly_bool_key"]], "languages.yaml", "quote"),
    C("langs-yaml-list-no-code", lambda e, t: [*CS, e["ly_list_no_code"]], "languages.yaml", "code"),
    C("langs-yaml-syntax", lambda e, t: [*CS, e["ly_syntax"]], "languages.yaml", "yaml"),
    C("langs-yaml-list-of-strings", lambda e, t: [*CS, e["ly_top_list_str"]], "languages.yaml", "entry 0"),
    C("langs-yaml-number-field", lambda e, t: [*CS, e["ly_number_field"]], "languages.yaml", "xx.name"),
    C("langs-yaml-bad-code", lambda e, t: [*CS, e["ly_bad_code"]], "languages.yaml", "iso 639"),
    C("langs-yaml-scalar", lambda e, t: [*CS, e["ly_scalar"]], "languages.yaml", "must map"),
    C("langs-yaml-latin1", lambda e, t: [*CS, e["ly_latin1"]], "languages.yaml", "utf-8"),
    C("corpus-yaml-out-of-range", lambda e, t: [*CS, e["cy_range"]], "test_frac", "1.5"),
    C("corpus-yaml-unknown-key", lambda e, t: [*CS, e["cy_unknown"]], "corpus.yaml", "testfrac"),
    C("corpus-yaml-not-a-number", lambda e, t: [*CS, e["cy_type"]], "corpus.yaml", "test_frac"),
    C("corpus-yaml-no-train-left", lambda e, t: [*CS, e["cy_sum"]], "valid_frac + test_frac"),
    C("corpus-yaml-list", lambda e, t: [*CS, e["cy_list"]], "corpus.yaml", "mapping"),
]

TOKENIZER_CASES = [
    C("tok-vocab-10", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--vocab-size", "10",
                                    "--out", t / "tok"], "257"),
    C("tok-langs-qq", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--langs", "qq",
                                    "--vocab-size", "300", "--out", t / "tok"], "qq"),
    C("tok-corpus-missing", lambda e, t: ["tokenizer", "train", "--corpus", t / "nope", "--out", t / "tok"],
      "does not exist"),
    C("tok-blank-corpus", lambda e, t: ["tokenizer", "train", "--corpus", e["c_blank"], "--vocab-size", "300",
                                        "--out", t / "tok"], "no non-empty documents"),
    C("tok-max-chars-0", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--vocab-size", "300",
                                       "--max-chars-per-lang", "0", "--out", t / "tok"], "max_chars_per_lang"),
    C("tok-out-is-file", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--out", e["file"]],
      "is a file"),
    C("tok-out-under-file", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--out",
                                          e["file"] / "tok"], "afile.txt is a file"),
    C("tok-out-foreign", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--out", e["foreign"]],
      "not written by langmoe", "--overwrite"),
    C("tok-out-model-folder", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--out", e["model"]],
      "holds a model"),
    C("tok-out-model-folder-overwrite", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--out",
                                                      e["model"], "--overwrite"], "holds a model"),
    C("tok-out-is-corpus", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--out", e["corpus"]],
      "is the input"),
    C("tok-out-inside-corpus", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--out",
                                             e["corpus"] / "tok"], "inside the input"),
    C("tok-out-contains-corpus", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--out",
                                               e["root"]], "contains the input"),
    C("tok-out-other-command", lambda e, t: ["tokenizer", "train", "--corpus", e["corpus"], "--out",
                                             e["marked_export"]], "langmoe export"),
]

MODEL_KEYS = {"missing": "does not exist", "no_config": "config.json", "bad_json": "config.json",
              "corrupt": "cannot load", "no_weights": "cannot load", "small_vocab": "tokenizer",
              "file": "not a model folder", "cfg_bad_field": "not a valid transformers config",
              "cfg_no_type": "model_type", "cfg_unknown_type": "no_such_arch", "cfg_list": "json object",
              "cfg_latin1": "utf-8"}

def _ev_model(key: str):
    return lambda e, t: ["eval", "--model", e.get(key, t / "missing"), "--corpus", e["corpus"], *EV]


EVAL_CASES = [
    C(f"eval-model-{k}", _ev_model(k), v) for k, v in MODEL_KEYS.items()
] + [
    C("eval-langs-xx", _ev("model", "--langs", "xx"), "xx"),
    C("eval-split-dev", _ev("model", "--split", "dev"), "dev"),
    C("eval-stride-over-window", lambda e, t: ["eval", "--model", e["model"], "--corpus", e["corpus"],
                                               "--no-unigram", "--window", "16", "--stride", "32"], "stride"),
    C("eval-window-over-positions", lambda e, t: ["eval", "--model", e["model"], "--corpus", e["corpus"],
                                                  "--no-unigram", "--window", "128", "--stride", "64"], "128", "64"),
    C("eval-threads-0", _ev("model", "--threads", "0"), "threads"),
    C("eval-batch-0", _ev("model", "--batch-size", "0"), "batch"),
    C("eval-max-chars-negative", _ev("model", "--max-chars", "-5"), "max_chars"),
    C("eval-empty-test-split", lambda e, t: ["eval", "--model", e["model"], "--corpus", e["c_only_train"], *EV,
                                             "--langs", "fr"], "no language has text"),
    C("eval-bad-corpus-file", lambda e, t: ["eval", "--model", e["model"], "--corpus", e["c_gz_plain"], *EV],
      "gzip"),
    C("eval-json-is-folder", _ev("model", "--json", "{t}"), "is a folder"),
    C("eval-json-under-file", lambda e, t: [*_ev("model")(e, t), "--json", e["file"] / "x.json"], "is a file"),
    C("eval-json-existing-file", lambda e, t: [*_ev("model")(e, t), "--json", e["existing_json"]],
      "already exists", "--overwrite"),
    C("eval-json-inside-model", lambda e, t: [*_ev("model")(e, t), "--json", e["model"] / "eval.json"],
      "inside the input"),
    C("eval-json-is-corpus-file", lambda e, t: [*_ev("model")(e, t), "--json", e["corpus"] / "de.txt"],
      "inside the input"),
]

PRETRAIN_CASES = [
    C("pretrain-preset-huge", lambda e, t: [*_pt("--preset", "huge")(e, t), "--out", t / "p"], "huge"),
    C("pretrain-block-over-positions", lambda e, t: [*_pt("--block-len", "128", "--max-positions", "64",
                                                          "--vocab-size", "300")(e, t), "--out", t / "p"],
      "128", "64"),
    C("pretrain-tokenizer-missing", lambda e, t: [*_pt("--tokenizer", t / "no_tok")(e, t), "--out", t / "p"],
      "does not exist"),
    C("pretrain-tokenizer-is-file", lambda e, t: [*_pt("--tokenizer", e["file"])(e, t), "--out", t / "p"],
      "is a file, not a folder"),
    C("pretrain-tokenizer-empty-folder", lambda e, t: [*_pt("--tokenizer", e["empty_tok"])(e, t), "--out",
                                                       t / "p"], "tokenizer.json"),
    C("pretrain-langs-xx", lambda e, t: [*_pt("--langs", "de", "xx")(e, t), "--out", t / "p"], "xx"),
    C("pretrain-steps-0", lambda e, t: [*_pt("--steps", "0")(e, t), "--out", t / "p"], "steps"),
    C("pretrain-lr-0", lambda e, t: [*_pt("--lr", "0")(e, t), "--out", t / "p"], "lr"),
    C("pretrain-batch-0", lambda e, t: [*_pt("--batch-size", "0")(e, t), "--out", t / "p"], "micro_batch_size"),
    C("pretrain-vocab-10", lambda e, t: [*_pt("--vocab-size", "10")(e, t), "--out", t / "p"], "vocab_size"),
    C("pretrain-save-every-negative", lambda e, t: [*_pt("--save-every", "-1")(e, t), "--out", t / "p"],
      "--save-every"),
    C("pretrain-keep-0", lambda e, t: [*_pt("--keep-checkpoints", "0")(e, t), "--out", t / "p"],
      "keep_checkpoints"),
    C("pretrain-warmup-1.5", lambda e, t: [*_pt("--warmup-ratio", "1.5")(e, t), "--out", t / "p"], "warmup_ratio"),
    C("pretrain-threads-0", lambda e, t: [*_pt("--threads", "0")(e, t), "--out", t / "p"], "threads"),
    C("pretrain-out-is-file", lambda e, t: [*_pt()(e, t), "--out", e["file"]], "is a file"),
    C("pretrain-out-under-file", lambda e, t: [*_pt()(e, t), "--out", e["file"] / "p"], "is a file"),
    C("pretrain-out-foreign", lambda e, t: [*_pt()(e, t), "--out", e["foreign"]], "not written by langmoe"),
    C("pretrain-out-is-corpus", lambda e, t: [*_pt()(e, t), "--out", e["corpus"]], "is the input"),
    C("pretrain-out-contains-corpus", lambda e, t: [*_pt()(e, t), "--out", e["root"]], "contains the input"),
    C("pretrain-out-is-tokenizer", lambda e, t: [*_pt("--tokenizer", e["tok"])(e, t), "--out", e["tok"]],
      "is the input"),
    C("pretrain-out-other-command", lambda e, t: [*_pt()(e, t), "--out", e["marked_export"]], "langmoe export"),
    C("pretrain-bad-corpus", lambda e, t: ["pretrain", "--corpus", e["c_parquet_int"], "--steps", "1", "--out",
                                           t / "p"], "not strings"),
]

TRAIN_CASES = [
    C("train-block-over-positions", lambda e, t: [*_tr("--block-len", "128")(e, t), "--out", t / "o"],
      "block", "128", "64"),
    C("train-lr-negative", lambda e, t: [*_tr("--lr", "-1")(e, t), "--out", t / "o"], "lr"),
    C("train-langs-xx", lambda e, t: [*_tr("--langs", "xx")(e, t), "--out", t / "o"], "xx"),
    C("train-steps-0", lambda e, t: [*_tr("--steps", "0")(e, t), "--out", t / "o"], "steps"),
    C("train-grad-accum-0", lambda e, t: [*_tr("--grad-accum", "0")(e, t), "--out", t / "o"], "grad_accum"),
    C("train-save-every-negative", lambda e, t: [*_tr("--save-every", "-3")(e, t), "--out", t / "o"],
      "--save-every"),
    C("train-min-lr-ratio-2", lambda e, t: [*_tr("--min-lr-ratio", "2")(e, t), "--out", t / "o"], "min_lr_ratio"),
    C("train-small-vocab", lambda e, t: [*_tr(model="small_vocab")(e, t), "--out", t / "o"], "tokenizer"),
    C("train-corrupt-model", lambda e, t: [*_tr(model="corrupt")(e, t), "--out", t / "o"], "cannot load"),
    C("train-invalid-config", lambda e, t: [*_tr(model="cfg_bad_field")(e, t), "--out", t / "o"],
      "config.json", "hidden_size"),
    C("train-model-missing", lambda e, t: ["train", "--model", t / "nope", "--out", t / "o"], "does not exist"),
    C("train-bad-corpus", lambda e, t: [*_tr(corpus="c_latin1")(e, t), "--out", t / "o"], "utf-8"),
    C("train-out-is-model", lambda e, t: [*_tr()(e, t), "--out", e["model"]], "is the input"),
    C("train-out-is-model-overwrite", lambda e, t: [*_tr()(e, t), "--out", e["model"], "--overwrite"],
      "is the input"),
    C("train-out-inside-model", lambda e, t: [*_tr()(e, t), "--out", e["model"] / "cpt"], "inside the input"),
    C("train-out-contains-model", lambda e, t: [*_tr()(e, t), "--out", e["root"]], "contains the input"),
    C("train-out-is-file", lambda e, t: [*_tr()(e, t), "--out", e["file"]], "is a file"),
    C("train-out-under-file", lambda e, t: [*_tr()(e, t), "--out", e["file"] / "x"], "is a file"),
    C("train-out-foreign", lambda e, t: [*_tr()(e, t), "--out", e["foreign"]], "not written by langmoe"),
    C("train-out-other-command", lambda e, t: [*_tr()(e, t), "--out", e["marked_export"]], "langmoe export"),
]

DEVIATION_CASES = [
    C("deviation-langs-xx", lambda e, t: ["deviation", "--model", e["model"], "--corpus", e["corpus"], "--langs",
                                          "de", "xx", "--out", t / "d"], "xx"),
    C("deviation-steps-0", lambda e, t: [*_dv("--steps", "0")(e, t), "--out", t / "d"], "steps"),
    C("deviation-lr-0", lambda e, t: [*_dv("--lr", "0")(e, t), "--out", t / "d"], "lr"),
    C("deviation-kind-unknown", lambda e, t: [*_dv("--kind", "lion")(e, t), "--out", t / "d"], "kind", "gradient"),
    C("deviation-sketch-dim-0", lambda e, t: [*_dv("--sketch-dim", "0")(e, t), "--out", t / "d"], "sketch_dim"),
    C("deviation-exact-and-sketch", lambda e, t: [*_dv("--exact-vectors", "--sketch-dim", "8")(e, t), "--out",
                                                  t / "d"], "--exact-vectors", "--sketch-dim"),
    C("deviation-attention-both", lambda e, t: [*_dv("--attention", "--no-attention")(e, t), "--out", t / "d"],
      "--attention"),
    C("deviation-checkpointing-both", lambda e, t: [*_dv("--gradient-checkpointing", "--no-gradient-checkpointing")(
        e, t), "--out", t / "d"], "--no-gradient-checkpointing"),
    C("deviation-block-over-positions", lambda e, t: [*_dv("--block-len", "128")(e, t), "--out", t / "d"],
      "128", "64"),
    C("deviation-last-n-5", lambda e, t: [*_dv("--last-n-layers", "5", "--steps", "1", "--block-len", "16",
                                               "--micro-batch-size", "2", "--max-tokens", "200")(e, t),
                                          "--out", t / "d"], "--last-n-layers"),
    C("deviation-corrupt-model", lambda e, t: [*_dv(model="corrupt")(e, t), "--out", t / "d"], "cannot load"),
    C("deviation-invalid-config", lambda e, t: [*_dv(model="cfg_unknown_type")(e, t), "--out", t / "d"],
      "no_such_arch"),
    C("deviation-model-missing", lambda e, t: ["deviation", "--model", t / "no", "--langs", "de", "--out",
                                               t / "d"], "does not exist"),
    C("deviation-out-is-model", lambda e, t: [*_dv()(e, t), "--out", e["model"]], "is the input"),
    C("deviation-out-is-file", lambda e, t: [*_dv()(e, t), "--out", e["file"]], "is a file"),
    C("deviation-out-foreign", lambda e, t: [*_dv()(e, t), "--out", e["foreign"]], "not written by langmoe"),
    C("deviation-threads-0", lambda e, t: [*_dv("--threads", "0")(e, t), "--out", t / "d"], "threads"),
]

DEV_DEFECTS = {
    "missing-file": ("missing", "does not exist"), "broken-json": ("dev_broken", "not a deviation result"),
    "wrong-type": ("dev_wrong", "langs"), "latin1": ("dev_latin1", "latin1.json"),
    "json-list": ("dev_list", "not a deviation result"), "lang-missing": ("dev_missing_lang", "en"),
    "extra-lang": ("dev_extra_lang", "it"), "ragged-layers": ("dev_ragged", "fr"),
    "negative": ("dev_neg", "negative"), "nan": ("dev_nan", "nan"), "inf": ("dev_inf", "inf"),
    "similarity-ragged": ("dev_sim_ragged", "similarity"), "similarity-nan": ("dev_sim_nan", "similarity"),
    "duplicate-lang": ("dev_dup_lang", "twice"), "zero-layers": ("dev_zero_layers", "num_layers"),
    "vector-layers-out-of-range": ("dev_layers_oob", "vector_layers"), "damaged-vectors": ("dev_vec", "vectors.pt"),
}


def _with_dev(key: str, verb: str, *extra: str):
    return lambda e, t: [verb, "--deviation", e.get(key, t / "missing.json"), *extra]


GROUP_CASES = [
    C(f"group-deviation-{k}", _with_dev(key, "group", "--groups", "2"), needle)
    for k, (key, needle) in DEV_DEFECTS.items()
] + [
    C("group-5-of-3", lambda e, t: ["group", "--deviation", e["dev3"], "--groups", "5"], "5", "3"),
    C("group-0-groups", lambda e, t: ["group", "--deviation", e["dev3"], "--groups", "0"], "num_groups"),
    C("group-size-0", lambda e, t: ["group", "--deviation", e["dev3"], "--group-size", "0"], "group_size"),
    C("group-out-is-folder", lambda e, t: ["group", "--deviation", e["dev3"], "--groups", "2", "--out", t],
      "is a folder"),
    C("group-out-is-deviation", lambda e, t: ["group", "--deviation", e["dev3"], "--groups", "2", "--out",
                                              e["dev3"]], "is the input"),
    C("group-out-under-file", lambda e, t: ["group", "--deviation", e["dev3"], "--groups", "2", "--out",
                                            e["file"] / "g.json"], "is a file"),
    C("group-out-existing-file", lambda e, t: ["group", "--deviation", e["dev3"], "--groups", "2", "--out",
                                               e["existing_json"]], "already exists"),
]

SELECT_CASES = [
    C(f"select-layers-deviation-{k}", _with_dev(key, "select-layers"), needle)
    for k, (key, needle) in DEV_DEFECTS.items()
] + [
    C("select-layers-epsilon-1.5", lambda e, t: ["select-layers", "--deviation", e["dev2"], "--epsilon", "1.5"],
      "selects no layer"),
    C("select-layers-epsilon-negative", lambda e, t: ["select-layers", "--deviation", e["dev2"], "--epsilon",
                                                      "-0.1"], "epsilon"),
    C("select-layers-top-n-9", lambda e, t: ["select-layers", "--deviation", e["dev2"], "--top-n", "9"], "top_n"),
    C("select-layers-top-n-0", lambda e, t: ["select-layers", "--deviation", e["dev2"], "--top-n", "0"], "top_n"),
    C("select-layers-out-is-deviation", lambda e, t: ["select-layers", "--deviation", e["dev2"], "--out",
                                                      e["dev2"]], "is the input"),
    C("select-layers-out-existing-file", lambda e, t: ["select-layers", "--deviation", e["dev2"], "--out",
                                                       e["existing_json"]], "already exists"),
    C("select-layers-out-is-folder", lambda e, t: ["select-layers", "--deviation", e["dev2"], "--out", t],
      "is a folder"),
]

UPCYCLE_CASES = [
    C("upcycle-mixtral", _up(model="mixtral"), "mixtral", "already a Mixture-of-Experts"),
    C("upcycle-layers-7", _up("--layers", "7"), "7"),
    C("upcycle-layers-letters", _up("--layers", "a,b"), "layers"),
    C("upcycle-experts-x", _up("--experts", "x"), "experts"),
    C("upcycle-experts-1", _up("--experts", "1"), "expert"),
    C("upcycle-top-k-5", _up("--top-k", "5"), "top"),
    C("upcycle-top-k-0", _up("--top-k", "0"), "top"),
    C("upcycle-no-out", _up(out=False), "--out"),
    C("upcycle-classifier-without-frozen", _up("--classifier-layers", "0"), "classifier"),
    C("upcycle-classifier-letters", _up("--classifier-layers", "x", "--frozen-expert0"), "classifier"),
    C("upcycle-corrupt", _up(model="corrupt"), "cannot load"),
    C("upcycle-invalid-config", _up(model="cfg_bad_field"), "not a valid transformers config"),
    C("upcycle-missing", lambda e, t: ["upcycle", "--model", t / "missing", "--out", t / "u"], "does not exist"),
    C("upcycle-out-is-model", lambda e, t: ["upcycle", "--model", e["model"], "--out", e["model"]],
      "is the input"),
    C("upcycle-out-is-model-overwrite", lambda e, t: ["upcycle", "--model", e["model"], "--out", e["model"],
                                                      "--overwrite"], "is the input"),
    C("upcycle-out-inside-model", lambda e, t: ["upcycle", "--model", e["model"], "--out", e["model"] / "moe"],
      "inside the input"),
    C("upcycle-out-contains-model", lambda e, t: ["upcycle", "--model", e["model"], "--out", e["root"]],
      "contains the input"),
    C("upcycle-out-is-file", lambda e, t: ["upcycle", "--model", e["model"], "--out", e["file"]], "is a file"),
    C("upcycle-out-under-file", lambda e, t: ["upcycle", "--model", e["model"], "--out", e["file"] / "u"],
      "is a file"),
    C("upcycle-out-foreign", lambda e, t: ["upcycle", "--model", e["model"], "--out", e["foreign"]],
      "not written by langmoe", "--overwrite"),
    C("upcycle-out-other-command", lambda e, t: ["upcycle", "--model", e["model"], "--out", e["marked_export"]],
      "langmoe export"),
]

EXPORT_CASES = [
    C("export-dense", lambda e, t: ["export", "--model", e["model"], "--out", t / "e"], "dense"),
    C("export-missing", lambda e, t: ["export", "--model", t / "missing", "--out", t / "e"], "does not exist"),
    C("export-classifier", lambda e, t: ["export", "--model", e["moe_cls"], "--out", t / "e"], "classifier"),
    C("export-truncated", lambda e, t: ["export", "--model", e["moe_trunc"], "--out", t / "e"], "moe_trunc"),
    C("export-invalid-config", lambda e, t: ["export", "--model", e["cfg_no_type"], "--out", t / "e"],
      "model_type"),
    C("export-out-is-model", lambda e, t: ["export", "--model", e["moe"], "--out", e["moe"]], "is the input"),
    C("export-out-inside-model", lambda e, t: ["export", "--model", e["moe"], "--out", e["moe"] / "x"],
      "inside the input"),
    C("export-out-is-file", lambda e, t: ["export", "--model", e["moe"], "--out", e["file"]], "is a file"),
    C("export-out-foreign", lambda e, t: ["export", "--model", e["moe"], "--out", e["foreign"]],
      "not written by langmoe"),
    C("export-out-upcycled-folder", lambda e, t: ["export", "--model", e["moe"], "--out", e["moe_cls"]],
      "langmoe upcycle"),
]


def _run(key: str, *extra, run_dir: bool = True):
    return lambda e, t: ["run", e[key], *extra, *(["--run-dir", t / "r"] if run_dir else [])]


RUN_CASES = [
    C("run-recipe-missing", lambda e, t: ["run", t / "missing.yaml"], "does not exist"),
    C("run-recipe-is-folder", lambda e, t: ["run", t], "recipe"),
    C("run-recipe-syntax", _run("r_syntax"), "not valid YAML"),
    C("run-recipe-typo-key", _run("r_key"), "langauges_typo"),
    C("run-recipe-wrong-type", _run("r_type"), "top_k"),
    C("run-recipe-nested-range", _run("r_nested"), "stage1.steps"),
    C("run-recipe-groups-over-langs", _run("r_k"), "num_groups"),
    C("run-recipe-list", _run("r_list"), "mapping"),
    C("run-recipe-one-language", _run("r_one"), "languages"),
    C("run-recipe-empty", _run("r_empty"), "languages"),
    C("run-recipe-latin1", _run("r_latin1"), "latin1.yaml"),
    C("run-recipe-duplicate-lang", _run("r_dup"), "once"),
    C("run-recipe-unknown-system", _run("r_systems"), "systems"),
    C("run-recipe-groups-not-partition", _run("r_partition"), "partition"),
    C("run-recipe-top-k-over-groups", _run("r_topk"), "top_k"),
    C("run-recipe-stride-over-window", _run("r_stride"), "stride"),
    C("run-lang-not-in-corpus", _run("r_xx"), "xx"),
    C("run-model-missing", _run("r_model_missing"), "does not exist"),
    C("run-corpus-missing", _run("r_corpus_missing"), "does not exist"),
    C("run-model-invalid-config", _run("r_cfg_invalid"), "config.json", "hidden_size"),
    C("run-block-over-positions", _run("r_bl"), "128", "64"),
    C("run-window-over-positions", _run("r_win"), "128", "64"),
    C("run-tokenizer-too-big", _run("r_vocab"), "tokenizer"),
    C("run-threads-0", _run("r_good", "--threads", "0"), "threads"),
    C("run-name-escapes", _run("r_escape", run_dir=False), "../../escape", "simple folder name"),
    C("run-name-absolute", _run("r_absolute", run_dir=False), "simple folder name"),
    C("run-name-dotdot", _run("r_dotdot", run_dir=False), "simple folder name"),
    C("run-dir-is-file", lambda e, t: ["run", e["r_good"], "--run-dir", e["file"]], "is a file"),
    C("run-dir-foreign", lambda e, t: ["run", e["r_good"], "--run-dir", e["foreign"]], "not written by langmoe"),
    C("run-dir-is-corpus", lambda e, t: ["run", e["r_good"], "--run-dir", e["corpus"]], "is the input"),
    C("run-dir-contains-recipe", lambda e, t: ["run", e["r_good"], "--run-dir", e["r_good"].parent],
      "contains the input"),
    C("run-dir-locked", lambda e, t: ["run", e["r_good"], "--run-dir", e["locked"]], "in use", str(os.getpid())),
    C("run-dir-other-command", lambda e, t: ["run", e["r_good"], "--run-dir", e["marked_export"]],
      "langmoe export"),
]

DEMO_CASES = [
    C("demo-recipe-missing", lambda e, t: ["demo", "--recipe", t / "missing.yaml", "--out", t / "d"],
      "does not exist"),
    C("demo-recipe-invalid", lambda e, t: ["demo", "--recipe", e["r_key"], "--out", t / "d"], "langauges_typo"),
    C("demo-threads-0", lambda e, t: ["demo", "--threads", "0", "--out", t / "d"], "threads"),
    C("demo-out-is-file", lambda e, t: ["demo", "--out", e["file"]], "is a file"),
    C("demo-out-foreign", lambda e, t: ["demo", "--out", e["foreign"]], "not written by langmoe"),
    C("demo-out-locked-elsewhere", lambda e, t: ["demo", "--out", e["locked_demo"]], "in use", "another-host"),
    C("demo-out-locked-by-run", lambda e, t: ["demo", "--out", e["locked"]], "in use"),
]

REPORT_CASES = [
    C("report-missing", lambda e, t: ["report", t / "missing"], "does not exist"),
    C("report-is-file", lambda e, t: ["report", e["summary_only"] / "summary.json"], "summary.json", "is a file"),
    C("report-out-is-folder", lambda e, t: ["report", e["summary_only"], "--out", e["summary_only"]],
      "is a folder"),
    C("report-out-is-summary", lambda e, t: ["report", e["summary_only"], "--out",
                                             e["summary_only"] / "summary.json"], "is the input"),
    C("report-out-existing-file", lambda e, t: ["report", e["summary_only"], "--out", e["existing_json"]],
      "already exists"),
    C("report-out-under-file", lambda e, t: ["report", e["summary_only"], "--out", e["file"] / "r.html"],
      "is a file"),
]

CASES = (CORPUS_CASES + TOKENIZER_CASES + EVAL_CASES + PRETRAIN_CASES + TRAIN_CASES + DEVIATION_CASES
         + GROUP_CASES + SELECT_CASES + UPCYCLE_CASES + EXPORT_CASES + RUN_CASES + DEMO_CASES + REPORT_CASES)


def test_case_table_is_large_and_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 150, len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(env, tmp_path, capsys, case):
    argv = [str(a).replace("{t}", str(tmp_path)) for a in case.argv(env, tmp_path)]
    before = _snapshot(env["root"], tmp_path)
    fails(capsys, argv, *case.needles)
    after = _snapshot(env["root"], tmp_path)
    changed = sorted(p for p, h in before.items() if after.get(p) != h)
    assert not changed, f"files changed or removed: {changed[:5]}"
    created = sorted(p for p in after if p not in before and Path(p).parent.exists())
    assert not [p for p in created if ".langmoe-output.json" in p or ".langmoe.lock" in p], created


# ---- cases that need a state built first ----------------------------------------------------------------------


def test_train_corrupt_checkpoints_every_one_damaged(env, tmp_path, capsys):
    out = tmp_path / "t"
    ok = ["train", "--model", env["model"], "--corpus", env["corpus"], "--out", out, "--block-len", "16",
          "--batch-size", "2", "--max-train-tokens", "200", "--save-every", "1", "--log-every", "1"]
    assert main([str(a) for a in [*ok, "--steps", "1"]]) == 0
    ckpts = sorted((out / "train" / "checkpoints").glob("step-*"))
    assert ckpts, "training wrote no checkpoint"
    for f in ckpts[-1].rglob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:100])
    before = _snapshot(out)
    line = fails(capsys, [*ok, "--steps", "1"], "is corrupt", "delete it")  # same options: resumes from it
    assert ckpts[-1].name in line
    assert _snapshot(out) == before


def test_a_failing_recipe_leaves_no_run_folder(env, tmp_path, capsys):
    for key in ("r_xx", "r_vocab", "r_bl"):  # fail in the pipeline's setup, after the folder was claimed
        fails(capsys, ["run", env[key], "--run-dir", tmp_path / "r"])
        assert not (tmp_path / "r").exists(), key


def test_two_concurrent_runs_real_process(env, tmp_path, capsys):
    """A second process holds the run folder's lock: `langmoe run` names it; once it dies, the lock is stale."""
    import subprocess
    import time

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from langmoe.io import claim_output; from langmoe.lock import acquire\n"
        "claim_output(sys.argv[1], 'run'); acquire(sys.argv[1], 'run'); print('locked', flush=True)\n"
        "time.sleep(120)"), str(run_dir)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(run_dir)
        fails(capsys, ["run", env["r_good"], "--run-dir", run_dir], "in use", f"pid {holder.pid}")
        assert _snapshot(run_dir) == before
    finally:
        holder.kill()
        holder.wait()
    from langmoe.lock import acquire, release

    time.sleep(0.1)
    acquire(run_dir, "run")  # the holder is dead: its lock is stale and taken over
    release(run_dir)
    assert not (run_dir / ".langmoe.lock").exists()


def _cli(*args: str, stdin=None) -> tuple[int, str, str]:
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "langmoe", *args], capture_output=True, text=True, env=env,
                       timeout=300)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("make_args, needle", [
    (lambda e, t: ["corpus", "stats", "--corpus", str(e["c_gz_plain"])], "gzip"),
    (lambda e, t: ["upcycle", "--model", str(e["model"]), "--out", str(e["foreign"])], "not written by langmoe"),
    pytest.param(lambda e, t: ["group", "--deviation", str(e["dev_ragged"]), "--groups", "2"], "fr",
                 marks=pytest.mark.slow),
    pytest.param(lambda e, t: ["run", str(e["r_escape"])], "simple folder name", marks=pytest.mark.slow),
], ids=["gz", "foreign-out", "ragged-deviation", "run-name"])
def test_bad_input_in_a_real_process(env, tmp_path, make_args, needle):
    before = _snapshot(env["root"])
    code, out, err = _cli(*make_args(env, tmp_path))
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and needle in lines[0], err
    assert _snapshot(env["root"]) == before


def test_broken_pipe_is_quiet(env):
    """`langmoe corpus stats --json | head -c 20`: the reader leaves early; no traceback, no error line."""
    import subprocess

    env_vars = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(f"{sys.executable} -m langmoe corpus stats --json | head -c 20", shell=True,
                       capture_output=True, text=True, env=env_vars, timeout=300)
    assert p.stdout.startswith("{"), p.stdout
    # stderr holds only the corpus's own warnings (thin held-out splits), no traceback, no error line
    assert all(x.startswith("langmoe corpus: warning: ") for x in p.stderr.splitlines()), p.stderr


def test_convert_bad_inputs(env, tmp_path, capsys):
    fails(capsys, ["convert", "--model", env["model"], "--out", tmp_path / "c"], "dense", "nothing to convert")
    fails(capsys, ["convert", "--model", tmp_path / "missing", "--out", tmp_path / "c"], "does not exist")
    assert not (tmp_path / "c").exists()


def test_lm_eval_bad_inputs(tmp_path, capsys):
    fails(capsys, ["lm-eval-tasks", "--out", tmp_path / "t", "--langs", "xx"], "xx", "not in corpus")
    fails(capsys, ["lm-eval-tasks", "--out", tmp_path / "t", "--max-docs", "0"], "max_docs")
    fails(capsys, ["lm-eval", "--model", "builtin", "--tasks", "langmoe_bpb_en", "--limit", "0"], "--limit")
    fails(capsys, ["lm-eval", "--model", "builtin", "--tasks", "langmoe_bpb_en", "--batch-size", "0"], "--batch-size")
    pytest.importorskip("lm_eval")
    fails(capsys, ["lm-eval", "--model", "builtin", "--tasks", "langmoe_bpb_en", "--include-path", tmp_path / "no"],
          "is not a folder")
    fails(capsys, ["lm-eval", "--model", tmp_path / "missing", "--tasks", "langmoe_bpb_en"], "does not exist")


def test_run_threads_zero_is_not_ignored(tmp_path, capsys):
    rec = tmp_path / "r.yaml"
    rec.write_text("languages: [de, fr]\n", encoding="utf-8")
    fails(capsys, ["run", rec, "--threads", "0"], "threads")


def test_argparse_errors_are_one_line(capsys):
    """A missing option, an unknown one, a wrong choice, a bad number: one line (no usage block), exit 2."""
    fails(capsys, ["group"], "the following arguments are required: --deviation", "langmoe group --help")
    fails(capsys, ["group", "--deviation", "d.json", "--groups", "2", "--no-such-option"], "unrecognized arguments")
    # expand finds its methods through the registry: a method it cannot run is one line naming those it can
    fails(capsys, ["expand", "--method", "bogus", "--model", "builtin", "--new", "el", "--old", "en", "--out",
                   "/nonexistent-dir/x"], "--method 'bogus' cannot expand a model", "moe_lpr, layermoe")
    fails(capsys, ["adapt", "--mode", "bogus"], "--mode 'bogus'", "seft, ssft, aeft, lastn, full, lora")
    fails(capsys, ["corpus", "show", "-n", "x"], "invalid int value: 'x'", "langmoe corpus show --help")
    line = fails(capsys, ["corpus", "bogus"], "'bogus' is not a valid choice", "stats, show")
    assert "usage" not in line
    capsys.readouterr()
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("langmoe ")


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
               "export", "convert", "run", "demo", "report", "lm-eval", "lm-eval-tasks",
               "routing", "adapt", "add-language"}  # routing/adapt: tests/methods/routing/test_routing_cli.py
    covered |= {"generate", "languages", "recipes"}  # in tests/cli/test_{generate,languages_cmd,recipes_cmd}.py
    covered |= {"expand"}  # cases in tests/methods/layermoe/test_expand_cli.py
    covered |= {"tokenize"}  # cases in tests/cli/test_tokenize_cli.py
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) <= covered, f"no bad-input tests for: {sorted(set(sub.choices) - covered)}"


def test_add_language_bad_input(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("1")
    base = ["add-language", "--lang", "ga", "--corpus", "builtin"]
    fails(capsys, [*base, "--model", "builtin", "--out", out], "already exists")
    fails(capsys, [*base, "--model", "builtin", "--out", tmp_path / "o1"], "langmoe_languages.json", "--groups")
    fails(capsys, [*base, "--model", "builtin", "--out", tmp_path / "o2", "--groups", "en,de/en"], "twice")
    fails(capsys, [*base, "--model", "builtin", "--out", tmp_path / "o3", "--groups", "en,ga/fr"], "ga")
    fails(capsys, [*base, "--model", "builtin", "--out", tmp_path / "o4", "--groups", "en/fr"], "not an MoE model")
    fails(capsys, [*base, "--model", "builtin", "--out", tmp_path / "o5", "--groups", "en/xx"], "xx", "corpus")
