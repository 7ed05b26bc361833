"""Tokenise a corpus into fixed-length, single-language blocks, the unit every sampler draws from.

Layout per language: the documents of a split, in corpus order, each preceded by the eos token
(``eos d1 eos d2 eos d3 ...``, the same stream `langmoe.eval.perplexity` scores), cut into blocks of `block_len`
tokens. Each block holds one language, so a batch can be labelled (and hard-routed) per token by language or
group. The last, partial block of a language is kept (padded, its padding masked out of the labels) when it holds
at least 2 tokens, so thin languages are never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langmoe.data.corpus import choose_languages
from langmoe.data.token_store import Request, TokenStore, default_token_store, tokenizer_fingerprint
from langmoe.errors import LangmoeError
from langmoe.io import write_with

Batch = dict[str, torch.Tensor]
IGNORE_INDEX = -100
PACK_VERSION = "1"  # the format of PackedBlocks.save files
_MIN_PARTIAL = 2


class LanguageIndex:
    """Language code <-> integer id (position in `codes`), with an optional language -> group map."""

    def __init__(self, codes: Sequence[str], group_of: Mapping[str, int] | None = None):
        codes = [str(c) for c in codes]
        if not codes:
            raise LangmoeError("a LanguageIndex needs at least one language code")
        if len(set(codes)) != len(codes):
            raise LangmoeError(f"duplicate language codes in {codes}: list each language once")
        self.codes: list[str] = codes
        self._ids = {c: i for i, c in enumerate(codes)}
        self.group_of: dict[str, int] | None = _check_groups(group_of, codes) if group_of is not None else None

    def __len__(self) -> int:
        return len(self.codes)

    def __contains__(self, code: object) -> bool:
        return code in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LanguageIndex) and self.to_dict() == other.to_dict()

    def id(self, code: str) -> int:
        try:
            return self._ids[code]
        except KeyError:
            raise LangmoeError(f"language {code!r} is not in this index ({', '.join(self.codes)})") from None

    def code(self, i: int) -> str:
        return self.codes[int(i)]

    def with_groups(self, group_of: Mapping[str, int] | None) -> LanguageIndex:
        return LanguageIndex(self.codes, group_of)

    def group_table(self, group_of: Mapping[str, int] | None = None) -> torch.Tensor:
        """LongTensor[L]: group id of each language id (-1 everywhere when there is no grouping)."""
        g = self.group_of if group_of is None else _check_groups(group_of, self.codes)
        if g is None:
            return torch.full((len(self.codes),), -1, dtype=torch.long)
        return torch.tensor([g[c] for c in self.codes], dtype=torch.long)

    def to_dict(self) -> dict[str, Any]:
        return {"codes": list(self.codes), "group_of": dict(self.group_of) if self.group_of is not None else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LanguageIndex:
        return cls(d["codes"], d.get("group_of"))


def _check_groups(group_of: Mapping[str, int], codes: Sequence[str]) -> dict[str, int]:
    missing = [c for c in codes if c not in group_of]
    if missing:
        raise LangmoeError(f"languages {', '.join(missing)} have no group: give every language a group id")
    out = {}
    for c in codes:
        g = group_of[c]
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or int(g) < 0:
            raise LangmoeError(f"group of {c!r} must be a non-negative integer, got {g!r}")
        out[c] = int(g)
    return out


class TensorRows:
    """Block rows held in memory: a LongTensor [N, T] (blocks built by hand, tests, `PackedBlocks.load`)."""

    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens

    @property
    def block_len(self) -> int:
        return int(self.tokens.shape[1])

    def take(self, idx: np.ndarray) -> torch.Tensor:
        return self.tokens[torch.as_tensor(idx, dtype=torch.long)]

    def subset(self, idx: np.ndarray) -> TensorRows:
        return TensorRows(self.take(idx))

    def all(self) -> torch.Tensor:
        return self.tokens


class StreamRows:
    """Block rows read on demand from token streams (`langmoe.data.token_store.TokenStream`): row i is tokens
    [start[i], start[i] + length[i]) of stream which[i], padded with `pad` to T. Memory per block: 3 numbers."""

    def __init__(self, streams: Sequence[Any], which: np.ndarray, start: np.ndarray, length: np.ndarray,
                 block_len: int, pad: int):
        self.streams, self.pad, self._T = list(streams), int(pad), int(block_len)
        self.which = np.asarray(which, dtype=np.int32)
        self.start = np.asarray(start, dtype=np.int64)
        self.length = np.asarray(length, dtype=np.int64)

    @property
    def block_len(self) -> int:
        return self._T

    def take(self, idx: np.ndarray) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64)
        out = np.full((len(idx), self._T), self.pad, dtype=np.int64)
        for r, i in enumerate(idx.tolist()):
            a, n = int(self.start[i]), int(self.length[i])
            out[r, :n] = self.streams[int(self.which[i])].read(a, a + n)
        return torch.from_numpy(out)

    def subset(self, idx: np.ndarray) -> StreamRows:
        idx = np.asarray(idx, dtype=np.int64)
        return StreamRows(self.streams, self.which[idx], self.start[idx], self.length[idx], self._T, self.pad)

    def all(self) -> torch.Tensor:
        return self.take(np.arange(len(self.start)))

    @staticmethod
    def concat(parts: Sequence[StreamRows]) -> StreamRows:
        streams: list[Any] = []
        which = []
        for p in parts:
            which.append(p.which + len(streams))
            streams.extend(p.streams)
        return StreamRows(streams, np.concatenate(which), np.concatenate([p.start for p in parts]),
                          np.concatenate([p.length for p in parts]), parts[0].block_len, parts[0].pad)


def _as_index_array(indices) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    arr = np.asarray(indices)
    if arr.dtype == bool:
        arr = np.flatnonzero(arr)
    return arr.astype(np.int64).reshape(-1)


class PackedBlocks:
    """Blocks of `block_len` tokens, one language per block (`lang[N]`); `lengths[N]` = real tokens (the rest is
    padding). The token rows live in memory (`tokens=`) or are read on demand from a token store's memory-mapped
    streams (`from_streams`): `batch`, `rows`, `subset` read only the blocks asked for. `tokens` materialises every
    row (fine for small data; use `rows` for large)."""

    def __init__(self, tokens: torch.Tensor | None = None, lang: torch.Tensor | None = None,
                 index: LanguageIndex | None = None, lengths: torch.Tensor | None = None,
                 meta: dict[str, Any] | None = None, *, rows: TensorRows | StreamRows | None = None):
        if (tokens is None) == (rows is None):
            raise ValueError("give exactly one of tokens [N, T] or rows")
        if lang is None or index is None:
            raise ValueError("PackedBlocks needs lang [N] and index")
        if tokens is not None:
            if tokens.dim() != 2:
                raise ValueError(f"tokens must be [N, T] and lang [N], got {tuple(tokens.shape)} and "
                                 f"{tuple(lang.shape)}")
            rows = TensorRows(tokens.long())
        n = len(rows.start) if isinstance(rows, StreamRows) else int(rows.tokens.shape[0])
        if lang.dim() != 1 or lang.shape[0] != n:
            raise ValueError(f"tokens must be [N, T] and lang [N], got {n} rows and {tuple(lang.shape)}")
        self._rows = rows
        self.lang = lang.long()
        self.index = index
        self.lengths = (torch.full((n,), rows.block_len, dtype=torch.long) if lengths is None else lengths.long())
        self.meta: dict[str, Any] = dict(meta or {})

    @classmethod
    def from_streams(cls, streams: Sequence[Any], counts: Sequence[int], block_len: int, index: LanguageIndex,
                     pad: int, meta: dict[str, Any] | None = None) -> PackedBlocks:
        """Blocks over the first `counts[l]` tokens of `streams[l]` (language id l): full blocks of `block_len`,
        then the partial tail when it holds at least 2 tokens (padded with `pad`, masked in the labels)."""
        which, start, length, lang = [], [], [], []
        for li, n in enumerate(counts):
            n_full, rest = divmod(int(n), block_len)
            nb = n_full + (1 if rest >= _MIN_PARTIAL else 0)
            s = np.arange(nb, dtype=np.int64) * block_len
            which.append(np.full(nb, li, dtype=np.int32))
            start.append(s)
            length.append(np.minimum(block_len, int(n) - s))
            lang.append(np.full(nb, li, dtype=np.int64))
        rows = StreamRows(streams, np.concatenate(which), np.concatenate(start), np.concatenate(length), block_len,
                          pad)
        return cls(lang=torch.from_numpy(np.concatenate(lang)), index=index,
                   lengths=torch.from_numpy(rows.length.copy()), meta=meta, rows=rows)

    def __len__(self) -> int:
        return int(self.lang.shape[0])

    @property
    def block_len(self) -> int:
        return self._rows.block_len

    @property
    def tokens(self) -> torch.Tensor:
        """Every row as a LongTensor [N, T] (read into memory for store-backed blocks)."""
        return self._rows.all()

    def rows(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """LongTensor [len(indices), T] of the given blocks (padding included)."""
        idx = _as_index_array(indices)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise LangmoeError(f"block index out of range [0, {len(self)}): {idx.tolist()[:8]}")
        return self._rows.take(idx)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> PackedBlocks:
        """The given blocks (indices or a boolean mask), same language index; reads nothing."""
        idx = _as_index_array(indices)
        t = torch.as_tensor(idx, dtype=torch.long)
        return PackedBlocks(lang=self.lang[t], index=self.index, lengths=self.lengths[t], meta=dict(self.meta),
                            rows=self._rows.subset(idx))

    def only(self, langs: Sequence[str]) -> PackedBlocks:
        """The blocks of `langs` (same language index, so ids and group labels stay valid)."""
        ids = torch.tensor([self.index.id(x) for x in langs], dtype=torch.long)
        return self.subset(torch.isin(self.lang, ids).numpy())

    def language(self, lang: str) -> PackedBlocks:
        """The blocks of one language as their own PackedBlocks (index [lang], language id 0)."""
        idx = self.indices_of(self.index.id(lang))
        view = self.subset(idx)
        return PackedBlocks(lang=torch.zeros(len(idx), dtype=torch.long), index=LanguageIndex([lang]),
                            lengths=view.lengths, meta=dict(self.meta), rows=view._rows)

    @classmethod
    def concat(cls, first: PackedBlocks, second: PackedBlocks) -> PackedBlocks:
        """`first`'s blocks then `second`'s, under the index first + second (second's language ids shifted)."""
        if first.block_len != second.block_len:
            raise LangmoeError("cannot merge blocks of different lengths")
        index = LanguageIndex(first.index.codes + second.index.codes)
        if isinstance(first._rows, StreamRows) and isinstance(second._rows, StreamRows) \
                and first._rows.pad == second._rows.pad:
            rows: TensorRows | StreamRows = StreamRows.concat([first._rows, second._rows])
        else:
            rows = TensorRows(torch.cat([first.tokens, second.tokens]))
        return cls(lang=torch.cat([first.lang, second.lang + len(first.index)]), index=index,
                   lengths=torch.cat([first.lengths, second.lengths]), rows=rows)

    def indices_of(self, lang_id: int) -> np.ndarray:
        """Block indices of one language id, ascending."""
        return np.flatnonzero(self.lang.numpy() == int(lang_id))

    def counts(self) -> dict[str, int]:
        """Blocks per language code (0 for a language with no block)."""
        c = torch.bincount(self.lang, minlength=len(self.index)).tolist()
        return {code: int(c[i]) for i, code in enumerate(self.index.codes)}

    def num_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int(self.lengths.sum())

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor, group_of: Mapping[str, int] | None = None
              ) -> Batch:
        """The Batch dict of the given blocks; `group_ids` is -1 only when neither `group_of` nor the index
        has a grouping (a grouping that misses a language in the batch is an error)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if idx.dim() != 1 or idx.numel() == 0:
            raise LangmoeError("batch() needs a non-empty 1-D list of block indices")
        if int(idx.min()) < 0 or int(idx.max()) >= len(self):
            raise LangmoeError(f"block index out of range [0, {len(self)}): {idx.tolist()}")
        input_ids = self._rows.take(idx.numpy()).clone()
        B, T = input_ids.shape
        labels = input_ids.clone()
        pad = torch.arange(T).unsqueeze(0) >= self.lengths[idx].unsqueeze(1)
        labels[pad] = IGNORE_INDEX
        lang = self.lang[idx]
        if group_of is not None:
            present = {self.index.code(i) for i in lang.unique().tolist()}
            missing = sorted(c for c in present if c not in group_of)
            if missing:
                raise LangmoeError(f"languages {', '.join(missing)} have no group: give every language a group id")
            table = torch.tensor([int(group_of.get(c, -1)) for c in self.index.codes], dtype=torch.long)
        else:
            table = self.index.group_table()
        return {
            "input_ids": input_ids,
            "labels": labels,
            "lang_ids": lang.unsqueeze(1).expand(B, T).contiguous(),
            "group_ids": table[lang].unsqueeze(1).expand(B, T).contiguous(),
        }

    # --- persistence -------------------------------------------------------------------------------------

    def _meta_json(self) -> str:
        return json.dumps({"index": self.index.to_dict(), "meta": self.meta, "version": PACK_VERSION})

    def save(self, path: str | Path) -> None:
        """Atomic write: `.safetensors` by suffix, anything else with torch.save (tensors + JSON metadata)."""
        path = Path(path)
        top = int(self.tokens.max()) if self.tokens.numel() else 0
        dtype = torch.int32 if top < 2**31 else torch.long
        tensors = {"tokens": self.tokens.to(dtype).contiguous(), "lang": self.lang.contiguous(),
                   "lengths": self.lengths.contiguous()}
        meta = self._meta_json()
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            write_with(path, lambda p: save_file(tensors, str(p), metadata={"langmoe": meta}))
        else:
            write_with(path, lambda p: torch.save({**tensors, "langmoe": meta}, str(p)))

    @classmethod
    def load(cls, path: str | Path) -> PackedBlocks:
        path = Path(path)
        if not path.is_file():
            raise LangmoeError(f"packed blocks file {path} does not exist: pack the corpus first")
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata()["langmoe"]
                    data = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
            else:
                data = torch.load(str(path), map_location="cpu", weights_only=True)
                meta = data.pop("langmoe")
            info = json.loads(meta)
        except Exception as e:  # noqa: BLE001 - any corrupt or foreign file
            raise LangmoeError(f"{path} is not a packed-blocks file ({type(e).__name__}): delete it and repack") from e
        if info.get("version") != PACK_VERSION:
            raise LangmoeError(f"{path} was packed by another langmoe version: delete it and repack")
        return cls(tokens=data["tokens"].long(), lang=data["lang"], index=LanguageIndex.from_dict(info["index"]),
                   lengths=data["lengths"], meta=info.get("meta", {}))


# --- packing ---------------------------------------------------------------------------------------------------


def check_block_len(model_config: Any, block_len: int) -> None:
    """A block must fit the model's position table (Llama `max_position_embeddings`, GPT-2 `n_positions` ...)."""
    if block_len < 2:
        raise LangmoeError(f"block_len must be at least 2 tokens, got {block_len}")
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        limit = getattr(model_config, attr, None)
        if isinstance(limit, int) and limit > 0:
            if block_len > limit:
                raise LangmoeError(f"block_len {block_len} exceeds the model's {attr}={limit}: lower block_len "
                                  "to the model's max positions or less")
            return


def train_tokens_needed(max_tokens_per_lang: int | None, budget_tokens: int | None) -> int | None:
    """The train tokens a run packs per language: `max_tokens_per_lang` when it is set (the run's data is what the
    user capped it to, whatever the budget: runs of different lengths then share their blocks), else the run's
    whole token budget (steps x sequences per step x block length; one language can never supply more), else all.
    """
    if max_tokens_per_lang is not None:
        return int(max_tokens_per_lang)
    return int(budget_tokens) if budget_tokens is not None else None


def open_token_store(token_store: Any, tokenizer, cache_dir: str | Path | None = None, progress: str = "auto"):
    """The store `pack_corpus` reads: a given TokenStore, a folder the user named (`--token-store`, directly or via
    `using_token_store`: checked, never replaced), a langmoe-owned one under `cache_dir/tokens`, or a temporary
    one."""
    if token_store is None:
        token_store = default_token_store()
    if isinstance(token_store, TokenStore):
        if token_store.fingerprint != tokenizer_fingerprint(tokenizer):
            raise LangmoeError(f"token store {token_store.root} was opened for another tokenizer than the one packing "
                               "uses: open it with the model's tokenizer")
        return token_store
    if token_store is not None:
        return TokenStore(token_store, tokenizer, progress=progress)
    if cache_dir is not None:
        return TokenStore(Path(cache_dir) / "tokens", tokenizer, owned=True, progress=progress)
    return TokenStore.temporary(tokenizer, progress=progress)


def pack_corpus(
    corpus,
    tokenizer,
    langs: Sequence[str],
    split: str,
    block_len: int,
    max_tokens_per_lang: int | None = None,
    group_of: Mapping[str, int] | None = None,
    cache_dir: str | Path | None = None,
    token_store: Any = None,
    progress: str = "auto",
) -> PackedBlocks:
    """Single-language blocks of `block_len` tokens over each language's stream `eos d1 eos d2 ...`, the first
    `max_tokens_per_lang` tokens of it (all when None).

    The streams come from a token store (`langmoe.data.token_store`): `token_store` (a TokenStore or a folder),
    else the one set by `using_token_store` (the CLI's `--token-store`), else a store langmoe keeps under
    `cache_dir/tokens`, else a temporary one. Only what is asked for is
    tokenised (and only once per store); blocks read the store's memory maps on demand.
    """
    langs = list(langs)
    if block_len < 2:
        raise LangmoeError(f"block_len must be at least 2 tokens, got {block_len}")
    if max_tokens_per_lang is not None and max_tokens_per_lang <= 0:
        raise LangmoeError(f"max_tokens_per_lang must be positive, got {max_tokens_per_lang}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise LangmoeError("the tokenizer has no eos token: set tokenizer.eos_token so documents can be separated")
    index = LanguageIndex(langs, group_of)
    choose_languages(corpus, langs)
    store = open_token_store(token_store, tokenizer, cache_dir, progress)
    got = store.ensure(corpus, [Request(lang, split, tokens=max_tokens_per_lang) for lang in langs])
    streams = [got[(lang, split)] for lang in langs]
    counts = [len(st) if max_tokens_per_lang is None else min(len(st), max_tokens_per_lang) for st in streams]
    blocks = PackedBlocks.from_streams(streams, counts, block_len, index, store.pad)
    if len(blocks) == 0:
        raise LangmoeError(f"no {split} text to pack for {', '.join(langs)}: add documents or choose another split")
    n_blocks = blocks.counts()
    blocks.meta = {"split": split, "block_len": block_len, "max_tokens_per_lang": max_tokens_per_lang,
                   "per_lang": {lang: {"tokens": int(n), "blocks": n_blocks[lang]} for lang, n in zip(langs, counts,
                                                                                               strict=True)},
                   "eos": int(eos)}
    return blocks


__all__ = ["IGNORE_INDEX", "Batch", "LanguageIndex", "PackedBlocks", "StreamRows", "TensorRows", "check_block_len",
           "open_token_store", "pack_corpus", "tokenizer_fingerprint", "train_tokens_needed"]
