"""The load-balance TERM (what training adds) on a batch with padding, against the Switch formula by hand over the
non-padding tokens only: padding rows are routed too, so counting them would change the value."""

import sys
from pathlib import Path

import pytest
import torch
import transformers as tf

sys.path.insert(0, str(Path(__file__).parent))
from test_router_losses_hand import hand_switch  # noqa: E402

from langmoe.models.router_recorder import router_outputs  # noqa: E402
from langmoe.models.upcycle import upcycle  # noqa: E402
from langmoe.train.router_losses import load_balance_term  # noqa: E402


def test_load_balance_term_with_padding_by_hand():
    torch.manual_seed(0)
    cfg = tf.Qwen3Config(vocab_size=40, hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64)
    model = upcycle(tf.AutoModelForCausalLM.from_config(cfg), layers="all", num_experts=4, top_k=2)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "router" in n:
                p.normal_(0.0, 1.0)
    ids = torch.randint(1, 40, (2, 6))
    labels = ids.clone()
    labels[1, 3:] = -100  # the second row's last 3 positions are padding
    with torch.no_grad():
        out = model(input_ids=ids)
        got = float(load_balance_term()(model, {"input_ids": ids, "labels": labels}, out))
        outs = router_outputs(model)
    keep = (labels.reshape(-1) != -100).tolist()
    per_layer = [hand_switch(o.logits.tolist(), 2, mask=keep, idx=o.topk_idx.tolist()) for o in outs]
    assert len(per_layer) == 2
    assert got == pytest.approx(sum(per_layer) / 2, rel=1e-5)
    everything = [hand_switch(o.logits.tolist(), 2, idx=o.topk_idx.tolist()) for o in outs]
    assert got != pytest.approx(sum(everything) / 2, rel=1e-4)  # the padding really changes the value
