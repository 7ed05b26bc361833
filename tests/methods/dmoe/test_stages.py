"""DMoE build / stages on a tiny Llama: function preservation, save/load, hard routing, routing accuracy, losses."""

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipeline"))
from tiny_world import make_base, make_corpus  # noqa: E402

from langmoe.data.corpus import open_corpus  # noqa: E402
from langmoe.data.packing import pack_corpus  # noqa: E402
from langmoe.methods.dmoe import build  # noqa: E402
from langmoe.methods.dmoe.stages import routing_statistics  # noqa: E402
from langmoe.pipeline.models import load_moe, moe_params, save_moe  # noqa: E402
from langmoe.train.routing_context import group_of_map, hard_routing  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def world(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = make_base(tmp_path / "base")
    corpus = open_corpus(str(make_corpus(tmp_path / "corpus")))
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    blocks = pack_corpus(corpus, tok, ["en", "fr", "de", "nl"], "train", 16, max_tokens_per_lang=400)
    return model, tok, blocks, tmp_path


def test_build_preserves_function_and_round_trips(world):
    model, tok, blocks, tmp = world
    ids = blocks.batch([0, 1])["input_ids"]
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    moe = build.build_dmoe(model, [0, 2], 2, 2, seed=0)
    with torch.no_grad():
        out = moe(input_ids=ids).logits
    assert torch.allclose(out, ref, atol=1e-5)
    with torch.no_grad():  # perturb so the round trip is not trivially the base
        for n, p in moe.named_parameters():
            if build.is_expert_param(n):
                p.add_(torch.randn_like(p) * 0.05)
        before = moe(input_ids=ids).logits
    save_moe(tok)(moe, tmp / "moe")
    again = load_moe(tmp / "moe")
    again.eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, before)
    p = moe_params(again)
    per_expert = 3 * 32 * 64  # gate, up, down of hidden 32 / intermediate 64
    dense = sum(x.numel() for x in model.parameters())
    router = 2 * (2 * 32)
    assert p["total"] == p["active"]  # top-2 of 2 experts: all active
    assert moe_params(again, hard=True)["active"] == p["total"] - 2 * per_expert  # one expert per MoE layer
    base_dense = 44832 - 2 * per_expert - router  # two experts per MoE layer instead of one FFN, plus routers
    assert dense == base_dense or dense == p["total"]  # `model` was upcycled in place


def test_hard_routing_uses_the_group_expert_only(world):
    model, tok, blocks, _ = world
    moe = build.build_dmoe(copy.deepcopy(model), [0, 2], 2, 2, seed=0)
    from langmoe.models.moe import moe_blocks

    with torch.no_grad():
        for b in moe_blocks(moe):
            b.experts.down_proj[1].zero_()  # expert 1 now outputs 0
    batch = blocks.batch([0, 1], group_of={"en": 1, "fr": 1, "de": 0, "nl": 0})
    with torch.no_grad(), hard_routing(moe, batch):
        out1 = moe(input_ids=batch["input_ids"]).logits
    # the same as a model whose MoE layers output zero: drop the MLP of those layers
    zeroed = build.build_dmoe(copy.deepcopy(model), [0, 2], 2, 2, seed=0)
    with torch.no_grad():
        for b in moe_blocks(zeroed):
            b.experts.down_proj.zero_()
        ref = zeroed(input_ids=batch["input_ids"]).logits
    assert torch.allclose(out1, ref, atol=1e-6)
    with pytest.raises(Exception, match="group"):
        hard_routing(moe, {"group_ids": torch.full((1, 2), -1)})


def test_routing_statistics_counts_top1_against_groups(world):
    model, tok, blocks, _ = world
    moe = build.build_dmoe(model, [0, 2], 2, 2, seed=0)
    from langmoe.models.moe import moe_blocks

    group_of = {"en": 0, "fr": 0, "de": 1, "nl": 1}
    b0, b2 = moe_blocks(moe)
    with torch.no_grad():  # opposite routers: every token's top-1 differs between the two layers
        b0.router.weight.copy_(torch.randn_like(b0.router.weight))
        b2.router.weight.copy_(-b0.router.weight)

    stats = routing_statistics(moe, blocks, group_of, batch_size=4)
    n_tok = int(blocks.lengths.sum())
    c = stats["counts"]
    for layer, acc in stats["accuracy"].items():
        right = sum(c[x][layer][group_of[x]] for x in group_of)
        assert acc == pytest.approx(right / n_tok)
        assert sum(sum(c[x][layer]) for x in group_of) == n_tok
    # layer 2's router is the negation of layer 0's (and the input to layer 0 is the same for both
    # only at layer 0), so check the exact complement at layer 0 with a second, negated copy instead
    with torch.no_grad():
        b0.router.weight.neg_()
    flipped = routing_statistics(moe, blocks, group_of, batch_size=4)
    assert flipped["accuracy"]["0"] == pytest.approx(1 - stats["accuracy"]["0"])
    assert set(stats["accuracy"]) == {"0", "2"}


def test_group_of_map():
    assert group_of_map([["en", "fr"], ["de"]]) == {"en": 0, "fr": 0, "de": 1}
    with pytest.raises(Exception, match="two groups"):
        group_of_map([["en"], ["en"]])
