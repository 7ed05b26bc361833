"""What `langmoe pretrain` and `langmoe train` train (every parameter), tensor by tensor, from the CLI: every tensor
of the starting model moved in the saved folder; input-embedding rows of characters the chosen languages never
use are bit-equal (weight decay 0, so a tensor moves only by gradient)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from param_moves import check_embedding_rows, check_moves, snapshot, token_rows

sys.path.insert(0, str(Path(__file__).resolve().parent / "pipeline"))
from tiny_world import ALPHABETS, make_base, make_corpus  # noqa: E402

import langmoe.pretrain as P  # noqa: E402
from langmoe.cli import main  # noqa: E402

LANGS = ["en", "fr", "de", "nl"]
SEEN = "".join(sorted(set("".join(ALPHABETS[x] for x in LANGS))))
UNSEEN = "".join(sorted(set(ALPHABETS["es"] + ALPHABETS["it"]) - set(SEEN)))
COMMON = ["--langs", *LANGS, "--steps", "2", "--block-len", "16", "--batch-size", "4", "--warmup-ratio", "0",
          "--weight-decay", "0", "--save-every", "0", "--threads", "1"]


@pytest.fixture
def world(tmp_path):
    torch.set_num_threads(1)
    return make_base(tmp_path / "base"), make_corpus(tmp_path / "corpus")


def _saved(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    return snapshot(model), AutoTokenizer.from_pretrained(str(folder)), model


def _check(before, after, tok, what: str, embed: str = "model.embed_tokens.weight") -> None:
    seen = check_moves(before, after, lambda n: None if n == embed else True, what)
    assert seen["moved"] == len(before) - 1
    check_embedding_rows(before[embed], after[embed], token_rows(tok, SEEN), token_rows(tok, UNSEEN), what)


def test_train_moves_every_parameter(world, tmp_path):
    base, corpus = world
    before, tok, _ = _saved(base)
    out = tmp_path / "cpt"
    assert main(["train", "--model", str(base), "--corpus", str(corpus), "--out", str(out), *COMMON]) == 0
    after, _, _ = _saved(out)
    _check(before, after, tok, "langmoe train")


def test_pretrain_moves_every_parameter(world, tmp_path, monkeypatch):
    base, corpus = world
    start = {}
    real = P.train

    def spy(model, *a, **kw):  # the freshly created model, as training receives it
        start.update(snapshot(model))
        return real(model, *a, **kw)

    monkeypatch.setattr(P, "train", spy)
    out = tmp_path / "pre"
    assert main(["pretrain", "--preset", "tiny", "--tokenizer", str(base), "--corpus", str(corpus), "--out", str(out),
                 "--eval-window", "16", "--eval-stride", "8", "--eval-max-chars", "50", "--max-positions", "64",
                 *COMMON]) == 0
    after, tok, model = _saved(out)
    assert start, "pretrain did not go through langmoe.pretrain.train"
    _check(start, after, tok, "langmoe pretrain")
