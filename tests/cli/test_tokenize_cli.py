"""`langmoe tokenize` then `langmoe train --token-store`: a generated multi-file .zst corpus, a real SIGKILL in the
middle of tokenising (the rerun ends with the same store), and faults that are one line each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import langmoe
import langmoe.data.parallel_tokenize as parallel_tokenize
from langmoe.cli import main
from langmoe.data.token_store import TokenStore

zstd = pytest.importorskip("zstandard")
ALPHABET = ["<|endoftext|>", *"abcdefghijklmnopqrstuvwxyz .,äöüéè"]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def char_tokenizer(extra: str = "") -> PreTrainedTokenizerFast:
    chars = ALPHABET + list(extra)
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def write_zst_corpus(root: Path, files: int = 3, docs: int = 40, words: int = 30) -> Path:
    """de/ and fr/ as folders of part-NNNNN.jsonl.zst files (several zstd frames each)."""
    vocab = {"de": ["über", "die", "straße", "läuft", "eine", "katze", "schön", "grün"],
             "fr": ["le", "café", "est", "déjà", "fermé", "à", "côté", "la", "rue", "très", "belle"]}
    for lang, ws in vocab.items():
        (root / lang).mkdir(parents=True, exist_ok=True)
        for f in range(files):
            frames = []
            for half in range(2):
                rows = [{"id": f"{lang}-{f}-{half}-{i}",
                         "text": " ".join(ws[(i * 7 + j * (f + 2) + half) % len(ws)] for j in range(words + i % 9))}
                        for i in range(docs)]
                frames.append(zstd.ZstdCompressor().compress(
                    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()))
            (root / lang / f"part-{f:05d}.jsonl.zst").write_bytes(b"".join(frames))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    tok = char_tokenizer()
    tok.save_pretrained(root / "tok")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2, intermediate_size=64, vocab_size=len(tok),
                                         max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0))
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    write_zst_corpus(root / "corpus")
    return root


def _env() -> dict[str, str]:
    e = dict(os.environ)
    src = str(Path(langmoe.__file__).resolve().parents[1])
    e.update(PYTHONPATH=src + os.pathsep + e.get("PYTHONPATH", ""), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return e


def _tokenize_args(world: Path, out: Path, *extra: str) -> list[str]:
    return ["tokenize", "--tokenizer", str(world / "tok"), "--corpus", str(world / "corpus"), "--out", str(out),
            *extra]


def _train_args(world: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(world / "model"), "--corpus", str(world / "corpus"), "--out", str(out),
            "--steps", "2", "--batch-size", "2", "--block-len", "16", "--save-every", "0", "--threads", "1", *extra]


def test_tokenize_then_train_reads_only_the_store(world, tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    assert main(_tokenize_args(world, store, "--verify")) == 0
    out = capsys.readouterr().out
    assert "checksums verified" in out and "bytes a token" in out
    plain = tmp_path / "plain"
    assert main(_train_args(world, plain)) == 0

    def refuse(self, texts):
        raise AssertionError("the prepared store holds every token the run needs")
    monkeypatch.setattr(parallel_tokenize.DocumentEncoder, "encode", refuse)
    stored = tmp_path / "stored"
    assert main(_train_args(world, stored, "--token-store", str(store))) == 0
    from safetensors.torch import load_file

    a, b = load_file(str(plain / "model.safetensors")), load_file(str(stored / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same blocks, so the same model
    assert (plain / "train" / "tokens" / "manifest.json").is_file() and not (stored / "train" / "tokens").exists()
    assert "--token-store" in json.loads((stored / "train.json").read_text())["command"]


def test_sigkill_mid_tokenise_then_rerun_gives_the_same_store(world, tmp_path):
    whole = tmp_path / "whole"
    args = ["--shard-tokens", "500"]
    assert main(_tokenize_args(world, whole, *args)) == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "langmoe", *_tokenize_args(world, killed, *args)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "train" / "de" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(json.loads(state.read_text())["shards"]) >= 3:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "tokenising ended before it could be killed"
    kept = json.loads(state.read_text())["shards"]
    assert len(kept) >= 3 and not json.loads(state.read_text())["exhausted"]
    assert main(_tokenize_args(world, killed, *args)) == 0
    tok = char_tokenizer()
    a, b = TokenStore(whole, tok, progress="off"), TokenStore(killed, tok, progress="off")
    assert b.state("de", "train").shards[: len(kept)] == a.state("de", "train").shards[: len(kept)]
    assert b.content_hash(verify=True) == a.content_hash(verify=True)


def _one_error(capsys, command: str, match: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"langmoe {command}: error:") and match in err[0], err


def test_faults_are_one_line(world, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(_tokenize_args(world, store, "--langs", "de", "--max-tokens-per-lang", "3000")) == 0
    capsys.readouterr()
    other = tmp_path / "other-tok"
    char_tokenizer("ß").save_pretrained(other)
    assert main(["tokenize", "--tokenizer", str(other), "--corpus", str(world / "corpus"), "--out", str(store)]) == 2
    _one_error(capsys, "tokenize", "was tokenised with another tokenizer")
    moved = tmp_path / "corpus2"
    write_zst_corpus(moved, files=2)
    assert main(["tokenize", "--tokenizer", str(world / "tok"), "--corpus", str(moved), "--out", str(store)]) == 2
    _one_error(capsys, "tokenize", "holds 'de' of another corpus")
    assert main(_train_args(world, tmp_path / "t", "--token-store", str(world / "corpus"))) == 2
    _one_error(capsys, "train", "is not a token store")
    assert main(_tokenize_args(world, world / "corpus" / "store")) == 2
    _one_error(capsys, "tokenize", "is inside the corpus")
    shard = store / "train" / "de" / "00000.tokens"
    shard.write_bytes(shard.read_bytes()[:-10])
    assert main(_tokenize_args(world, store, "--langs", "de", "--max-tokens-per-lang", "3000")) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "00000.tokens is missing or cut short: dropping it" in err[0], err
    assert TokenStore(store, char_tokenizer(), progress="off").content_hash(verify=True)


@pytest.mark.parametrize("extra, match", [
    (["--splits", "train,dev"], "use train, valid and/or test"),
    (["--max-tokens-per-lang", "0"], "--max-tokens-per-lang must be at least 1"),
    (["--langs", "xx"], "not in the corpus"),
    (["--shard-tokens", "0"], "--shard-tokens must be at least 1"),
])
def test_bad_arguments(world, tmp_path, capsys, extra, match):
    assert main(_tokenize_args(world, tmp_path / "s", *extra)) == 2
    _one_error(capsys, "tokenize", match)
