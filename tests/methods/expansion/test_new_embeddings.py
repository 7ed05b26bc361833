"""`--train-new-embeddings` (issue 22 item 4, a departure from both papers): stage 1 also trains the input-embedding
rows of the tokens that occur in the new languages' training text and in none of the old languages'; exactly those
rows move, every other row (and the output layer) stays bit-equal; off by default; refused where it cannot keep the
old rows (weight decay, tied embeddings) or does not apply (the dense baselines)."""

from __future__ import annotations

import pytest
import torch
from expansion_world import ALPHABETS, char_tokenizer, fast_config
from transformers import AutoModelForCausalLM

from langmoe.errors import LangmoeError
from langmoe.methods import moe_lpr
from langmoe.methods.expansion.surgery import new_token_rows
from langmoe.models.moe_io import load_moe_pretrained


def _emb(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()


def test_only_the_new_tokens_rows_move(tmp_path):
    cfg = fast_config(tmp_path, num_experts=3, train_new_embeddings=True)
    rec = moe_lpr.run(cfg, tmp_path / "on").record
    base = AutoModelForCausalLM.from_pretrained(cfg["model"])
    got = load_moe_pretrained(tmp_path / "on")
    moved = (_emb(got) != _emb(base)).any(-1)
    tok = char_tokenizer()
    new_chars = set(ALPHABETS["es"] + ALPHABETS["it"]) - set(ALPHABETS["en"] + ALPHABETS["de"])
    allowed = torch.zeros_like(moved)
    allowed[tok.convert_tokens_to_ids(sorted(new_chars))] = True
    assert rec["new_embedding_rows"] == int(allowed.sum()) == len(new_chars)
    assert bool(moved.any()) and not bool((moved & ~allowed).any())  # only the new tokens' rows, and some did
    assert torch.equal(_emb(got)[~allowed], _emb(base)[~allowed])  # bit-equal
    assert torch.equal(got.get_output_embeddings().weight, base.get_output_embeddings().weight)
    # off (the papers' recipe): every row stays
    moe_lpr.run(fast_config(tmp_path, num_experts=3), tmp_path / "off")
    assert torch.equal(_emb(load_moe_pretrained(tmp_path / "off")), _emb(base))


def test_new_token_rows_leave_out_the_old_texts_tokens():
    class Blocks:
        def __init__(self, rows):
            self.rows = torch.tensor(rows)

        def __len__(self):
            return len(self.rows)

        def batch(self, idx):
            ids = self.rows[list(idx)]
            return {"input_ids": ids, "labels": torch.where(ids == 9, -100, ids)}  # 9 = padding here

    rows = new_token_rows(Blocks([[1, 2, 3, 9]]), Blocks([[2, 4, 4, 4]]), 10)
    assert rows.nonzero().flatten().tolist() == [1, 3]


def test_refusals(tmp_path):
    with pytest.raises(Exception, match="weight decay 0"):
        moe_lpr.MoELPRConfig(**fast_config(tmp_path, train_new_embeddings=True, stage1={"weight_decay": 0.01}))
    with pytest.raises(LangmoeError, match="MoE systems"):
        moe_lpr.run(fast_config(tmp_path, variant="lora", train_new_embeddings=True), tmp_path / "lora")
