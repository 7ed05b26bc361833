"""Routing accuracy and the routing table against the routers' own logits, read by forward hooks: top-1 is the
argmax of the logits (not whatever column of the top-k the code picks), padding excluded, per layer."""

import torch
from dmoe_fixtures import synthetic_blocks, tiny_llama

from langmoe.methods.dmoe.stages import routing_statistics
from langmoe.models.moe import moe_blocks
from langmoe.models.upcycle import upcycle

GROUPS = {"en": 0, "fr": 1, "de": 2}


def test_accuracy_and_counts_equal_the_argmax_of_the_router_logits():
    torch.set_num_threads(1)
    model = upcycle(tiny_llama(), [0, 2], 3, 2, router_init="normal", seed=0)
    with torch.no_grad():
        for b in moe_blocks(model):
            b.router.weight.normal_(0.0, 2.0, generator=torch.Generator().manual_seed(b.layer_idx))
    blocks = synthetic_blocks(n_per_lang=5)
    blocks.lengths[1] = 9  # padding at the end of two blocks: not counted
    blocks.lengths[7] = 2
    stats = routing_statistics(model, blocks, GROUPS, batch_size=4)

    captured = {b.layer_idx: [] for b in moe_blocks(model)}
    hooks = [b.router.register_forward_hook(lambda m, i, o, li=b.layer_idx: captured[li].append(o[0].detach()))
             for b in moe_blocks(model)]
    try:
        with torch.no_grad():
            model(input_ids=blocks.tokens)
    finally:
        for h in hooks:
            h.remove()
    T = blocks.tokens.shape[1]
    valid = (torch.arange(T).unsqueeze(0) < blocks.lengths.unsqueeze(1)).reshape(-1)
    group = torch.tensor([GROUPS[blocks.index.code(i)] for i in blocks.lang.tolist()]).repeat_interleave(T)
    lang = blocks.lang.repeat_interleave(T)
    assert set(stats["accuracy"]) == {"0", "2"}
    for layer, outs in captured.items():
        top1 = torch.cat(outs).reshape(-1, 3).argmax(-1)
        second = torch.cat(outs).reshape(-1, 3).topk(2, -1).indices[:, 1]
        acc = int((top1 == group)[valid].sum()) / int(valid.sum())
        wrong = int((second == group)[valid].sum()) / int(valid.sum())
        assert abs(acc - wrong) > 0.05  # the data tell the top-1 column from the second
        assert stats["accuracy"][str(layer)] == acc
        for li, code in enumerate(blocks.index.codes):
            sel = valid & (lang == li)
            assert stats["counts"][code][str(layer)] == torch.bincount(top1[sel], minlength=3).tolist()
    assert sum(stats["counts"]["en"]["0"]) == int(blocks.lengths[:5].sum())
    assert stats["mean_accuracy"] == (stats["accuracy"]["0"] + stats["accuracy"]["2"]) / 2
