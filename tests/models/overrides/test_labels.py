"""Label routing (the per-call `LabelRouting` override): each token's output is its labelled expert's, computed
by hand; one label is one dense FFN call; bad labels are one line."""

import pytest
import torch
from moe_fixtures import block, ffn_ref, last_output, recorded

from langmoe.errors import LangmoeError
from langmoe.models.overrides.labels import LabelRouting
from langmoe.models.routing import routing

torch.set_num_threads(1)


def test_label_routing_one_label_is_one_dense_call_and_mixed_gathers():
    b = recorded(block(E=3, k=2))
    x = torch.randn(2, 4, 8)
    calls = []
    orig = b.experts.expert_forward
    b.experts.expert_forward = lambda h, e, *a: (calls.append((h.shape[0], e)), orig(h, e, *a))[1]
    with routing(b, route_labels=torch.full((2, 4), 2)):
        y = b(x)
    assert calls == [(8, 2)]
    assert torch.equal(y, orig(x.reshape(-1, 8), 2).reshape(2, 4, 8))
    assert torch.allclose(y, ffn_ref(b, x.reshape(-1, 8), 2).reshape(2, 4, 8), atol=1e-6)
    calls.clear()
    labels = torch.tensor([[0, 1, 1, 2], [2, 2, 0, 1]])
    with routing(b, route_labels=labels):
        y = b(x)
    assert sorted(calls) == [(2, 0), (3, 1), (3, 2)]
    for t, e in enumerate(labels.reshape(-1).tolist()):
        assert torch.allclose(y.reshape(-1, 8)[t], ffn_ref(b, x.reshape(-1, 8)[t : t + 1], e)[0], atol=1e-6)
    out = last_output(b)
    assert out.mode == "labels" and torch.equal(out.topk_idx[:, 0], labels.reshape(-1))
    assert torch.equal(out.topk_weight, torch.ones(8, 1))  # hard: weight 1, one slot
    assert torch.equal(out.logits, x.reshape(-1, 8) @ b.router.weight.T)  # still computed (router CE reads them)


def test_the_override_is_per_call_and_the_router_keeps_no_label_state():
    b = recorded(block(E=3, k=2))
    x = torch.randn(1, 4, 8)
    learned = b(x)
    with routing(b, route_labels=torch.zeros(1, 4, dtype=torch.long)):
        assert isinstance(b.router._state.override, LabelRouting) and b.router.override is None
        b(x)
    assert b.router._state is None and torch.equal(b(x), learned)


def test_label_errors():
    b = block(E=3)
    with routing(b, route_labels=torch.tensor([[0, 3]])), pytest.raises(LangmoeError, match=r"in \[0, 3\)"):
        b(torch.randn(1, 2, 8))
    with routing(b, route_labels=torch.tensor([[0, 1, 1]])), pytest.raises(LangmoeError, match="3 entries"):
        b(torch.randn(1, 2, 8))
    with pytest.raises(LangmoeError, match="needs route_labels"), routing(b, mode="labels"):
        pass
    with pytest.raises(LangmoeError, match="not saved"):
        LabelRouting(torch.zeros(1)).spec()
