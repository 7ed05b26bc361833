"""Samplers against hand computations, at temperatures where tau, 1/tau, 1 and 0 all give different answers.

Frequencies are counted from what the sampler actually returns over whole quota periods (where they are exact up
to one largest-remainder rounding per item), never read from the sampler's own probability table alone.
"""

from collections import Counter

import pytest
import torch

from langmoe.data.packing import LanguageIndex, PackedBlocks
from langmoe.data.samplers import HomogeneousSampler, TemperatureSampler

# Block counts chosen so that n**0.3, n**0.5, n**1, n**(1/0.3) and uniform are all far apart.
SIZES = {"a": 1, "b": 8, "c": 27, "d": 4}
GROUPS = {"a": 0, "b": 0, "c": 1, "d": 2}


def make_blocks(sizes=SIZES, group_of=None):
    lang = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes.values())])
    tokens = torch.arange(len(lang)).unsqueeze(1).repeat(1, 3)  # block i holds token i
    return PackedBlocks(tokens=tokens, lang=lang, index=LanguageIndex(list(sizes), group_of))


def lang_of_block(sizes=SIZES) -> list[str]:
    return [c for c, n in sizes.items() for _ in range(n)]


def hand_probs(sizes: dict[str, int], tau: float) -> dict[str, float]:
    w = {c: float(n) ** tau for c, n in sizes.items()}
    z = sum(w.values())
    return {c: v / z for c, v in w.items()}


@pytest.mark.parametrize("tau", [0.3, 0.5])
def test_temperature_slot_frequencies_follow_n_to_the_tau(tau):
    b = make_blocks()
    bs = 8
    s = TemperatureSampler(b, bs, tau=tau, seed=5)
    period = 1024 * len(SIZES)  # the language stream's quota period
    owner = lang_of_block()
    seen = Counter(owner[i] for d in range(period // bs) for i in s.indices(d, 0))
    expected = hand_probs(SIZES, tau)
    for c in SIZES:
        assert seen[c] / period == pytest.approx(expected[c], abs=1.5 / period), (c, seen)
    # the alternatives a wrong exponent would give are far away
    for wrong in (1.0, 1.0 / tau, 0.0, -tau):
        alt = hand_probs(SIZES, wrong)
        assert max(abs(seen[c] / period - alt[c]) for c in SIZES) > 0.05, wrong
    exact = s.lang_probabilities()
    assert all(exact[c] == pytest.approx(expected[c], abs=1 / period) for c in SIZES)


@pytest.mark.parametrize("tau", [0.3, 0.5])
def test_group_budget_proportional_to_group_size_to_the_tau(tau):
    b = make_blocks()
    s = HomogeneousSampler(b, 2, by="group", group_of=GROUPS, tau=tau, seed=1, equal_group_budget=False)
    sizes = {0: SIZES["a"] + SIZES["b"], 1: SIZES["c"], 2: SIZES["d"]}  # 9, 27, 4 blocks
    period = 1024 * 3
    units = Counter(s.unit_of(d, 0) for d in range(period))
    w = {g: n**tau for g, n in sizes.items()}
    z = sum(w.values())
    for g in sizes:
        assert units[g] / period == pytest.approx(w[g] / z, abs=1.5 / period), units
    inverted = {g: n ** (1 / tau) for g, n in sizes.items()}
    zi = sum(inverted.values())
    assert max(abs(units[g] / period - inverted[g] / zi) for g in sizes) > 0.1


def test_equal_group_budget_is_exact_per_period():
    b = make_blocks()
    s = HomogeneousSampler(b, 2, by="group", group_of=GROUPS, tau=0.3, seed=2, equal_group_budget=True)
    for start in (0, 48, 96):  # every period of 16 draws per group
        units = Counter(s.unit_of(d, 0) for d in range(start, start + 48))
        assert units == {0: 16, 1: 16, 2: 16}


def test_languages_inside_a_group_follow_n_to_the_tau_and_batches_are_homogeneous():
    tau = 0.5
    b = make_blocks()
    bs = 4
    s = HomogeneousSampler(b, bs, by="group", group_of=GROUPS, tau=tau, seed=3, equal_group_budget=True)
    owner = lang_of_block()
    in_group0 = Counter()
    draws = 0
    d = 0
    while draws < 2048 // bs:  # group 0's language stream: period 1024 * 2 positions, bs per draw
        g = s.unit_of(d, 0)
        langs = [owner[i] for i in s.indices(d, 0)]
        assert {GROUPS[x] for x in langs} == {g}, (d, g, langs)  # one group per micro-batch
        if g == 0:
            in_group0.update(langs)
            draws += 1
        d += 1
    total = sum(in_group0.values())
    expected = hand_probs({"a": 1, "b": 8}, tau)  # 1 : 2.83
    assert in_group0["a"] / total == pytest.approx(expected["a"], abs=2 / total)
    assert in_group0["b"] / total == pytest.approx(expected["b"], abs=2 / total)


def test_homogeneous_by_lang_one_language_per_micro_batch_across_ranks():
    b = make_blocks()
    s = HomogeneousSampler(b, 3, by="lang", tau=0.3, seed=4)
    owner = lang_of_block()
    for d in range(40):
        lang = s.unit_of(d, 0)
        both = s.indices(d, 0, rank=0, world=2) + s.indices(d, 0, rank=1, world=2)
        assert {owner[i] for i in both} == {lang}


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_are_slices_of_the_global_micro_batch(world):
    b = make_blocks()
    bs = 2
    per_rank = TemperatureSampler(b, bs, tau=0.5, seed=9, grad_accum=2)
    glob = TemperatureSampler(b, bs * world, tau=0.5, seed=9, grad_accum=2)
    for step in range(6):
        for micro in range(2):
            parts = [per_rank.indices(step, micro, rank=r, world=world) for r in range(world)]
            assert all(len(p) == bs for p in parts)
            assert sum(parts, []) == glob.indices(step, micro)  # rank r holds slots [r*B, (r+1)*B)
            # the batch tensors follow the indices
            batch = per_rank.get(step, micro, rank=1, world=world)
            assert batch["input_ids"][:, 0].tolist() == parts[1]


def test_every_block_of_a_language_is_used_once_per_epoch():
    b = make_blocks()
    s = TemperatureSampler(b, 5, tau=0.5, seed=11)
    owner = lang_of_block()
    first_of = {c: owner.index(c) for c in SIZES}
    per_lang: dict[str, list[int]] = {c: [] for c in SIZES}
    for d in range(300):
        for i in s.indices(d, 0):
            per_lang[owner[i]].append(i)
    for c, n in SIZES.items():
        seq = per_lang[c]
        full_epochs = len(seq) // n
        assert full_epochs >= 2, c
        for e in range(full_epochs):
            assert sorted(seq[e * n:(e + 1) * n]) == list(range(first_of[c], first_of[c] + n)), (c, e)
