"""What dense CPT trains (docs/methods.md §1, baselines: every parameter), tensor by tensor, on a tiny recipe run:
every tensor of the base moved, input-embedding rows of characters no recipe language holds are bit-equal (weight
decay 0, so a tensor moves only by gradient)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from param_moves import check_embedding_rows, check_moves, folder_weights, token_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
from tiny_world import ALPHABETS, tiny_recipe  # noqa: E402

from langmoe.pipeline.run import run_recipe  # noqa: E402

NO_DECAY = {"lr": 3e-3, "warmup_ratio": 0.0, "weight_decay": 0.0}
EVAL = {"window": 32, "stride": 16, "max_chars_per_lang": 100, "batch_size": 4}
EMBED = "model.embed_tokens.weight"
SEEN = "".join(sorted(set(ALPHABETS["en"] + ALPHABETS["fr"] + ALPHABETS["de"] + ALPHABETS["nl"])))
UNSEEN = "".join(sorted(set(ALPHABETS["es"] + ALPHABETS["it"]) - set(SEEN)))


def test_cpt_trains_every_parameter(tmp_path):
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    run_recipe(tiny_recipe(tmp_path, systems=["cpt"], optim=NO_DECAY, eval=EVAL), tmp_path / "run")
    base = folder_weights(tmp_path / "base")
    cpt = folder_weights(tmp_path / "run" / "stages" / "cpt" / "train" / "model")
    seen = check_moves(base, cpt, lambda n: None if n == EMBED else True, "cpt")
    assert seen["moved"] == len(base) - 1  # attention, FFN, norms of all 3 layers, final norm, LM head
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "base"))
    check_embedding_rows(base[EMBED], cpt[EMBED], token_rows(tok, SEEN), token_rows(tok, UNSEEN), "cpt")
