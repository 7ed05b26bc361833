"""Each language's blocks are reshuffled every epoch: epoch 1's order differs from epoch 0's, the same seed gives
the same orders (a resumed run replays them), another seed other orders."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_samplers_independent import SIZES, lang_of_block, make_blocks  # noqa: E402

from langmoe.data.samplers import TemperatureSampler  # noqa: E402


def _orders(seed: int, draws: int = 300) -> dict[str, list[list[int]]]:
    """Per language: the block order of each full epoch."""
    s = TemperatureSampler(make_blocks(), 5, tau=0.5, seed=seed)
    owner = lang_of_block()
    seq: dict[str, list[int]] = {c: [] for c in SIZES}
    for d in range(draws):
        for i in s.indices(d, 0):
            seq[owner[i]].append(i)
    return {c: [seq[c][e * n:(e + 1) * n] for e in range(len(seq[c]) // n)] for c, n in SIZES.items()}


def test_epochs_are_reshuffled_and_reproducible():
    a, again, other = _orders(11), _orders(11), _orders(12)
    assert a == again  # same seed: the same orders, epoch by epoch
    for c in ("b", "c"):  # 8 and 27 blocks: two epochs in the same order by chance is (1/8! or less)
        assert len(a[c]) >= 2, c
        assert a[c][0] != a[c][1], f"{c}: epoch 1 repeats epoch 0's order"
        assert sorted(a[c][0]) == sorted(a[c][1])
        assert a[c][0] != other[c][0], f"{c}: another seed gives the same order"
    assert len({tuple(e) for e in a["b"]}) > 1
