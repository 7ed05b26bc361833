"""Batch sources that are pure functions of (seed, step, micro, rank, world): resume is exact, ranks are disjoint.

How a micro-batch is drawn (no state is carried from one call to the next):

- Draws are numbered densely, ``d = step * grad_accum + micro``; a draw is one *global* micro-batch of
  ``S = world * batch_size`` blocks and rank ``r`` gets slots ``[r*B, (r+1)*B)``. So the ranks of a world of
  size W together hold exactly the world-1 micro-batch of a sampler built with ``batch_size * W``.
- Quota streams instead of independent draws: a stream over items with probabilities ``p`` is cut into periods
  of P positions; each period holds exactly ``round(p_i * P)`` copies of item i (largest remainder), shuffled by
  a generator seeded with (seed, stream, period). How often item i occurred before position k is then
  arithmetic (``period * q_i`` plus a count inside one period), which gives every language a counter.
- Each language walks through its blocks in a permutation seeded by (seed, language, epoch), the epoch being
  ``counter // n_blocks``: every block of a language is used once before any is repeated.
- `TemperatureSampler`: one stream over languages with ``p_l ∝ n_blocks_l ** tau``; micro-batches are mixed.
- `HomogeneousSampler`: a stream over units (languages or groups) picks one unit per draw (equal budget: every
  unit exactly the same number of draws per period; else ``∝ size ** tau``), then a per-unit stream over its
  languages (``∝ n_blocks ** tau``) fills the slots. Every micro-batch (all ranks) is one language or one group.
- `SideBySideSource` puts the rows of several sources next to each other; `ReplayMixSource` swaps an evenly
  spread share of a source's rows for rows of a replay source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch

from langmoe.data.packing import Batch, PackedBlocks, _check_groups
from langmoe.errors import LangmoeError


class BatchSource(Protocol):
    def get(self, step: int, micro: int, rank: int = 0, world: int = 1) -> Batch: ...


def _quotas(weights: np.ndarray, period: int) -> np.ndarray:
    """Integer counts per item summing to `period`, proportional to `weights` (largest remainder, ties by
    index); an item with positive weight gets at least 1."""
    p = weights / weights.sum()
    raw = p * period
    q = np.floor(raw).astype(np.int64)
    rest = period - int(q.sum())
    order = np.lexsort((np.arange(len(p)), -(raw - q)))
    q[order[:rest]] += 1
    for i in np.flatnonzero((q == 0) & (weights > 0)):
        q[int(np.argmax(q))] -= 1
        q[i] += 1
    return q


class _QuotaStream:
    """Position k -> (item, how many earlier positions hold that item), with exact quotas per period."""

    def __init__(self, weights: np.ndarray, period: int, key: tuple[int, ...]):
        self.q = _quotas(np.asarray(weights, dtype=np.float64), period)
        self.P = int(self.q.sum())
        self.key = key
        self._cache: dict[int, np.ndarray] = {}

    @property
    def probs(self) -> np.ndarray:
        return self.q / self.P

    def _period(self, n: int) -> np.ndarray:
        arr = self._cache.get(n)
        if arr is None:
            arr = np.repeat(np.arange(len(self.q)), self.q)
            np.random.default_rng([*self.key, n]).shuffle(arr)
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[n] = arr
        return arr

    def take(self, k0: int, count: int) -> tuple[list[int], list[int]]:
        items: list[int] = []
        counters: list[int] = []
        k = k0
        while len(items) < count:
            per, pos = divmod(k, self.P)
            arr = self._period(per)
            base = per * self.q + np.bincount(arr[:pos], minlength=len(self.q))
            n = min(count - len(items), self.P - pos)
            for it in arr[pos:pos + n].tolist():
                items.append(it)
                counters.append(int(base[it]))
                base[it] += 1
            k += n
        return items, counters


class _Engine:
    """Units (lists of language ids) drawn by one stream; languages inside a unit by per-unit streams."""

    def __init__(self, blocks: PackedBlocks, units: list[list[int]], unit_weights: np.ndarray, tau: float,
                 seed: int, unit_period: int):
        self.blocks = blocks
        self.seed = int(seed)
        self.by_lang = {li: blocks.indices_of(li) for u in units for li in u}
        self.units = units
        self.unit_stream = _QuotaStream(unit_weights, unit_period, (self.seed, 1))
        self.lang_streams = []
        for ui, u in enumerate(units):
            sizes = np.array([len(self.by_lang[li]) for li in u], dtype=np.float64)
            self.lang_streams.append(_QuotaStream(sizes**tau, 1024 * len(u), (self.seed, 2, ui)))
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _block(self, li: int, counter: int) -> int:
        idx = self.by_lang[li]
        epoch, pos = divmod(counter, len(idx))
        perm = self._perms.get((li, epoch))
        if perm is None:
            perm = np.random.default_rng([self.seed, 3, li, epoch]).permutation(len(idx))
            if len(self._perms) >= 256:
                self._perms.pop(next(iter(self._perms)))
            self._perms[(li, epoch)] = perm
        return int(idx[perm[pos]])

    def draw(self, d: int, S: int) -> tuple[int, list[int]]:
        """The unit and the S block indices of global draw d."""
        (ui,), (r,) = self.unit_stream.take(d, 1)
        pos, ctr = self.lang_streams[ui].take(r * S, S)
        u = self.units[ui]
        return ui, [self._block(u[p], c) for p, c in zip(pos, ctr, strict=True)]

    def lang_probabilities(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for ui, u in enumerate(self.units):
            for li, p in zip(u, self.lang_streams[ui].probs, strict=True):
                out[self.blocks.index.code(li)] = float(self.unit_stream.probs[ui] * p)
        return out


class _SamplerBase:
    batch_size: int
    grad_accum: int
    group_of: dict[str, int] | None
    _engine: _Engine

    def _check(self, step: int, micro: int, rank: int, world: int) -> None:
        if step < 0:
            raise LangmoeError(f"step must be non-negative, got {step}")
        if not 0 <= micro < self.grad_accum:
            raise LangmoeError(f"micro {micro} is outside [0, grad_accum={self.grad_accum}): build the sampler with "
                               "grad_accum equal to the trainer's")
        if world < 1 or not 0 <= rank < world:
            raise LangmoeError(f"rank {rank} is outside world size {world}")

    def indices(self, step: int, micro: int, rank: int = 0, world: int = 1) -> list[int]:
        """Block indices of this rank's micro-batch."""
        self._check(step, micro, rank, world)
        _, idx = self._engine.draw(step * self.grad_accum + micro, world * self.batch_size)
        return idx[rank * self.batch_size:(rank + 1) * self.batch_size]

    def get(self, step: int, micro: int, rank: int = 0, world: int = 1) -> Batch:
        return self._engine.blocks.batch(self.indices(step, micro, rank, world), group_of=self.group_of)

    def lang_probabilities(self) -> dict[str, float]:
        """Marginal probability that a slot holds each language (exact quota frequencies)."""
        return self._engine.lang_probabilities()


def _groups_for(blocks: PackedBlocks, group_of: Mapping[str, int] | None) -> dict[str, int] | None:
    """Validate a grouping for the languages that have blocks (others may be left out)."""
    if group_of is None:
        return None
    counts = blocks.counts()
    return _check_groups(group_of, [c for c in blocks.index.codes if counts[c] > 0])


def _check_common(blocks: PackedBlocks, batch_size: int, tau: float, grad_accum: int) -> None:
    if batch_size < 1:
        raise LangmoeError(f"batch_size must be at least 1, got {batch_size}")
    if grad_accum < 1:
        raise LangmoeError(f"grad_accum must be at least 1, got {grad_accum}")
    if not tau >= 0:
        raise LangmoeError(f"tau must be non-negative (0 = uniform over languages, 1 = proportional), got {tau}")
    if len(blocks) == 0:
        raise LangmoeError("there are no packed blocks to sample from: pack more text or lower block_len")


class TemperatureSampler(_SamplerBase):
    """Mixed micro-batches; language l fills a slot with probability ∝ n_blocks_l ** tau (languages without
    blocks are skipped). `group_of` (default: the blocks' index grouping) only labels `group_ids`."""

    def __init__(self, blocks: PackedBlocks, batch_size: int, tau: float = 0.3, seed: int = 0,
                 group_of: Mapping[str, int] | None = None, grad_accum: int = 1):
        _check_common(blocks, batch_size, tau, grad_accum)
        self.batch_size, self.grad_accum, self.tau, self.seed = int(batch_size), int(grad_accum), float(tau), seed
        self.group_of = _groups_for(blocks, group_of)
        counts = blocks.counts()
        langs = [blocks.index.id(c) for c, n in counts.items() if n > 0]
        self._engine = _Engine(blocks, [langs], np.ones(1), self.tau, seed, unit_period=1)


class HomogeneousSampler(_SamplerBase):
    """Every micro-batch (across all ranks) holds one language (`by="lang"`) or one group (`by="group"`).

    Units get equal numbers of micro-batches (`equal_group_budget`, exact per period of 16 draws per unit) or
    numbers ∝ (unit blocks) ** tau; inside a group, languages fill slots ∝ n_blocks ** tau.
    """

    def __init__(self, blocks: PackedBlocks, batch_size: int, by: str = "group",
                 group_of: Mapping[str, int] | None = None, tau: float = 0.3, seed: int = 0,
                 equal_group_budget: bool = True, grad_accum: int = 1):
        _check_common(blocks, batch_size, tau, grad_accum)
        if by not in ("lang", "group"):
            raise LangmoeError(f"by must be 'lang' or 'group', got {by!r}")
        self.batch_size, self.grad_accum, self.tau, self.seed = int(batch_size), int(grad_accum), float(tau), seed
        self.by, self.equal_group_budget = by, bool(equal_group_budget)
        gmap = group_of if group_of is not None else blocks.index.group_of
        self.group_of = _groups_for(blocks, gmap)
        counts = blocks.counts()
        if by == "lang":
            units = [[blocks.index.id(c)] for c, n in counts.items() if n > 0]
            self.unit_names: list[Any] = [blocks.index.code(u[0]) for u in units]
        else:
            if self.group_of is None:
                raise LangmoeError("by='group' needs group_of (language -> group id) or blocks with a grouping")
            gids = sorted(set(self.group_of.values()))
            units = []
            for g in gids:
                units.append([blocks.index.id(c) for c, n in counts.items() if n > 0 and self.group_of[c] == g])
            empty = sorted({int(v) for c, v in gmap.items() if c in counts and isinstance(v, (int, np.integer))}
                           - set(gids))
            if empty:
                members = [c for c, v in gmap.items() if int(v) == empty[0]]
                raise LangmoeError(f"group {empty[0]} ({', '.join(members)}) has no packed blocks: add text for one "
                                   "of its languages or regroup")
            self.unit_names = gids
        sizes = np.array([sum(counts[blocks.index.code(li)] for li in u) for u in units], dtype=np.float64)
        if self.equal_group_budget:
            weights, period = np.ones(len(units)), 16 * len(units)
        else:
            weights, period = sizes**self.tau, 1024 * len(units)
        self._engine = _Engine(blocks, units, weights, self.tau, seed, unit_period=period)

    def unit_of(self, step: int, micro: int) -> Any:
        """The language code or group id of a micro-batch."""
        self._check(step, micro, 0, 1)
        (ui,), _ = self._engine.unit_stream.take(step * self.grad_accum + micro, 1)
        return self.unit_names[ui]


class SideBySideSource:
    """Micro-batches made of the rows of several sources side by side (e.g. new-language rows next to a replay of
    old-language rows); a pure function of (step, micro, rank, world) when every source is."""

    def __init__(self, *sources: BatchSource | None):
        self.sources = [x for x in sources if x is not None]

    def get(self, step: int, micro: int, rank: int = 0, world: int = 1) -> Batch:
        parts = [x.get(step, micro, rank, world) for x in self.sources]
        return {k: torch.cat([p[k] for p in parts]) for k in ("input_ids", "labels", "group_ids")}


class ReplayMixSource:
    """Micro-batches of `new` blocks in which an evenly spread `old_share` of the rows (counted over the global row
    number, so over steps, micro-batches and ranks) come from the `old` (replay) blocks instead. Each part is drawn
    by its own `TemperatureSampler` (`tau`; seeds `seed` and `seed + 7`); rows are read from `merged`, `new`'s blocks
    followed by `old`'s. A pure function of (step, micro, rank, world)."""

    def __init__(self, new: PackedBlocks, old: PackedBlocks | None, merged: PackedBlocks, batch_size: int,
                 old_share: float, tau: float = 0.3, seed: int = 0, grad_accum: int = 1):
        if not 0 <= old_share <= 1:
            raise LangmoeError(f"old-language share of stage 2 must be in [0, 1], got {old_share:.3f}: raise "
                               "stage2.steps or lower replay_share")
        if old_share > 0 and old is None:
            raise LangmoeError("a replay share needs old-language replay blocks")
        self.merged, self.B, self.share, self.grad_accum = merged, int(batch_size), float(old_share), int(grad_accum)
        self.new = TemperatureSampler(new, batch_size, tau=tau, seed=seed, grad_accum=grad_accum)
        self.old = (TemperatureSampler(old, batch_size, tau=tau, seed=seed + 7, grad_accum=grad_accum)
                    if old is not None and old_share > 0 else None)
        self.offset = len(new)

    def is_old_row(self, g: int) -> bool:
        return math.floor((g + 1) * self.share) - math.floor(g * self.share) >= 1

    def get(self, step: int, micro: int, rank: int = 0, world: int = 1) -> Batch:
        new_idx = self.new.indices(step, micro, rank, world)
        old_idx = self.old.indices(step, micro, rank, world) if self.old is not None else None
        base = ((step * self.grad_accum + micro) * world + rank) * self.B
        idx = [old_idx[j] + self.offset if old_idx is not None and self.is_old_row(base + j) else new_idx[j]
               for j in range(self.B)]
        return self.merged.batch(idx)
