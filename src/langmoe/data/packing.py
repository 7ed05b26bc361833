"""Tokenise a corpus into fixed-length, single-language blocks, the unit every sampler draws from.

Layout per language: the documents of a split, in corpus order, each preceded by the eos token
(``eos d1 eos d2 eos d3 ...``, the same stream `langmoe.eval.perplexity` scores), cut into blocks of `block_len`
tokens. Each block holds one language, so a batch can be labelled (and hard-routed) per token by language or
group. The last, partial block of a language is kept (padded, its padding masked out of the labels) when it holds
at least 2 tokens, so thin languages are never dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langmoe.errors import LangmoeError
from langmoe.io import write_with

Batch = dict[str, torch.Tensor]
IGNORE_INDEX = -100
PACK_VERSION = "1"
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


@dataclass
class PackedBlocks:
    """`tokens[N, T]` with one language per block (`lang[N]`); `lengths[N]` = real tokens (rest is padding)."""

    tokens: torch.Tensor
    lang: torch.Tensor
    index: LanguageIndex
    lengths: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.tokens.dim() != 2 or self.lang.dim() != 1 or self.lang.shape[0] != self.tokens.shape[0]:
            raise ValueError(f"tokens must be [N, T] and lang [N], got {tuple(self.tokens.shape)} and "
                             f"{tuple(self.lang.shape)}")
        self.tokens = self.tokens.long()
        self.lang = self.lang.long()
        if self.lengths is None:
            self.lengths = torch.full((self.tokens.shape[0],), self.tokens.shape[1], dtype=torch.long)
        self.lengths = self.lengths.long()

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def block_len(self) -> int:
        return int(self.tokens.shape[1])

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
        input_ids = self.tokens[idx].clone()
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


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    h = hashlib.sha256(text.encode("utf-8"))
    h.update(f"|eos={tokenizer.eos_token_id}|pad={tokenizer.pad_token_id}".encode())
    return h.hexdigest()[:32]


def packing_cache_key(corpus, tokenizer, langs: Sequence[str], split: str, block_len: int,
                      max_tokens_per_lang: int | None = None) -> str:
    """Same corpus + tokenizer + parameters -> same key (the corpus part is `corpus_fingerprint`)."""
    from langmoe.data.corpus import corpus_fingerprint

    parts = [PACK_VERSION, corpus_fingerprint(corpus, list(langs), split), tokenizer_fingerprint(tokenizer),
             ",".join(langs), split, str(block_len), str(max_tokens_per_lang)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


def _lang_stream(corpus, tokenizer, lang: str, split: str, eos: int, max_tokens: int | None,
                 batch_chars: int) -> np.ndarray:
    """`eos d1 eos d2 ...` for one language, tokenised in batches of documents, cut at `max_tokens`."""
    chunks: list[np.ndarray] = []
    total = 0
    pending: list[str] = []
    pending_chars = 0
    done = False

    def flush():
        nonlocal total, done
        enc = tokenizer(pending, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
        for ids in enc:
            arr = np.empty(len(ids) + 1, dtype=np.int64)
            arr[0] = eos
            arr[1:] = ids
            if max_tokens is not None and total + len(arr) >= max_tokens:
                chunks.append(arr[: max_tokens - total])
                total = max_tokens
                done = True
                return
            chunks.append(arr)
            total += len(arr)

    limit = min(batch_chars, 8192)  # batches grow from small, so a small max_tokens reads little text
    for doc in corpus.iter_documents(lang, split):
        pending.append(doc.text)
        pending_chars += len(doc.text)
        if pending_chars >= limit:
            flush()
            pending, pending_chars = [], 0
            limit = min(batch_chars, 2 * limit)
            if done:
                break
    if pending and not done:
        flush()
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def pack_corpus(
    corpus,
    tokenizer,
    langs: Sequence[str],
    split: str,
    block_len: int,
    max_tokens_per_lang: int | None = None,
    group_of: Mapping[str, int] | None = None,
    cache_dir: str | Path | None = None,
    batch_chars: int = 200_000,
) -> PackedBlocks:
    """Tokenise each language's documents and cut them into single-language blocks of `block_len` tokens.

    With `cache_dir`, the result is stored under a key of (corpus, tokenizer, langs, split, block_len,
    max_tokens_per_lang) and later calls load it instead of tokenising again.
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
    from langmoe.data.corpus import choose_languages

    choose_languages(corpus, langs)
    cache_path = None
    if cache_dir is not None:
        key = packing_cache_key(corpus, tokenizer, langs, split, block_len, max_tokens_per_lang)
        cache_path = Path(cache_dir) / f"blocks-{key[:24]}.safetensors"
        if cache_path.is_file():
            blocks = PackedBlocks.load(cache_path)
            blocks.index = blocks.index.with_groups(group_of)  # the grouping is not part of the key
            return blocks
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    tok_parts: list[torch.Tensor] = []
    lang_parts: list[torch.Tensor] = []
    len_parts: list[torch.Tensor] = []
    per_lang: dict[str, dict[str, int]] = {}
    for li, lang in enumerate(langs):
        stream = _lang_stream(corpus, tokenizer, lang, split, eos, max_tokens_per_lang, batch_chars)
        n_full, rest = divmod(len(stream), block_len)
        blocks = stream[: n_full * block_len].reshape(n_full, block_len)
        lengths = [block_len] * n_full
        if rest >= _MIN_PARTIAL:
            last = np.full((1, block_len), pad, dtype=np.int64)
            last[0, :rest] = stream[n_full * block_len:]
            blocks = np.concatenate([blocks, last])
            lengths.append(rest)
        per_lang[lang] = {"tokens": int(len(stream)), "blocks": int(blocks.shape[0])}
        tok_parts.append(torch.from_numpy(np.ascontiguousarray(blocks)))
        lang_parts.append(torch.full((blocks.shape[0],), li, dtype=torch.long))
        len_parts.append(torch.tensor(lengths, dtype=torch.long))
    empty = [lang for lang in langs if per_lang[lang]["blocks"] == 0]
    if len(empty) == len(langs):
        raise LangmoeError(f"no {split} text to pack for {', '.join(langs)}: add documents or choose another split")
    out = PackedBlocks(
        tokens=torch.cat(tok_parts), lang=torch.cat(lang_parts), index=index, lengths=torch.cat(len_parts),
        meta={"split": split, "block_len": block_len, "max_tokens_per_lang": max_tokens_per_lang,
              "per_lang": per_lang, "eos": int(eos)},
    )
    if cache_path is not None:
        out.save(cache_path)
    return out
