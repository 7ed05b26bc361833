"""The language gate's mask with a TRAINED added expert: old tokens never reach it, even where the router's own
logits prefer it (with an added expert that is an exact copy any mask mistake would be invisible)."""

import torch

from langmoe.models.moe import build_moe_block
from langmoe.models.overrides.gate import LanguageGate, add_gated_expert


def test_old_tokens_never_reach_a_trained_added_expert():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    b = build_moe_block(16, 32, 3, 2)
    x = torch.randn(2, 7, 16)
    before = b(x)
    assert add_gated_expert(b, 1, "prefix") == 3
    with torch.no_grad():
        for name, p in b.named_parameters():  # the added expert trained: its weights no longer expert 1's
            if "router" not in name and p.dim() >= 1 and p.shape[0] == 4:
                p[3] += torch.randn_like(p[3])
        b.router.weight[3] = 5 * b.router.weight[:3].abs().max() * x.reshape(-1, 16).mean(0).sign()
        b.router.override.bias[0] = 1e3  # every token classified "old"
    flat = x.reshape(-1, 16)
    assert not torch.allclose(b.expert_forward(flat, 3), b.expert_forward(flat, 1))
    assert (flat @ b.router.weight.T).argmax(-1).eq(3).any(), "the router should prefer the added expert somewhere"
    assert b.router.override.allowed(4, torch.device("cpu")).tolist() == [True, True, True, False]
    assert torch.equal(b(x), before)


def test_allowed_mask_at_first_new_boundaries():
    assert LanguageGate(8, 1, 2).allowed(3, torch.device("cpu")).tolist() == [True, False, False]
    assert LanguageGate(8, 2, 1).allowed(3, torch.device("cpu")).tolist() == [True, True, False]
