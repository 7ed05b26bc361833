"""The token store: each (split, language) of a corpus tokenised once, on disk, read through memory maps.

Why: packing used to tokenise every document of every language into int64 tensors in memory before step 1. A
store holds, per (split, language), the stream `eos d1 eos d2 ...` (documents whole, in corpus order: exactly the
stream `pack_corpus` cuts into blocks and `langmoe.eval.perplexity` scores) as 2 bytes a token (4 when the
vocabulary has more than 65,536 entries), tokenised only as far as a run needs and extended later when a run
needs more. Blocks are slices of these streams (`PackedBlocks.from_streams`), so memory no longer grows with the
corpus and a prepared store starts training at once.

Layout of a store folder:

    manifest.json                   format version, tokenizer fingerprint, eos/pad ids, vocabulary size, dtype
    <split>/<lang>/state.json       corpus fingerprint of the language, finished shards (tokens, documents,
                                    sha256), documents/tokens/chars/bytes stored, whether the split is exhausted
    <split>/<lang>/00000.tokens     raw little-endian uint16/uint32 token ids
    <split>/<lang>/00000.docs.npy   int64 [documents, 4]: offset in the stream, tokens (with the eos), characters,
                                    UTF-8 bytes
    <split>/<lang>/00000.ids.jsonl  document ids, one JSON string a line

Nothing finished is lost: a shard's files are written to temp files and renamed, then `state.json` (which lists
the shards) is replaced; a kill leaves every listed shard whole, a rerun deletes the unlisted leftovers and goes on
after the last listed document. A shard ends at the first document boundary past `shard_tokens` tokens, or where a
request is met, so a rerun of an interrupted request writes the same shards as an uninterrupted one (tested by the
store's `content_hash`). Writers take a lock (`.lock`); readers need none (shards never change once listed).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from langmoe.data.corpus import SPLITS, BuiltinCorpus, FolderCorpus, language_fingerprint
from langmoe.data.parallel_tokenize import DocumentEncoder, TokenizeProgress, read_ahead
from langmoe.errors import LangmoeError
from langmoe.io import disk_error_message, fix_mode, is_disk_error, write_json

STORE_FORMAT = "langmoe-token-store"
STORE_VERSION = 1
MANIFEST = "manifest.json"
STATE = "state.json"
SHARD_TOKENS = 1 << 24  # 16M tokens: 32 MB a shard as uint16
SUMMARY_AFTER_S = 2.0  # a summary line on stderr for tokenising that took longer (shorter work stays quiet)
DOC_FIELDS = ("offset", "tokens", "chars", "bytes")


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's full definition and its eos/pad ids (what the stored ids depend on)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    h = hashlib.sha256(text.encode("utf-8"))
    h.update(f"|eos={tokenizer.eos_token_id}|pad={tokenizer.pad_token_id}".encode())
    return h.hexdigest()[:32]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocabularies up to 65,536), else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class ShardInfo(BaseModel):
    name: str
    tokens: int
    docs: int
    chars: int
    bytes: int
    sha256: str


class StreamState(BaseModel):
    """What one (split, language) stream holds; `exhausted`: every document of the split is stored."""

    corpus: str
    docs: int = 0
    tokens: int = 0
    chars: int = 0
    bytes: int = 0
    exhausted: bool = False
    shards: list[ShardInfo] = []


@dataclass(frozen=True)
class Request:
    """Store at least `tokens` tokens / `chars` characters of a split (None and None: all of it)."""

    lang: str
    split: str
    tokens: int | None = None
    chars: int | None = None

    def met_by(self, st: StreamState) -> bool:
        if st.exhausted:
            return True
        if self.tokens is None and self.chars is None:
            return False
        return (self.tokens is None or st.tokens >= self.tokens) and (self.chars is None or st.chars >= self.chars)


# ---- the store a command uses -------------------------------------------------------------------------------------

_DEFAULT: list[str | Path] = []


@contextmanager
def using_token_store(path: str | Path | None) -> Iterator[None]:
    """Within the block, packing and evaluation that are not given a store use the one at `path` (the CLI's
    `--token-store`; None changes nothing). Library code deep inside a method then needs no store argument."""
    if path is None:
        yield
        return
    _DEFAULT.append(path)
    try:
        yield
    finally:
        _DEFAULT.pop()


def check_store_folder(path: str | Path, option: str = "--token-store") -> Path:
    """Refuse, before any work, a path that cannot be a user's token store: empty, under a file, a file, or a
    folder that holds other things and no store manifest (nothing is written there)."""
    if not str(path).strip():
        raise LangmoeError(f"{option} is empty: give a value")
    p = Path(path).expanduser()
    for parent in [p, *p.parents]:
        if parent.exists() and not parent.is_dir():
            if parent == p:
                raise LangmoeError(f"{option} {p} is a file: give a folder (new, empty, or a token store)")
            raise LangmoeError(f"{option} {p}: {parent} is a file, not a folder: check the path")
        if parent.exists():
            break
    if p.is_dir() and not (p / MANIFEST).is_file() and any(x.name != ".lock" for x in p.iterdir()):
        raise LangmoeError(f"{p} is not a token store (no {MANIFEST}) and is not empty: give a new or empty "
                           f"folder for {option}")
    return p


def default_token_store() -> str | Path | None:
    return _DEFAULT[-1] if _DEFAULT else None


# ---- reading ----------------------------------------------------------------------------------------------------


class TokenStream:
    """One stored stream, read-only: `read(a, b)` copies tokens [a, b) out of the shards' memory maps (a slice may
    span shards); `docs()` is the document index, `ids()` the document ids."""

    _MAX_OPEN = 32  # memory maps kept open per stream (each holds a file descriptor)

    def __init__(self, folder: Path, state: StreamState, dtype: np.dtype, owner: Any = None):
        self.folder, self.state, self.dtype = folder, state, np.dtype(dtype)
        self._owner = owner  # keeps a temporary store's folder alive while blocks read from it
        sizes = [s.tokens for s in state.shards]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]) if sizes else np.zeros(1, np.int64)
        self._maps: OrderedDict[int, np.memmap] = OrderedDict()

    def __len__(self) -> int:
        return int(self.state.tokens)

    def _map(self, k: int) -> np.ndarray:
        m = self._maps.get(k)
        if m is None:
            shard = self.state.shards[k]
            m = np.memmap(self.folder / f"{shard.name}.tokens", dtype=self.dtype, mode="r", shape=(shard.tokens,))
            if len(self._maps) >= self._MAX_OPEN:
                self._maps.popitem(last=False)
            self._maps[k] = m
        else:
            self._maps.move_to_end(k)
        return m

    def read(self, a: int, b: int) -> np.ndarray:
        """Tokens [a, b) as a new array of the store's dtype."""
        if not 0 <= a <= b <= len(self):
            raise LangmoeError(f"token range [{a}, {b}) is outside the stored stream of {len(self)} tokens")
        out = np.empty(b - a, dtype=self.dtype)
        k = int(np.searchsorted(self._starts, a, side="right")) - 1
        pos = a
        while pos < b:
            s0, s1 = int(self._starts[k]), int(self._starts[k + 1])
            n = min(b, s1) - pos
            out[pos - a: pos - a + n] = self._map(k)[pos - s0: pos - s0 + n]
            pos += n
            k += 1
        return out

    def docs(self) -> np.ndarray:
        """int64 [documents, 4]: offset in the stream, tokens (with the eos), characters, UTF-8 bytes."""
        parts = [np.load(self.folder / f"{s.name}.docs.npy") for s in self.state.shards]
        return np.concatenate(parts) if parts else np.zeros((0, len(DOC_FIELDS)), dtype=np.int64)

    def ids(self) -> list[str]:
        out: list[str] = []
        for s in self.state.shards:
            with open(self.folder / f"{s.name}.ids.jsonl", encoding="utf-8") as f:
                out.extend(json.loads(line) for line in f)
        return out


# ---- the store --------------------------------------------------------------------------------------------------


class TokenStore:
    """A token store folder for one tokenizer (see the module docstring).

    `owned=True` marks a store langmoe keeps for itself (a run folder's, a training folder's, a temporary one): a
    store there from another tokenizer, corpus or format is replaced. A user's store (`--token-store`) is refused
    instead, with one line, so nothing a user prepared is deleted.
    """

    def __init__(self, root: str | Path, tokenizer, *, owned: bool = False, shard_tokens: int = SHARD_TOKENS,
                 progress: str = "auto", parallel: bool = True):
        if shard_tokens < 1:
            raise LangmoeError(f"shard_tokens must be positive, got {shard_tokens}")
        self.root = Path(root)
        if self.root.is_file():
            raise LangmoeError(f"token store {self.root} is a file: give a folder")
        self.tokenizer = tokenizer
        self.owned, self.shard_tokens, self.progress, self.parallel = owned, int(shard_tokens), progress, parallel
        self.eos = tokenizer.eos_token_id
        if self.eos is None:
            raise LangmoeError("the tokenizer has no eos token: set tokenizer.eos_token so documents can be separated")
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.vocab = len(tokenizer)
        self.dtype = token_dtype(max(self.vocab, int(self.eos) + 1, int(self.pad) + 1))
        self.fingerprint = tokenizer_fingerprint(tokenizer)
        self._owner: Any = None
        if not owned:
            check_store_folder(self.root)  # before the lock file: a foreign folder is left as it was
        with self._locked():
            self._open_manifest()

    @classmethod
    def temporary(cls, tokenizer, **kw) -> TokenStore:
        """A store in a temp folder that is deleted when the store and every stream read from it are gone."""
        tmp = tempfile.TemporaryDirectory(prefix="langmoe-tokens-")
        store = cls(tmp.name, tokenizer, owned=True, **kw)
        store._owner = tmp
        return store

    # -- manifest ---------------------------------------------------------------------------------------------

    def _manifest(self) -> dict[str, Any]:
        return {"format": STORE_FORMAT, "version": STORE_VERSION, "tokenizer": self.fingerprint,
                "eos": int(self.eos), "pad": int(self.pad), "vocab_size": int(self.vocab), "dtype": self.dtype.str}

    def _open_manifest(self) -> None:
        path = self.root / MANIFEST
        if not path.is_file():
            if self.root.is_dir() and any(p.name not in (".lock",) for p in self.root.iterdir()):
                if not self.owned:  # filled since `check_store_folder` looked: refused the same way
                    check_store_folder(self.root)
                self._wipe()
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(path, self._manifest())
            return
        problem = self._manifest_problem(path)
        if problem is None:
            return
        if not self.owned:
            raise LangmoeError(f"token store {self.root} {problem}")
        warnings.warn(f"token store {self.root} {problem.split(':')[0]}: replacing it", stacklevel=3)
        self._wipe()
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(path, self._manifest())

    def _manifest_problem(self, path: Path) -> str | None:
        try:
            have = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"has an unreadable {MANIFEST}: delete the folder and tokenise again"
        if not isinstance(have, dict) or have.get("format") != STORE_FORMAT:
            return f"has a {MANIFEST} that is not a langmoe token store's: give another folder"
        if have.get("version") != STORE_VERSION:
            return (f"was written in store format {have.get('version')} (this langmoe reads {STORE_VERSION}): "
                    "tokenise again into a new folder")
        if have.get("tokenizer") != self.fingerprint or have.get("dtype") != self.dtype.str:
            return ("was tokenised with another tokenizer: use the model (tokenizer) it was made for, or tokenise "
                    "into a new --token-store")
        return None

    def _wipe(self) -> None:
        for p in self.root.iterdir():
            if p.name == ".lock":
                continue
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two runs sharing a store, the ranks of a DDP job)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- streams ----------------------------------------------------------------------------------------------

    def folder(self, lang: str, split: str) -> Path:
        if split not in SPLITS:
            raise LangmoeError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return self.root / split / lang

    def state(self, lang: str, split: str) -> StreamState | None:
        path = self.folder(lang, split) / STATE
        if not path.is_file():
            return None
        try:
            return StreamState.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, ValidationError):
            raise LangmoeError(f"{path} is damaged: delete {path.parent} and tokenise again (the other languages "
                               "are kept)") from None

    def stream(self, lang: str, split: str) -> TokenStream:
        """The stored stream of (split, lang) as it is now (see `ensure` to make it long enough)."""
        st = self.state(lang, split)
        if st is None:
            raise LangmoeError(f"token store {self.root} holds no {split} tokens of {lang!r}: tokenise it first "
                               f"(`langmoe tokenize --langs {lang} --out {self.root}`)")
        folder = self.folder(lang, split)
        bad = self._check_shards(folder, st)
        if bad < len(st.shards):
            raise LangmoeError(f"token store: {folder / st.shards[bad].name}.tokens is missing or cut short: rerun "
                               "the command (it tokenises that shard again)")
        return TokenStream(folder, st, self.dtype, owner=self._owner)

    def streams(self) -> list[tuple[str, str]]:
        """(split, lang) of every stored stream."""
        return sorted((p.parent.parent.name, p.parent.name) for p in self.root.glob(f"*/*/{STATE}"))

    def _check_shards(self, folder: Path, st: StreamState) -> int:
        """Index of the first shard whose files are missing or of the wrong size (len(shards) when all are whole)."""
        for k, s in enumerate(st.shards):
            f = folder / f"{s.name}.tokens"
            size = f.stat().st_size if f.is_file() else -1
            if size != s.tokens * self.dtype.itemsize or not (folder / f"{s.name}.docs.npy").is_file() \
                    or not (folder / f"{s.name}.ids.jsonl").is_file():
                return k
        return len(st.shards)

    # -- writing ----------------------------------------------------------------------------------------------

    def ensure(self, corpus, requests: Sequence[Request]) -> dict[tuple[str, str], TokenStream]:
        """Tokenise what `requests` need beyond what is stored; return every requested stream."""
        requests = list(requests)
        with self._locked():
            todo = [(r, self._prepare(corpus, r)) for r in requests]
            todo = [(r, st) for r, st in todo if not r.met_by(st)]
            if todo:
                self._tokenize(corpus, todo)
        return {(r.lang, r.split): self.stream(r.lang, r.split) for r in requests}

    def _prepare(self, corpus, r: Request) -> StreamState:
        """The state of a requested stream, checked against the corpus, with damaged shards and leftovers of a kill
        removed (a shard cut short is dropped with the shards after it; they are tokenised again)."""
        folder = self.folder(r.lang, r.split)
        fp = language_fingerprint(corpus, r.lang)
        st = self.state(r.lang, r.split)
        if st is not None and st.corpus != fp:
            if not self.owned:
                raise LangmoeError(f"token store {self.root} holds {r.lang!r} of another corpus (or of the same files "
                                   f"changed since): tokenise into a new --token-store, or delete {folder}")
            shutil.rmtree(folder)
            st = None
        if st is None:
            st = StreamState(corpus=fp)
        good = self._check_shards(folder, st)
        if good < len(st.shards):
            bad = st.shards[good]
            warnings.warn(f"token store: {folder / bad.name}.tokens is missing or cut short: dropping it and the "
                          f"{len(st.shards) - good - 1} shard(s) after it, tokenising them again", stacklevel=3)
            st = _state_of(st.corpus, st.shards[:good], exhausted=False)
            write_json(folder / STATE, st.model_dump())
        _remove_unlisted(folder, st)
        return st

    def _tokenize(self, corpus, todo: list[tuple[Request, StreamState]]) -> None:
        targets = [r.tokens for r, _ in todo]
        total = sum(targets) - sum(st.tokens for _, st in todo) if all(t is not None for t in targets) else None
        sizes = [expected_text_bytes(corpus, r.lang, r.split) for r, _ in todo]
        nbytes = sum(sizes) - sum(st.bytes for _, st in todo) if all(b is not None for b in sizes) else None
        splits = sorted({r.split for r, _ in todo})
        progress = TokenizeProgress("tokenize", total_tokens=total, mode=self.progress, total_bytes=nbytes)
        encoder = DocumentEncoder(self.tokenizer, parallel=self.parallel)
        try:
            for r, st in todo:
                progress.start(f"{r.split}/{r.lang}")
                self._extend(corpus, r, st, encoder, progress)
        except BaseException:
            progress.close()
            raise
        done = (f"{len(todo)} stream(s) of {', '.join(splits)} into {self.root}: {progress.tokens:,} tokens "
                f"from {progress.nbytes / 1e6:.1f} MB of text in {progress.elapsed():.1f} s "
                f"({progress.nbytes / 1e6 / max(progress.elapsed(), 1e-9):.2f} MB/s)")
        progress.close(done if progress.elapsed() >= SUMMARY_AFTER_S else None)

    def _extend(self, corpus, r: Request, st: StreamState, encoder: DocumentEncoder,
                progress: TokenizeProgress) -> None:
        folder = self.folder(r.lang, r.split)
        folder.mkdir(parents=True, exist_ok=True)
        writer = _ShardWriter(self, folder, st)
        docs = itertools.islice(corpus.iter_documents(r.lang, r.split), st.docs, None)
        try:
            with read_ahead(docs) as batches:
                for batch in batches:
                    texts = [d.text for d in batch]
                    ids = encoder.encode(texts)
                    done, tokens, nbytes = writer.add(batch, ids, r)
                    progress.add(tokens, nbytes)
                    if done:
                        break
                else:
                    writer.exhausted = True
            writer.commit()
        except OSError as e:
            writer.discard()
            if is_disk_error(e):
                raise LangmoeError(disk_error_message(e, f"token store shard in {folder}") +
                                   " (finished shards are kept)") from None
            raise

    # -- identity -----------------------------------------------------------------------------------------------

    def content_hash(self, verify: bool = False) -> str:
        """A hash of the manifest and every stream's state (shards with their sha256); `verify=True` also checks
        each shard's bytes against its recorded sha256 (reads the whole store)."""
        h = hashlib.sha256(json.dumps(self._manifest(), sort_keys=True).encode())
        for split, lang in self.streams():
            st = self.state(lang, split)
            assert st is not None
            if verify:
                self.verify_stream(lang, split)
            h.update(f"{split}/{lang}".encode())
            h.update(st.model_dump_json().encode())
        return h.hexdigest()

    def verify_stream(self, lang: str, split: str) -> None:
        """Recompute every shard's sha256; one line naming the first that differs."""
        folder = self.folder(lang, split)
        st = self.state(lang, split)
        if st is None:
            return
        if self._check_shards(folder, st) < len(st.shards):
            raise LangmoeError(f"token store: a shard of {folder} is missing or cut short: rerun the command to "
                               "tokenise it again")
        for s in st.shards:
            if _shard_sha(folder, s.name) != s.sha256:
                raise LangmoeError(f"token store: {folder / s.name}.tokens does not match its checksum: delete "
                                   f"{folder} and tokenise again")

    def summary(self) -> list[dict[str, Any]]:
        """Per stream: documents, tokens, characters, bytes of text, disk bytes, exhausted."""
        out = []
        for split, lang in self.streams():
            st = self.state(lang, split)
            assert st is not None
            folder = self.folder(lang, split)
            disk = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            out.append({"split": split, "lang": lang, "docs": st.docs, "tokens": st.tokens, "chars": st.chars,
                        "text_bytes": st.bytes, "disk_bytes": disk, "shards": len(st.shards),
                        "exhausted": st.exhausted})
        return out


def expected_text_bytes(corpus, lang: str, split: str) -> int | None:
    """UTF-8 bytes of a split's text when they are known without reading it (the built-in manifest), or can be
    estimated from plain files (sizes times the split's share; JSON quoting makes it an overestimate), for the ETA."""

    if isinstance(corpus, BuiltinCorpus):
        splits = corpus._manifest.get("languages", {}).get(lang, {}).get("splits", {})
        return splits.get(split, {}).get("bytes")
    if isinstance(corpus, FolderCorpus) and lang in corpus.languages():
        kind, p = corpus._sources[lang]
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        if kind.startswith("datasets") or any(f.name.endswith((".gz", ".zst", ".parquet")) for f in files):
            return None
        share = {"train": 1 - corpus.valid_frac - corpus.test_frac, "valid": corpus.valid_frac,
                 "test": corpus.test_frac}[split]
        return int(sum(f.stat().st_size for f in files) * share)
    return None


def _state_of(corpus_fp: str, shards: list[ShardInfo], exhausted: bool) -> StreamState:
    """The state listing `shards` (its totals are their sums)."""
    return StreamState(corpus=corpus_fp, docs=sum(s.docs for s in shards), tokens=sum(s.tokens for s in shards),
                       chars=sum(s.chars for s in shards), bytes=sum(s.bytes for s in shards), exhausted=exhausted,
                       shards=list(shards))


def _remove_unlisted(folder: Path, st: StreamState) -> None:
    """Delete what a kill left behind: temp files and shards written but not yet listed in state.json."""
    if not folder.is_dir():
        return
    listed = {s.name for s in st.shards}
    for f in folder.iterdir():
        if f.name == STATE:
            continue
        if f.name.startswith(".") or f.name.split(".")[0] not in listed:
            f.unlink()


def _shard_sha(folder: Path, name: str) -> str:
    h = hashlib.sha256()
    for suffix in (".tokens", ".docs.npy", ".ids.jsonl"):
        with open(folder / f"{name}{suffix}", "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


# ---- shard writer -----------------------------------------------------------------------------------------------


def _fault(point: str) -> None:
    """Tests replace this to kill or fail the writer at a chosen point ("shard-written", "state-written")."""


class _ShardWriter:
    """Appends documents to the pending shard of a stream and commits shards (files first, then state.json)."""

    def __init__(self, store: TokenStore, folder: Path, st: StreamState):
        self.store, self.folder, self.st = store, folder, st
        self.exhausted = False
        self._reset()

    def _reset(self) -> None:
        self.pending: list[np.ndarray] = []
        self.rows: list[tuple[int, int, int, int]] = []
        self.ids: list[str] = []
        self.n_tokens = self.n_chars = 0

    def totals(self) -> StreamState:
        """Stored plus pending documents, as a state (for `Request.met_by`)."""
        return StreamState(corpus=self.st.corpus, tokens=self.st.tokens + self.n_tokens,
                           chars=self.st.chars + self.n_chars)

    def add(self, batch: list, ids: list[list[int]], r: Request) -> tuple[bool, int, int]:
        """Add the documents of one tokenised batch, up to and including the first that meets `r`; return (met,
        tokens added, text bytes added)."""
        lens = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
        chars = np.fromiter((len(d.text) for d in batch), dtype=np.int64, count=len(batch))
        n = _docs_needed(r, self.totals(), lens, chars)
        stream = _with_eos(ids[:n], lens[:n], self.store.eos, self.store.dtype)
        added_bytes, start = 0, 0
        for i in range(n):
            nbytes = len(batch[i].text.encode("utf-8"))
            added_bytes += nbytes
            self._take(stream[start:start + lens[i]], int(chars[i]), nbytes, batch[i].id)
            start += int(lens[i])
            if self.n_tokens >= self.store.shard_tokens:
                self.commit()
        return r.met_by(self.totals()), int(lens[:n].sum()), added_bytes

    def _take(self, tokens: np.ndarray, chars: int, nbytes: int, doc_id: str) -> None:
        self.pending.append(tokens)
        self.rows.append((self.st.tokens + self.n_tokens, len(tokens), chars, nbytes))
        self.ids.append(doc_id)
        self.n_tokens += len(tokens)
        self.n_chars += chars

    def commit(self) -> None:
        """Write the pending documents as the next shard, then list it in state.json (with nothing pending, only
        record that the split is exhausted)."""
        if not self.rows:
            if self.exhausted and not self.st.exhausted or not (self.folder / STATE).is_file():
                self.st = _state_of(self.st.corpus, self.st.shards, exhausted=self.exhausted)
                write_json(self.folder / STATE, self.st.model_dump())
            return
        name = f"{len(self.st.shards):05d}"
        tokens = np.concatenate(self.pending)
        docs = np.array(self.rows, dtype=np.int64)
        _write_atomic(self.folder / f"{name}.tokens", tokens.tobytes())
        _write_atomic(self.folder / f"{name}.docs.npy", _npy_bytes(docs))
        _write_atomic(self.folder / f"{name}.ids.jsonl",
                      "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in self.ids).encode("utf-8"))
        _fault("shard-written")
        shard = ShardInfo(name=name, tokens=int(tokens.size), docs=len(self.rows), chars=int(docs[:, 2].sum()),
                          bytes=int(docs[:, 3].sum()), sha256=_shard_sha(self.folder, name))
        self.st = _state_of(self.st.corpus, [*self.st.shards, shard], exhausted=self.exhausted)
        self._reset()
        write_json(self.folder / STATE, self.st.model_dump())
        _fault("state-written")

    def discard(self) -> None:
        self._reset()
        _remove_unlisted(self.folder, self.st)


def _with_eos(ids: list[list[int]], lens: np.ndarray, eos: int, dtype: np.dtype) -> np.ndarray:
    """`eos d1 eos d2 ...` of tokenised documents, as the store's dtype (ids that do not fit are an error)."""
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lens.sum()) - len(ids))
    if flat.size and (int(flat.max()) >= 1 << (8 * dtype.itemsize) or int(flat.min()) < 0):
        raise LangmoeError(f"token id {int(flat.max())} does not fit the store's {dtype.name}: the tokenizer's "
                           "vocabulary is larger than len(tokenizer) says")
    starts = np.concatenate([[0], np.cumsum(lens[:-1] - 1)]) if len(ids) else np.zeros(0, np.int64)
    return np.insert(flat, starts, eos).astype(dtype)


def _docs_needed(r: Request, have: StreamState, lens: np.ndarray, chars: np.ndarray) -> int:
    """How many documents of this batch to store: all, or up to and including the first that meets `r`."""
    n = len(lens)
    if r.tokens is None and r.chars is None:
        return n
    need = []
    if r.tokens is not None:
        need.append(int(np.searchsorted(np.cumsum(lens), r.tokens - have.tokens, side="left")) + 1)
    if r.chars is not None:
        need.append(int(np.searchsorted(np.cumsum(chars), r.chars - have.chars, side="left")) + 1)
    return min(max(need), n)


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file, then rename: after a kill a shard file is whole or absent. (No fsync: a crash of the machine
    that leaves a listed shard short is caught by the size check and the shard is tokenised again.)"""
    tmp = path.parent / f".{path.name}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        fix_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


__all__ = ["DOC_FIELDS", "Request", "SHARD_TOKENS", "StreamState", "TokenStore", "TokenStream", "default_token_store",
           "token_dtype", "tokenizer_fingerprint", "using_token_store"]
