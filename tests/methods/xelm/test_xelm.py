import math
from types import SimpleNamespace

import pytest
import torch

from langmoe.errors import LangmoeError
from langmoe.methods.xelm.ensemble import EnsembleLM
from langmoe.train.mixed import split_steps


class FixedLM(torch.nn.Module):
    """Same next-token distribution `probs` at every position."""

    def __init__(self, probs):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(probs).log())
        self.config = SimpleNamespace(vocab_size=len(probs))

    def forward(self, input_ids):
        b, t = input_ids.shape
        return SimpleNamespace(logits=self.logits.expand(b, t, -1))


def test_uniform_ensemble_is_the_average():
    ens = EnsembleLM([FixedLM([0.5, 0.25, 0.25]), FixedLM([0.1, 0.1, 0.8])], weights="uniform")
    out = ens(torch.tensor([[0, 2, 1]])).logits.exp()
    assert torch.allclose(out[0, 0], torch.tensor([0.3, 0.175, 0.525]))
    assert torch.allclose(out.sum(-1), torch.ones(1, 3))


def test_posterior_weights_follow_the_prefix_likelihood():
    p1, p2 = [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]
    ens = EnsembleLM([FixedLM(p1), FixedLM(p2)], weights="posterior")
    ids = torch.tensor([[0, 2, 2]])
    with torch.no_grad():
        out = ens(ids).logits.exp()[0]
    # position 0: no prefix -> uniform; position 2: prefix tokens x1 = 2, x2 = 2 were predicted
    assert torch.allclose(out[0], (torch.tensor(p1) + torch.tensor(p2)) / 2)
    w1, w2 = 0.25 * 0.25, 0.8 * 0.8
    want = (w1 * torch.tensor(p1) + w2 * torch.tensor(p2)) / (w1 + w2)
    assert torch.allclose(out[2], want, atol=1e-6)
    assert math.isclose(float(out[2, 2]), float(want[2]), rel_tol=1e-5)


def test_split_steps():
    assert split_steps(10, 3) == [4, 3, 3]
    assert sum(split_steps(100, 7)) == 100
    with pytest.raises(LangmoeError):
        split_steps(2, 3)
