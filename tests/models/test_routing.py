"""Routing per call (masks) and `iter_routing`, the one forward-over-blocks that every method's routing
measurement uses: each batch's router outputs equal those of a plain recorded forward, padding is marked, the
model's mode is restored; the same on a stock transformers MoE."""

import pytest
import torch
import transformers as tf
from moe_fixtures import tiny_model

from langmoe.data.packing import LanguageIndex, PackedBlocks
from langmoe.errors import LangmoeError
from langmoe.models.router_recorder import RouterRecorder
from langmoe.models.routing import iter_routing, routing
from langmoe.models.upcycle import upcycle

torch.set_num_threads(1)


def _blocks(n: int = 5, T: int = 6) -> PackedBlocks:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 64, (n, T), generator=g)
    lengths = torch.tensor([T, T, 3, T, 1][:n])
    return PackedBlocks(tokens=tokens, lang=torch.tensor([0, 0, 1, 1, 1][:n]), index=LanguageIndex(["en", "de"]),
                        lengths=lengths)


@pytest.mark.parametrize("stock", [False, True])
def test_iter_routing_yields_the_outputs_of_a_recorded_forward(stock):
    if stock:
        torch.manual_seed(0)
        model = tf.AutoModelForCausalLM.from_config(tf.Qwen3MoeConfig(
            vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=64, moe_intermediate_size=8, num_experts=4, num_experts_per_tok=2,
            intermediate_size=16, head_dim=8))
    else:
        model = upcycle(tiny_model("llama"), [0, 2], 3, 2)
    blocks = _blocks()
    model.train()
    seen = list(iter_routing(model, blocks, batch_size=2, indices=[4, 0, 2]))
    assert model.training  # restored
    assert [b["input_ids"].shape[0] for b, _, _ in seen] == [2, 1]
    model.eval()
    for (batch, valid, outs), idx in zip(seen, ([4, 0], [2]), strict=True):
        assert torch.equal(batch["input_ids"], blocks.tokens[idx])
        assert torch.equal(valid, (torch.arange(6)[None] < blocks.lengths[idx][:, None]).reshape(-1))
        with torch.no_grad(), RouterRecorder(model, accumulate=False) as rec:
            model(input_ids=blocks.tokens[idx], use_cache=False)
        ref = rec.last_outputs()
        assert [o.layer for o in outs] == [o.layer for o in ref] and len(outs) == 2
        for o, r in zip(outs, ref, strict=True):
            assert torch.equal(o.logits, r.logits) and torch.equal(o.topk_idx, r.topk_idx)
            assert not o.logits.requires_grad


def test_iter_routing_labels_groups_on_request():
    model = upcycle(tiny_model("llama"), [1], 2, 1)
    batch, _, _ = next(iter_routing(model, _blocks(), batch_size=5, group_of={"en": 1, "de": 0}))
    assert batch["group_ids"][:, 0].tolist() == [1, 1, 0, 0, 0]


def test_allowed_experts_per_layer_and_bad_masks():
    model = upcycle(tiny_model("llama"), [0, 2], 4, 2)
    ids = _blocks().tokens
    with torch.no_grad(), routing(model, allowed_experts={2: [1, 3]}), RouterRecorder(model) as rec:
        model(input_ids=ids)
    assert set(rec.selected[2].unique().tolist()) <= {1, 3} and set(rec.selected[0].unique().tolist()) - {1, 3}
    with pytest.raises(LangmoeError, match="not MoE layers"), routing(model, allowed_experts={1: [0]}):
        pass
    with pytest.raises(LangmoeError, match="allows no expert"), routing(model, allowed_experts=[]):
        pass
