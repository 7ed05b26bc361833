"""peft's LoRA on the fused experts (`target_parameters`) works on langmoe MoE models."""

import pytest
import torch
from moe_fixtures import tiny_model, tokens

from langmoe.models.moe import moe_blocks
from langmoe.models.router_recorder import router_outputs
from langmoe.models.upcycle import parameter_counts, upcycle

torch.set_num_threads(1)
peft = pytest.importorskip("peft")


@pytest.mark.parametrize(
    "frozen,targets",
    [(False, ["experts.gate_up_proj", "experts.down_proj"]), (True, ["gate_up_proj", "down_proj"])],
)
def test_lora_on_experts_trains_and_leaves_base_weights(frozen, targets):
    model = upcycle(tiny_model("llama"), [0, 2], 3, top_k=2, frozen_expert0=frozen)
    with torch.no_grad():
        for b in moe_blocks(model):
            b.router.weight.normal_(0, 1.0)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    x = tokens()
    with torch.no_grad():
        before = model(x).logits.clone()
    cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=[], target_parameters=targets, init_lora_weights=True)
    pm = peft.get_peft_model(model, cfg)
    lora = {n: p for n, p in pm.named_parameters() if p.requires_grad}
    # one A/B pair per targeted fused tensor: 2 tensors x 2 MoE layers
    assert len(lora) == 2 * 2 * 2 and all("lora_" in n for n in lora)
    with torch.no_grad():  # B starts at zero: the adapted model is the base model
        assert torch.equal(pm(x).logits, before)
    opt = torch.optim.AdamW(lora.values(), lr=5e-2)
    losses = []
    pm.train()
    for _ in range(5):
        loss = pm(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    pm.eval()
    with torch.no_grad():
        assert not torch.allclose(pm(x).logits, before)  # LoRA changed the experts' function
    for k, v in pm.get_base_model().state_dict().items():
        if "lora_" in k:
            continue
        name = k.replace(".base_layer", "").replace("parametrizations.", "").replace(".original", "")
        assert torch.equal(v, base[name]), k
    if frozen:  # the frozen expert is a buffer: LoRA never targets it
        assert not any(".frozen." in n for n in lora)
    # the router losses and the accounting still see the MoE layers through the peft wrapper
    assert [o.layer for o in router_outputs(pm)] == [0, 2]
    assert parameter_counts(pm)["moe_layers"] == 2
