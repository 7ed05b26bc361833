"""What `langmoe add-language` trains, parameter by parameter, through the CLI, in both routing modes:

- `--routing router` (the paper): the new expert (a copy) and its router row train; the old experts, the old router
  rows (frozen by default), attention, embeddings, norms and the dense FFN stay bit-equal;
- `--routing gate` (the default): only the new expert trains; the router (every row), the gates (fitted after
  training, never trained) and everything else stay bit-equal during training.

The spy records the model right before and right after `train_new_language`; the saved folder is checked against
the input folder too (old expert rows and every dense tensor bit-equal, the new expert no longer its source copy).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from param_moves import check_moves, moved_rows, snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
from tiny_world import make_base, make_corpus  # noqa: E402

import langmoe.methods.dmoe.new_language as NL  # noqa: E402
from langmoe.cli import main  # noqa: E402
from langmoe.methods.dmoe import build  # noqa: E402

OLD = 2  # experts of the input model; the new one is expert 2


@pytest.fixture
def dmoe_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langmoe.methods.dmoe.new_language_stage import write_languages_file
    from langmoe.models.moe import moe_blocks
    from langmoe.models.moe_io import save_moe_pretrained

    torch.set_num_threads(1)
    base = make_base(tmp_path / "base")
    make_corpus(tmp_path / "corpus")
    tok = AutoTokenizer.from_pretrained(str(base))
    dense = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model = build.build_dmoe(copy.deepcopy(dense), [0, 2], 2, 2)
    with torch.no_grad():  # trained-looking experts: distinct, so a copy is told apart from its source
        for b in moe_blocks(model):
            for p in (b.experts.gate_up_proj, b.experts.down_proj):
                p.add_(torch.randn_like(p) * 0.02)
    src = tmp_path / "dmoe"
    save_moe_pretrained(model, tok, src)
    write_languages_file(src, {"en": 0, "fr": 0, "de": 1, "nl": 1})
    return src


def _run(tmp_path, src, monkeypatch, *extra):
    seen = {}
    real = NL.train_new_language

    def spy(model, *a, **kw):
        seen["before"] = snapshot(model)
        out = real(model, *a, **kw)
        seen["after"] = snapshot(model)
        return out

    monkeypatch.setattr(NL, "train_new_language", spy)
    out = tmp_path / "out"
    args = ["add-language", "--model", str(src), "--lang", "es", "--corpus", str(tmp_path / "corpus"),
            "--out", str(out), "--steps", "3", "--lr", "1e-2", "--block-len", "16", "--micro-batch-size", "4",
            "--window", "32", "--stride", "16", "--max-chars", "200", "--threads", "1", *extra]
    assert main(args) == 0
    assert seen, "add-language did not train through train_new_language"
    return seen["before"], seen["after"], out


def _saved(folder: Path) -> dict[str, torch.Tensor]:
    from langmoe.models.moe_io import load_model_any

    return snapshot(load_model_any(folder)[0])


def _check_saved(src: Path, out: Path) -> None:
    """Input folder -> output folder: old experts' rows and every tensor outside the MoE parts bit-equal; the new
    expert row differs from every old one (it trained away from the copy)."""
    a, b = _saved(src), _saved(out)
    for n, t in a.items():
        if build.is_expert_param(n):
            assert torch.equal(b[n][:OLD], t), n
            assert all(not torch.equal(b[n][OLD], t[e]) for e in range(OLD)), f"{n}: the new expert is a copy"
        elif not build.is_router_param(n):
            assert torch.equal(b[n], t), n


def test_router_mode_trains_the_new_expert_and_its_router_row_only(tmp_path, dmoe_folder, monkeypatch):
    before, after, out = _run(tmp_path, dmoe_folder, monkeypatch, "--routing", "router")
    check_moves(before, after, lambda n: None if build.is_expert_param(n) or build.is_router_param(n) else False,
                "add-language router: attention, embeddings, norms, dense FFN, LM head")
    experts = [n for n in before if build.is_expert_param(n)]
    routers = [n for n in before if build.is_router_param(n)]
    assert experts and len(routers) == 2
    for n in experts + routers:  # old rows frozen (router rows: freeze_old_rows, the default)
        assert moved_rows(before[n], after[n]) == [OLD], f"{n}: rows {moved_rows(before[n], after[n])} moved"
    _check_saved(dmoe_folder, out)
    a, b = _saved(dmoe_folder), _saved(out)
    for n in routers:
        assert torch.equal(b[n][:OLD], a[n]), n


def test_gate_mode_trains_the_new_expert_only(tmp_path, dmoe_folder, monkeypatch):
    before, after, out = _run(tmp_path, dmoe_folder, monkeypatch)  # --routing gate is the default
    check_moves(before, after, lambda n: None if build.is_expert_param(n) else False,
                "add-language gate: router rows, gates, attention, embeddings, norms, dense FFN, LM head")
    assert any("override" in n for n in before)  # the gates exist during training (and do not train)
    experts = [n for n in before if build.is_expert_param(n)]
    for n in experts:
        assert moved_rows(before[n], after[n]) == [OLD], f"{n}: rows {moved_rows(before[n], after[n])} moved"
    _check_saved(dmoe_folder, out)
