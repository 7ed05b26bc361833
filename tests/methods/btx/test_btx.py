"""BTX merge: expert k of every layer is branch k's FFN, every other weight is the branches' mean."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langmoe.methods.btx.merge import merge_branches
from langmoe.models.adapters import get_adapter
from langmoe.models.moe import moe_blocks
from langmoe.models.routing import routing


def _tiny(seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg)


def test_merge_branches():
    torch.set_num_threads(1)
    branches = [_tiny(0), _tiny(1), _tiny(2)]
    copies = [{k: v.clone() for k, v in b.state_dict().items()} for b in branches]
    ffn = [[get_adapter(b).extract(layer.mlp) for layer in b.model.layers] for b in branches]
    ids = torch.randint(0, 20, (2, 7))
    with torch.no_grad():
        want_attn = sum(c["model.layers.1.self_attn.q_proj.weight"] for c in copies) / 3
        want_emb = sum(c["model.embed_tokens.weight"] for c in copies) / 3
    moe = merge_branches(branches, top_k=2, seed=0)
    blocks = moe_blocks(moe)
    assert [b.layer_idx for b in blocks] == [0, 1] and all(b.num_experts == 3 and b.top_k == 2 for b in blocks)
    for b in blocks:
        for k in range(3):
            assert torch.equal(b.experts.ffn(k).w_gate, ffn[k][b.layer_idx].w_gate)
            assert torch.equal(b.experts.ffn(k).w_out, ffn[k][b.layer_idx].w_out)
    sd = moe.state_dict()
    assert torch.allclose(sd["model.layers.1.self_attn.q_proj.weight"], want_attn)
    assert torch.allclose(sd["model.embed_tokens.weight"], want_emb)
    # hard routing to expert k in every layer = the averaged model with branch k's FFNs
    ref = _tiny(0)
    ref.load_state_dict({k: v for k, v in sd.items() if "mlp" not in k}, strict=False)
    with torch.no_grad():
        for i, layer in enumerate(ref.model.layers):
            layer.mlp.gate_proj.weight.copy_(ffn[1][i].w_gate.t())
            layer.mlp.up_proj.weight.copy_(ffn[1][i].w_up.t())
            layer.mlp.down_proj.weight.copy_(ffn[1][i].w_out.t())
        with routing(moe, route_labels=torch.ones_like(ids)):
            got = moe(input_ids=ids).logits
        assert torch.allclose(got, ref(input_ids=ids).logits, atol=1e-5)
