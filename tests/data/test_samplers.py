from collections import Counter

import numpy as np
import pytest
import torch

from langmoe.data.packing import LanguageIndex, PackedBlocks
from langmoe.data.samplers import HomogeneousSampler, TemperatureSampler
from langmoe.errors import LangmoeError

SIZES = {"a": 40, "b": 10, "c": 3, "d": 1}


def make_blocks(sizes=SIZES, group_of=None, T=4):
    lang = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes.values())])
    tokens = torch.arange(len(lang)).unsqueeze(1).repeat(1, T)  # block i holds token i: easy to identify
    return PackedBlocks(tokens=tokens, lang=lang, index=LanguageIndex(list(sizes), group_of))


def ids(batch):
    return batch["input_ids"][:, 0].tolist()


@pytest.mark.parametrize("make", [
    lambda b, bs, s: TemperatureSampler(b, bs, tau=0.3, seed=s),
    lambda b, bs, s: HomogeneousSampler(b, bs, by="lang", seed=s),
    lambda b, bs, s: HomogeneousSampler(b, bs, by="group", group_of={"a": 0, "b": 1, "c": 1, "d": 2}, seed=s),
])
def test_pure_function_of_step_and_ranks_disjoint(make):
    b = make_blocks()
    s1, s2 = make(b, 2, 7), make(b, 2, 7)
    steps = [0, 1, 5, 999, 123456]
    assert [ids(s1.get(t, 0)) for t in steps] == [ids(s2.get(t, 0)) for t in reversed(steps)][::-1]
    assert [ids(make(b, 2, 8).get(t, 0)) for t in range(20)] != [ids(s1.get(t, 0)) for t in range(20)]
    wide = make(b, 4, 7)  # world 1 with the global micro-batch size
    for t in range(30):
        assert ids(s1.get(t, 0, rank=0, world=2)) + ids(s1.get(t, 0, rank=1, world=2)) == ids(wide.get(t, 0))


def test_grad_accum_numbering():
    b = make_blocks()
    acc = TemperatureSampler(b, 3, seed=1, grad_accum=2)
    flat = TemperatureSampler(b, 3, seed=1)
    for t in range(10):
        for m in range(2):
            assert ids(acc.get(t, m)) == ids(flat.get(2 * t + m, 0))
    with pytest.raises(LangmoeError, match="grad_accum"):
        flat.get(0, 1)
    with pytest.raises(LangmoeError, match="rank 2"):
        flat.get(0, 0, rank=2, world=2)


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0])
def test_temperature_probabilities(tau):
    b = make_blocks()
    s = TemperatureSampler(b, 8, tau=tau, seed=3)
    w = np.array(list(SIZES.values()), dtype=float) ** tau
    expected = w / w.sum()
    exact = s.lang_probabilities()
    assert np.allclose([exact[c] for c in SIZES], expected, atol=1 / 1024)
    counts = Counter()
    for t in range(1500):
        counts.update(s.get(t, 0)["lang_ids"][:, 0].tolist())
    freq = np.array([counts[i] for i in range(4)]) / 12000
    assert np.allclose(freq, expected, atol=0.01)
    batches = [set(s.get(t, 0)["lang_ids"][:, 0].tolist()) for t in range(50)]
    assert any(len(x) > 1 for x in batches)  # micro-batches are mixed


def test_every_block_once_before_repeats():
    b = make_blocks()
    s = TemperatureSampler(b, 5, tau=1.0, seed=0)
    seen = {i: [] for i in range(4)}
    for t in range(60):
        batch = s.get(t, 0)
        for blk, lang in zip(ids(batch), batch["lang_ids"][:, 0].tolist(), strict=True):
            seen[lang].append(blk)
    for lang, blocks in seen.items():
        n = list(SIZES.values())[lang]
        own = set(b.indices_of(lang).tolist())
        full = len(blocks) // n
        assert full >= 1
        for e in range(full):  # each epoch is a permutation of the language's blocks
            assert sorted(blocks[e * n:(e + 1) * n]) == sorted(own)


def test_homogeneous_by_lang_and_equal_budget():
    b = make_blocks()
    s = HomogeneousSampler(b, 4, by="lang", seed=2)
    units = []
    for t in range(16 * 4):
        for r in range(2):
            langs = set(s.get(t, 0, rank=r, world=2)["lang_ids"].flatten().tolist())
            assert len(langs) == 1
        units.append(s.unit_of(t, 0))
        assert s.get(t, 0, 0, 2)["lang_ids"][0, 0] == b.index.id(units[-1])
    assert Counter(units) == {c: 16 for c in SIZES}  # exact equal budget per period
    assert s.get(0, 0)["group_ids"].eq(-1).all()  # no grouping given


def test_homogeneous_by_group():
    group_of = {"a": 0, "b": 1, "c": 1, "d": 1}
    b = make_blocks(group_of=group_of)
    s = HomogeneousSampler(b, 6, by="group", tau=1.0, seed=4)
    in_group1 = Counter()
    per_group = Counter()
    for t in range(384):  # 12 periods of 16 draws per group
        batch = s.get(t, 0)
        g = batch["group_ids"]
        assert g.ne(-1).all() and g.unique().numel() == 1
        assert g[0, 0].item() == s.unit_of(t, 0)
        per_group[g[0, 0].item()] += 1
        langs = [b.index.code(x) for x in batch["lang_ids"][:, 0].tolist()]
        assert {group_of[x] for x in langs} == {g[0, 0].item()}
        if g[0, 0].item() == 1:
            in_group1.update(langs)
    assert per_group[0] == per_group[1] == 192
    total = sum(in_group1.values())
    assert abs(in_group1["b"] / total - 10 / 14) < 0.02 and abs(in_group1["d"] / total - 1 / 14) < 0.02


def test_budget_proportional_and_temperature_group_labels():
    b = make_blocks()
    g = {"a": 0, "b": 1, "c": 1, "d": 1}
    s = HomogeneousSampler(b, 2, by="group", group_of=g, tau=1.0, equal_group_budget=False, seed=0)
    units = Counter(s.unit_of(t, 0) for t in range(2048))
    assert abs(units[0] / 2048 - 40 / 54) < 0.01
    t = TemperatureSampler(b, 4, group_of=g)
    for step in range(20):
        batch = t.get(step, 0)
        expect = torch.tensor([g[b.index.code(x)] for x in batch["lang_ids"][:, 0].tolist()])
        assert torch.equal(batch["group_ids"][:, 0], expect)


def test_sampler_errors():
    b = make_blocks()
    with pytest.raises(LangmoeError, match="needs group_of"):
        HomogeneousSampler(b, 2, by="group")
    with pytest.raises(LangmoeError, match="have no group"):
        HomogeneousSampler(b, 2, by="group", group_of={"a": 0})
    with pytest.raises(LangmoeError, match="by must be"):
        HomogeneousSampler(b, 2, by="script")
    with pytest.raises(LangmoeError, match="batch_size"):
        TemperatureSampler(b, 0)
    empty_lang = PackedBlocks(tokens=torch.zeros(2, 3, dtype=torch.long), lang=torch.zeros(2, dtype=torch.long),
                              index=LanguageIndex(["a", "b"]))
    with pytest.raises(LangmoeError, match="group 1 .*no packed blocks"):
        HomogeneousSampler(empty_lang, 2, by="group", group_of={"a": 0, "b": 1})
    s = TemperatureSampler(empty_lang, 2)  # languages without blocks are skipped
    assert s.get(0, 0)["lang_ids"].eq(0).all()
    # a grouping may leave out languages without blocks, but not one with blocks
    assert TemperatureSampler(empty_lang, 2, group_of={"a": 3}).get(0, 0)["group_ids"].eq(3).all()
    assert HomogeneousSampler(empty_lang, 2, by="group", group_of={"a": 3}).unit_of(5, 0) == 3
    with pytest.raises(LangmoeError, match="a have no group"):
        TemperatureSampler(empty_lang, 2, group_of={"b": 0})
