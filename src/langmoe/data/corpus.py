"""Streaming readers for multilingual text: the built-in corpus and a user's folder of `<lang>.*` files.

Why streaming: a user corpus can be far larger than memory, so documents are yielded one at a time (lines of
txt/jsonl, parquet row batches, memory-mapped `datasets` folders) and nothing ever holds a whole file.
Every document belongs to exactly one split; user files without a split get one from a hash of
(seed, language, document id) -- or of the text when the file has no ids, so inserting a paragraph moves no other
document and duplicated texts share a split (no train/test leakage) -- stable across runs and machines.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from langmoe.data.languages import LANGUAGES, Language, get_language, parse_declared
from langmoe.errors import LangmoeError
from langmoe.optional import require

SPLITS: tuple[str, ...] = ("train", "valid", "test")
COUNT_LIMIT_BYTES = 256_000_000  # runs count a source's characters per split only up to this size on disk
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


@dataclass(frozen=True, slots=True)
class Document:
    """One document: `id` is unique within its language file; `source` names where the text came from."""

    id: str
    lang: str
    text: str
    source: str = ""


class SplitStats(BaseModel):
    docs: int = 0
    chars: int = 0
    bytes: int = 0  # UTF-8


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise LangmoeError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return split


def hash_split(lang: str, doc_id: str, valid_frac: float, test_frac: float, seed: int = 0) -> str:
    """Deterministic split of a document from blake2b(seed, lang, id): independent of file order and machine."""
    h = hashlib.blake2b(f"{seed}\0{lang}\0{doc_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "big") / 2.0**64
    if u < test_frac:
        return "test"
    if u < test_frac + valid_frac:
        return "valid"
    return "train"


class Corpus(ABC):
    """Documents per language and split. Subclasses implement `languages` and `_iter_all` (split, doc) pairs."""

    declared: dict[str, Language]

    def __init__(self, declared_languages: Mapping[str, Language] | None = None):
        self.declared = dict(declared_languages or {})
        self._stats: dict[str, dict[str, SplitStats]] = {}

    @abstractmethod
    def languages(self) -> list[str]:
        """Language codes present, sorted."""

    @abstractmethod
    def _iter_all(self, lang: str) -> Iterator[tuple[str, Document]]:
        """Every (split, document) of a language, in file order."""

    def _check_lang(self, lang: str) -> None:
        if lang not in self.languages():
            raise LangmoeError(
                f"language {lang!r} is not in the corpus (it has: {', '.join(self.languages())}); pick one of those"
            )

    def language(self, code: str) -> Language:
        """Metadata of a language (declared languages win over the built-in table)."""
        return get_language(code, self.declared)

    def iter_documents(self, lang: str, split: str) -> Iterator[Document]:
        """Stream the documents of one language and split, in file order."""
        _check_split(split)
        self._check_lang(lang)
        for s, doc in self._iter_all(lang):
            if s == split:
                yield doc

    def split_stats(self, lang: str) -> dict[str, SplitStats]:
        """Documents, characters and UTF-8 bytes per split (one pass over the language, then cached)."""
        if lang not in self._stats:
            self._check_lang(lang)
            out = {s: SplitStats() for s in SPLITS}
            for s, doc in self._iter_all(lang):
                st = out[s]
                st.docs += 1
                st.chars += len(doc.text)
                st.bytes += len(doc.text.encode("utf-8"))
            self._stats[lang] = out
        return self._stats[lang]

    def num_chars(self, lang: str, split: str) -> int:
        return self.split_stats(lang)[_check_split(split)].chars

    def fingerprint(self) -> str:
        """A string that changes when the documents may have changed (used as a cache key)."""
        return f"{type(self).__name__}:{id(self)}"


# --- low-level readers -------------------------------------------------------------------------------------


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _is_compressed(path: Path) -> bool:
    return path.name.endswith((".gz", ".zst"))


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) without loading the file; non-UTF-8 bytes raise with their byte offset, a
    broken or truncated .gz / .zst says so."""
    if path.name.endswith(".zst"):
        with open(path, "rb") as f:
            yield from _decode_lines(path, _zstd_lines(path, f))
        return
    with _open_binary(path) as f:
        yield from _decode_lines(path, _raw_lines(path, f))


def _zstd_lines(path: Path, f, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Lines (ending in b"\n", as binary file iteration gives them) of a zstd file of one or more frames.

    zstandard's stream reader ends quietly at a cut frame, so frames are decoded one by one here and a file that
    ends inside a frame is reported as truncated."""
    zstd = _optional("zstandard")
    dec = zstd.ZstdDecompressor()
    obj, in_frame, rest = dec.decompressobj(), False, b""
    while True:
        data = f.read(chunk)
        if not data:
            break
        while data:
            try:
                out = obj.decompress(data)
            except zstd.ZstdError as e:
                raise LangmoeError(f"{path} is not a valid zstd file ({' '.join(str(e).split())[:80]}): re-compress "
                                   "it with zstd, or drop the .zst suffix if it is plain text") from None
            in_frame = not obj.eof
            data = obj.unused_data if obj.eof else b""
            if obj.eof:
                obj = dec.decompressobj()
            if out:
                *lines, rest = (rest + out).split(b"\n")
                for line in lines:
                    yield line + b"\n"
    if in_frame:
        raise LangmoeError(f"{path} is truncated (it ends inside a zstd frame): compress it again or download it "
                           "again")
    if rest:
        yield rest


def _raw_lines(path: Path, f) -> Iterator[bytes]:
    import zlib

    try:
        yield from f
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        what = "truncated" if isinstance(e, EOFError) else "not a valid gzip file"
        raise LangmoeError(f"{path} is {what} ({' '.join(str(e).split())[:80] or type(e).__name__}): re-compress it "
                           "with gzip, or drop the .gz suffix if it is plain text") from None


def _decode_lines(path: Path, lines: Iterator[bytes]) -> Iterator[tuple[int, str]]:
    offset = 0
    for i, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            where = "of the decompressed text " if _is_compressed(path) else ""
            raise LangmoeError(
                f"{path} is not UTF-8: invalid byte at offset {offset + e.start} {where}(line {i}); "
                "re-encode the file as UTF-8"
            ) from None
        if i == 1 and line.startswith("\ufeff"):
            line = line[1:]
        offset += len(raw)
        yield i, line


def _iter_txt(path: Path) -> Iterator[tuple[str, str, str | None, bool]]:
    """Blank-line separated paragraphs as (index, text, split=None, explicit id=False)."""
    buf: list[str] = []
    n = 0
    for _, line in _iter_lines(path):
        if line.strip():
            buf.append(line)
        elif buf:
            yield str(n), "".join(buf).rstrip(), None, False
            n += 1
            buf = []
    if buf:
        yield str(n), "".join(buf).rstrip(), None, False


def _norm_split(value: Any, where: str) -> str:
    s = _SPLIT_ALIASES.get(str(value).lower()) if value is not None else None
    if s is None:
        raise LangmoeError(f"{where}: unknown split {value!r}; use train, valid (or validation) or test")
    return s


def _iter_jsonl(path: Path) -> Iterator[tuple[str, str, str | None, bool]]:
    """JSON lines with a `text` field, optional `id` and `split`."""
    for i, line in _iter_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise LangmoeError(f"{path} line {i} is not valid JSON ({e.msg}): one JSON object per line") from None
        if not isinstance(rec, dict) or "text" not in rec:
            raise LangmoeError(f"{path} line {i} has no 'text' field: each line must be an object with 'text'")
        text = rec["text"]
        if text is None:
            continue
        if not isinstance(text, str):
            raise LangmoeError(f"{path} line {i}: 'text' must be a string, got {type(text).__name__}")
        split = rec.get("split")
        has_id = rec.get("id") is not None
        yield (str(rec["id"]) if has_id else str(i), text,
               None if split is None else _norm_split(split, f"{path} line {i}"), has_id)


def _iter_parquet(path: Path, batch_size: int = 1024) -> Iterator[tuple[str, str, str | None, bool]]:
    """Parquet rows in batches (`iter_batches`), column `text`, optional `id` and `split`."""
    pq = _optional("pyarrow.parquet")

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise LangmoeError(f"{path} is not a readable parquet file ({type(e).__name__}): re-export it") from None
    names = pf.schema_arrow.names
    if "text" not in names:
        raise LangmoeError(f"{path} has no 'text' column (columns: {', '.join(names)}): rename the text column")
    _check_text_type(path, pf.schema_arrow.field("text").type)
    cols = [c for c in ("text", "id", "split") if c in names]
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=cols):
        data = batch.to_pydict()
        texts = data["text"]
        ids = data.get("id")
        splits = data.get("split")
        for j, text in enumerate(texts):
            idx = row + j
            if text is None:
                continue
            if isinstance(text, bytes):
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise LangmoeError(f"{path} row {idx}: 'text' is not UTF-8 (byte {e.start}); re-encode it") from None
            has_id = ids is not None and ids[j] is not None
            did = str(ids[j]) if has_id else str(idx)
            sp = splits[j] if splits is not None else None
            yield did, text, None if sp is None else _norm_split(sp, f"{path} row {idx}"), has_id
        row += len(texts)


def _check_text_type(path: Path, arrow_type) -> None:
    """The `text` column must hold strings (or UTF-8 bytes): numbers or lists are not documents."""
    import pyarrow as pa

    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_null(t) or str(t) == "string_view"):
        raise LangmoeError(f"{path}: column 'text' holds {t} values, not strings: store each document's text as a "
                           "string")


def _optional(module: str):

    return require(module)


def _is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json"))


def _load_dataset(path: Path):
    load_from_disk = _optional("datasets").load_from_disk

    try:
        return load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        raise LangmoeError(f"{path} is not a readable `datasets` folder ({type(e).__name__}): re-save it with "
                           "save_to_disk") from None


def _dataset_parts(ds, path: Path) -> list[tuple[str | None, Any]]:
    """(split or None, Dataset) parts: a DatasetDict with only `train` is split by hash like a plain Dataset."""
    DatasetDict = _optional("datasets").DatasetDict  # noqa: N806

    if isinstance(ds, DatasetDict):
        names = list(ds.keys())
        if names == ["train"]:
            return [(None, ds["train"])]
        return [(_norm_split(n, f"{path} (DatasetDict split)"), ds[n]) for n in names]
    return [(None, ds)]


def _iter_dataset(parts, path: Path, lang: str | None, batch_size: int = 1024):
    """Rows of a memory-mapped dataset; `lang` filters on a `lang` column (whole-folder DatasetDicts)."""
    for split, ds in parts:
        names = ds.column_names
        if "text" not in names:
            raise LangmoeError(f"{path} has no 'text' column (columns: {', '.join(names)}): rename the text column")
        cols = [c for c in ("text", "id", "split", "lang") if c in names]
        row = 0
        for batch in ds.select_columns(cols).iter(batch_size=batch_size):
            texts = batch["text"]
            for j, text in enumerate(texts):
                idx = row + j
                if lang is not None and batch["lang"][j] != lang:
                    continue
                if text is None:
                    continue
                if not isinstance(text, str):
                    raise LangmoeError(f"{path} row {idx}: 'text' must be a string, got {type(text).__name__}")
                has_id = "id" in batch and batch["id"][j] is not None
                did = str(batch["id"][j]) if has_id else str(idx)
                if split is not None:
                    sp = split
                elif "split" in batch and batch["split"][j] is not None:
                    sp = _norm_split(batch["split"][j], f"{path} row {idx}")
                else:
                    sp = None
                yield did, text, sp, has_id
            row += len(texts)


# --- the built-in corpus ------------------------------------------------------------------------------------


class _FileCorpus(Corpus):
    """Shared machinery: one source per language yielding (id, text, split-or-None, id-is-explicit) records."""

    def __init__(self, declared_languages, valid_frac: float, test_frac: float, seed: int):
        super().__init__(declared_languages)
        for name, v in (("valid_frac", valid_frac), ("test_frac", test_frac)):
            if not 0.0 <= v < 1.0:
                raise LangmoeError(f"{name} must be in [0, 1), got {v}")
        if valid_frac + test_frac >= 1.0:
            raise LangmoeError(f"valid_frac + test_frac must be below 1 (got {valid_frac + test_frac}): "
                               "leave documents for training")
        self.valid_frac, self.test_frac, self.seed = float(valid_frac), float(test_frac), int(seed)

    @abstractmethod
    def _records(self, lang: str) -> Iterator[tuple[str, str, str | None, bool]]: ...

    @abstractmethod
    def _where(self, lang: str) -> str: ...

    def _iter_all(self, lang: str) -> Iterator[tuple[str, Document]]:
        n = 0
        source = self._source_name(lang)
        for did, text, split, has_id in self._records(lang):
            if not text.strip():
                continue
            n += 1
            if split is None:  # by id when the file gives one, else by text (duplicates share a split)
                split = hash_split(lang, did if has_id else text, self.valid_frac, self.test_frac, self.seed)
            yield split, Document(id=did, lang=lang, text=text, source=source)
        if n == 0:
            raise LangmoeError(f"{self._where(lang)} holds no non-empty documents: add text or remove the file")

    def _source_name(self, lang: str) -> str:
        return Path(self._where(lang)).name


class BuiltinCorpus(_FileCorpus):
    """The shipped corpus: `builtin/<code>.jsonl.gz` with an explicit split per document."""

    def __init__(self, root: str | Path | None = None):
        super().__init__(None, 0.0, 0.0, 0)
        self.root = Path(root) if root is not None else BUILTIN_DIR
        files = sorted(self.root.glob("*.jsonl.gz")) if self.root.is_dir() else []
        if not files:
            raise LangmoeError(f"the built-in corpus is missing ({self.root} has no <lang>.jsonl.gz files): "
                               "reinstall langmoe or rebuild it with scripts/build_corpus.sh")
        self._files = {p.name[: -len(".jsonl.gz")]: p for p in files}
        self._file_sha: dict[str, str] = {}
        for code in self._files:
            get_language(code)
        self._manifest: dict[str, Any] = {}
        man = self.root / "manifest.json"
        if man.is_file():
            try:
                self._manifest = json.loads(man.read_text(encoding="utf-8"))
            except ValueError:
                raise LangmoeError(f"{man} is not valid JSON: reinstall langmoe") from None

    def languages(self) -> list[str]:
        return sorted(self._files)

    def _records(self, lang):
        for did, text, split, has_id in _iter_jsonl(self._files[lang]):
            yield did, text, split or "train", has_id

    def _where(self, lang: str) -> str:
        return str(self._files[lang])

    def _source_name(self, lang: str) -> str:
        return "builtin"

    def iter_documents(self, lang: str, split: str) -> Iterator[Document]:
        _check_split(split)
        self._check_lang(lang)
        for did, text, s, _ in _iter_jsonl(self._files[lang]):
            if (s or "train") == split and text.strip():
                yield Document(id=did, lang=lang, text=text, source="builtin")

    def split_stats(self, lang: str) -> dict[str, SplitStats]:
        """From the manifest when it has the numbers (the builder counted them), else by one pass."""
        entry = self._manifest.get("languages", {}).get(lang, {})
        splits = entry.get("splits")
        if isinstance(splits, dict) and all(s in splits for s in SPLITS):
            return {s: SplitStats(**splits[s]) for s in SPLITS}
        return super().split_stats(lang)

    def language_fingerprint(self, lang: str) -> str:
        self._check_lang(lang)
        return self.fingerprint([lang])

    def fingerprint(self, langs: list[str] | None = None) -> str:
        """A hash of the bytes of `langs`' files (default: every language). By content, not size and mtime: a
        fresh clone or checkout keeps its caches, and a rebuild that changes other languages does not touch them."""
        h = hashlib.sha256(b"builtin-content")
        for code in sorted(set(langs) if langs else self._files):
            if code not in self._files:
                continue
            if code not in self._file_sha:
                self._file_sha[code] = hashlib.sha256(self._files[code].read_bytes()).hexdigest()
            h.update(f"{code}:{self._file_sha[code]}".encode())
        return "builtin:" + h.hexdigest()[:32]


# --- a user's folder -----------------------------------------------------------------------------------------

_FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".txt.gz": "txt", ".jsonl.zst": "jsonl",
            ".txt.zst": "txt", ".parquet": "parquet"}
_FORMAT_NAMES = "<lang>.txt, <lang>.jsonl (each also .gz or .zst) or <lang>.parquet"
_IGNORED_SUFFIXES = (".md", ".yaml", ".yml", ".lock")
_IGNORED_PREFIXES = ("readme", "license", "licence", "sources", "manifest", ".", "_")


def _split_name(name: str) -> tuple[str, str | None]:
    for ext in sorted(_FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return name[: -len(ext)], _FORMATS[ext]
    return name, None


_READERS = {"txt": lambda p: _iter_txt(p), "jsonl": lambda p: _iter_jsonl(p), "parquet": lambda p: _iter_parquet(p)}


def _shard_files(folder: Path) -> list[tuple[Path, str]]:
    """The files of a language given as a folder (`de/part-00001.jsonl.zst`, `de/0000.parquet` ...), in name
    order (sub-folders included), with their format; anything else in it is an error."""
    files = sorted((f for f in folder.rglob("*") if f.is_file()), key=lambda f: f.relative_to(folder).as_posix())
    out = []
    for f in files:
        low = f.name.lower()
        if low.startswith(_IGNORED_PREFIXES) or low.endswith(_IGNORED_SUFFIXES):
            continue
        kind = _split_name(f.name)[1]
        if kind is None:
            raise LangmoeError(f"{f}: unsupported file in the language folder {folder.name}/; its files must be "
                               ".txt, .jsonl (each also .gz or .zst) or .parquet")
        if f.stat().st_size == 0:
            raise LangmoeError(f"{f} is empty: add text or remove the file")
        out.append((f, kind))
    if not out:
        raise LangmoeError(f"{folder} is a folder without .txt/.jsonl/.parquet files (nor a `datasets.save_to_disk` "
                           "folder): put the language's files in it or remove it")
    return out


def _iter_shards(folder: Path) -> Iterator[tuple[str, str, str | None, bool]]:
    """The records of every file of a language folder, one file after the other. An id the file gives is kept
    (it is also what the hash split uses); a line or row number becomes `<file>:<n>` so ids stay unique."""
    for f, kind in _shard_files(folder):
        rel = f.relative_to(folder).as_posix()
        for did, text, split, has_id in _READERS[kind](f):
            yield (did if has_id else f"{rel}:{did}"), text, split, has_id


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LangmoeError(f"{path} is not UTF-8 text: save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise LangmoeError(f"{path} is not valid YAML ({' '.join(str(e).split())[:100]}): fix its syntax") from None


def _read_languages_yaml(path: Path) -> dict[str, Language]:
    """`languages.yaml`: a mapping code -> {name, family, genus, script} (or a list of such with `code`)."""

    return parse_declared(_read_yaml(path), str(path))


CORPUS_SETTINGS = "corpus.yaml"
_DEFAULT_FRACS = {"valid_frac": 0.01, "test_frac": 0.01, "seed": 0}


def _read_corpus_settings(path: Path) -> dict[str, Any]:
    """`corpus.yaml` in a corpus folder: the held-out shares and seed of the hash split of files without splits,
    e.g. `test_frac: 0.1` for a small corpus whose 1% test split would be too small to measure."""
    data = _read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LangmoeError(f"{path} must be a mapping of valid_frac, test_frac, seed")
    unknown = sorted(str(k) for k in data if k not in _DEFAULT_FRACS)
    if unknown:
        raise LangmoeError(f"{path}: unknown field(s) {', '.join(unknown)}: use valid_frac, test_frac, seed")
    for k, v in data.items():
        ok = isinstance(v, int) and not isinstance(v, bool) if k == "seed" else (
            isinstance(v, (int, float)) and not isinstance(v, bool))
        if not ok:
            raise LangmoeError(f"{path}: {k} must be a number, got {v!r}")
    return dict(data)


class FolderCorpus(_FileCorpus):
    """A folder of `<lang>.txt` / `<lang>.jsonl[.gz]` / `<lang>.parquet` / `<lang>/` (datasets) files, or a
    `datasets.save_to_disk` folder with a `lang` column.

    Unknown codes must be declared (argument or a `languages.yaml` in the folder). Documents without a split get
    `hash_split(lang, id, valid_frac, test_frac, seed)`: 1% valid and 1% test unless the arguments or a
    `corpus.yaml` in the folder (`valid_frac`, `test_frac`, `seed`) say otherwise. `file_ok=True` (a source in a
    list given to open_corpus) also takes one `<lang>.*` file as a one-language corpus.
    """

    def __init__(
        self,
        path: str | Path,
        declared_languages: Mapping[str, Language] | None = None,
        valid_frac: float | None = None,
        test_frac: float | None = None,
        seed: int | None = None,
        *,
        file_ok: bool = False,
    ):
        root = Path(path).expanduser()
        if not root.exists():
            raise LangmoeError(f"corpus folder {root} does not exist: give a folder of <lang>.txt/.jsonl/.parquet "
                               "files, or 'builtin'")
        single = None  # one `<lang>.<ext>` file in a list of sources: a one-language corpus; its folder's yaml apply
        if not root.is_dir():
            code, kind = _split_name(root.name)
            if not file_ok:
                raise LangmoeError(f"corpus path {root} is a file: give the folder that holds <lang>.* files")
            if kind is None:
                raise LangmoeError(f"corpus path {root} is a file but not <lang>.txt/.jsonl/.jsonl.gz/.parquet: "
                                   "give such a file or a folder of them")
            single, root = (code, kind, root), root.parent
        declared = {}
        for name in ("languages.yaml", "languages.yml"):
            if (root / name).is_file():
                declared.update(_read_languages_yaml(root / name))
        declared.update(declared_languages or {})
        settings = {**_DEFAULT_FRACS}
        if (root / CORPUS_SETTINGS).is_file():
            settings.update(_read_corpus_settings(root / CORPUS_SETTINGS))
        given = {"valid_frac": valid_frac, "test_frac": test_frac, "seed": seed}
        settings.update({k: v for k, v in given.items() if v is not None})  # arguments win over corpus.yaml
        try:
            super().__init__(declared, settings["valid_frac"], settings["test_frac"], settings["seed"])
        except LangmoeError as e:
            raise LangmoeError(f"{root}: {e}") from None
        self.root = root
        self._sources: dict[str, tuple[str, Path]] = {}
        self._whole = None  # whole-folder datasets: list of (split, Dataset) parts with a `lang` column
        if single is not None:
            code, kind, f = single
            if f.stat().st_size == 0:
                raise LangmoeError(f"{f} is empty: add text or remove the file")
            self._sources[code] = (kind, f)
        elif _is_dataset_dir(root):
            self._whole = _dataset_parts(_load_dataset(root), root)
            codes: set[str] = set()
            for _, ds in self._whole:
                if "lang" not in ds.column_names:
                    raise LangmoeError(f"{root} is a datasets folder without a 'lang' column: add one, or save one "
                                       "dataset per language as <lang>/")
                codes.update(str(c) for c in ds.unique("lang"))
            if not codes:
                raise LangmoeError(f"{root} holds an empty dataset: add documents")
            for c in codes:
                self._sources[c] = ("datasets-lang", root)
        else:
            self._scan(root)
        unknown = sorted(c for c in self._sources if c not in self.declared and c not in _known())
        if unknown:
            raise LangmoeError(
                f"unknown language code(s) {', '.join(unknown)} in {root}: rename the files to ISO 639 codes or "
                "declare them in languages.yaml (code: {name, family, genus, script})"
            )
        for c in self._sources:
            self.language(c)

    def _scan(self, root: Path) -> None:
        for p in sorted(root.iterdir()):
            name = p.name
            low = name.lower()
            if low.startswith(_IGNORED_PREFIXES) or low.endswith(_IGNORED_SUFFIXES):
                continue
            if p.is_dir():
                code, kind = name, "datasets" if _is_dataset_dir(p) else "files"
                if kind == "files":
                    _shard_files(p)  # checks the folder now: one line naming what is wrong in it
            else:
                code, kind = _split_name(name)
                if kind is None:
                    raise LangmoeError(f"{p}: unsupported file; name files {_FORMAT_NAMES}, or give a language a "
                                       "folder <lang>/ of such files")
                if p.stat().st_size == 0:
                    raise LangmoeError(f"{p} is empty: add text or remove the file")
            if code in self._sources:
                raise LangmoeError(f"language {code!r} has two sources ({self._sources[code][1].name} and {name}): "
                                   "keep one file per language")
            self._sources[code] = (kind, p)
        if not self._sources:
            raise LangmoeError(f"{root} holds no <lang>.txt/.jsonl/.parquet files or <lang>/ folders: add one file "
                               "(or folder of files) per language named by its ISO 639 code, e.g. de.txt")

    def languages(self) -> list[str]:
        return sorted(self._sources)

    def _where(self, lang: str) -> str:
        return str(self._sources[lang][1])

    def _records(self, lang):
        kind, p = self._sources[lang]
        if kind in _READERS:
            return _READERS[kind](p)
        if kind == "files":
            return _iter_shards(p)
        if kind == "datasets":
            return _iter_dataset(_dataset_parts(_load_dataset(p), p), p, None)
        return _iter_dataset(self._whole, p, lang)

    def _source_name(self, lang: str) -> str:
        kind, p = self._sources[lang]
        return p.name if kind != "datasets-lang" else f"{p.name}[lang={lang}]"

    def language_fingerprint(self, lang: str) -> str:
        """The documents of one language: its files (names, sizes, mtimes), the split settings and its declared
        metadata; not the folder's path or other languages (a store survives adding a language or moving it)."""
        self._check_lang(lang)
        kind, p = self._sources[lang]
        h = hashlib.sha256(f"{kind}|{self.valid_frac}|{self.test_frac}|{self.seed}|{lang}".encode())
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            st = f.stat()
            h.update(f"|{f.relative_to(p.parent)}:{st.st_size}:{st.st_mtime_ns}".encode())
        if lang in self.declared:
            h.update(self.declared[lang].model_dump_json().encode())
        return "folder-lang:" + h.hexdigest()[:32]

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.root.resolve()}|{self.valid_frac}|{self.test_frac}|{self.seed}".encode())
        if len(self._sources) == 1 and next(iter(self._sources.values()))[1].is_file():
            h.update(f"|file:{next(iter(self._sources.values()))[1].name}".encode())  # one file, not the folder
        for code in sorted(self._sources):
            _, p = self._sources[code]
            files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
            for f in files:
                st = f.stat()
                h.update(f"{code}:{f.relative_to(self.root)}:{st.st_size}:{st.st_mtime_ns}".encode())
        for _code, lang in sorted(self.declared.items()):
            h.update(lang.model_dump_json().encode())
        return "folder:" + h.hexdigest()[:32]


def _known() -> set[str]:

    return set(LANGUAGES)


class MixedCorpus(Corpus):
    """Several sources read as one corpus: the union of their languages; a language found in several sources has
    their documents one source after the other, in the order given.

    Each document keeps the split its own source gives it (the built-in corpus's fixed splits, a folder's hash
    split with its own `corpus.yaml` shares), so mixing never moves a document between train and test. Ids get a
    `<source index>:` prefix only for a language that several sources share (ids are unique per source only).
    """

    def __init__(self, parts: list[tuple[str, Corpus]]):
        declared: dict[str, Language] = {}
        for name, part in parts:
            for code, lang in part.declared.items():
                if code in declared and declared[code] != lang:
                    raise LangmoeError(f"language {code!r} is declared differently in two corpus sources (the "
                                       f"second is {name}): keep one languages.yaml entry for it")
                declared[code] = lang
        super().__init__(declared)
        self.parts = list(parts)
        self._by_lang: dict[str, list[int]] = {}
        for i, (_, part) in enumerate(self.parts):
            for code in part.languages():
                self._by_lang.setdefault(code, []).append(i)

    def languages(self) -> list[str]:
        return sorted(self._by_lang)

    def _doc(self, i: int, lang: str, doc: Document) -> Document:
        if len(self._by_lang[lang]) == 1:
            return doc
        return Document(id=f"{i}:{doc.id}", lang=doc.lang, text=doc.text, source=doc.source)

    def _iter_all(self, lang: str) -> Iterator[tuple[str, Document]]:
        for i in self._by_lang[lang]:
            for split, doc in self.parts[i][1]._iter_all(lang):
                yield split, self._doc(i, lang, doc)

    def iter_documents(self, lang: str, split: str) -> Iterator[Document]:
        _check_split(split)
        self._check_lang(lang)
        for i in self._by_lang[lang]:
            for doc in self.parts[i][1].iter_documents(lang, split):
                yield self._doc(i, lang, doc)

    def split_stats(self, lang: str) -> dict[str, SplitStats]:
        """The sum of the sources' own statistics (the built-in manifest's numbers where it has them)."""
        self._check_lang(lang)
        out = {s: SplitStats() for s in SPLITS}
        for i in self._by_lang[lang]:
            for s, st in self.parts[i][1].split_stats(lang).items():
                out[s].docs += st.docs
                out[s].chars += st.chars
                out[s].bytes += st.bytes
        return out

    def sources(self, langs: list[str] | None = None, count_limit: int | None = None) -> dict[str, list[dict[str, Any]]]:
        """Per language, the sources that gave it documents, in order, with their characters per split (see
        `corpus_sources` for `count_limit`)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for lang in langs or self.languages():
            self._check_lang(lang)
            out[lang] = [_source_entry(self.parts[i][0], self.parts[i][1], lang, count_limit)
                         for i in self._by_lang[lang]]
        return out

    def language_fingerprint(self, lang: str) -> str:
        """The sources that give `lang` documents, in order (their own per-language fingerprints)."""
        self._check_lang(lang)
        h = hashlib.sha256(f"mixed-lang|{lang}|{len(self._by_lang[lang])}".encode())
        for i in self._by_lang[lang]:
            h.update(f"|{i}:{language_fingerprint(self.parts[i][1], lang)}".encode())
        return "mixed-lang:" + h.hexdigest()[:32]

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"mixed")
        for _, part in self.parts:
            h.update(corpus_fingerprint(part).encode() + b"\0")
        return "mixed:" + h.hexdigest()[:32]


def _source_label(spec: str | Path) -> str:
    if str(spec) == "builtin" or str(spec).startswith("hf:"):
        return str(spec)
    return str(Path(spec).expanduser().resolve())


def _hf_corpus(spec: str, declared_languages, valid_frac, test_frac, seed) -> Corpus:
    from langmoe.data.hf_stream import HFStreamCorpus  # hf_stream builds on this module: imported here

    return HFStreamCorpus(spec, declared_languages, valid_frac=valid_frac, test_frac=test_frac, seed=seed)


def source_bytes(corpus: Any, lang: str) -> int | None:
    """Bytes on disk of a language's files (None when unknown: a streamed dataset, a duck-typed corpus)."""
    if isinstance(corpus, BuiltinCorpus):
        return corpus._files[lang].stat().st_size
    if isinstance(corpus, FolderCorpus):
        p = corpus._sources[lang][1]
        return sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    return None


def _source_entry(label: str, corpus: Any, lang: str, count_limit: int | None) -> dict[str, Any]:
    """{"source", "chars" per split}; above `count_limit` bytes (or of unknown size) the characters are not
    counted (a pass over a large corpus would cost minutes to hours): "chars" is None, "bytes_on_disk" says why."""
    size = source_bytes(corpus, lang)
    cheap = isinstance(corpus, BuiltinCorpus) or not isinstance(corpus, (_FileCorpus, MixedCorpus))
    if count_limit is None or cheap or (size is not None and size <= count_limit):
        return {"source": label, "chars": {s: st.chars for s, st in corpus.split_stats(lang).items()}}
    return {"source": label, "chars": None, "bytes_on_disk": size}


def corpus_sources(corpus: Any, langs: list[str] | None = None,
                   count_limit: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per language, which sources gave it documents and how many characters per split (recorded in runs).
    `count_limit`: count only sources of at most that many bytes on disk (runs pass `COUNT_LIMIT_BYTES`)."""
    if isinstance(corpus, MixedCorpus):
        return corpus.sources(langs, count_limit)
    label = ("builtin" if isinstance(corpus, BuiltinCorpus) else
             str(corpus.root.resolve()) if isinstance(corpus, FolderCorpus) else
             getattr(corpus, "spec", None) or type(corpus).__name__)
    return {lang: [_source_entry(label, corpus, lang, count_limit)] for lang in (langs or corpus.languages())}


def corpus_spec(value: Any) -> str | list[str]:
    """A CLI/recipe corpus value as open_corpus takes it: None or [] -> 'builtin', one entry -> that string,
    several -> the list (so a single `--corpus X` behaves exactly as before)."""
    if value is None:
        return "builtin"
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            return "builtin"
        return str(value[0]) if len(value) == 1 else [str(v) for v in value]
    return str(value)


def corpus_paths(spec: Any) -> list[str]:
    """The entries of a corpus spec as a flat list of strings (for input/output checks)."""
    if spec is None:
        return []
    if isinstance(spec, (list, tuple)):
        return [str(v) for v in spec]
    return [str(spec)]


def _open_source(spec, declared_languages, valid_frac, test_frac, seed) -> Corpus:
    """One entry of a list of sources: 'builtin', a folder, or (only here) a single `<lang>.*` file."""
    if str(spec) == "builtin":
        return BuiltinCorpus()
    if str(spec).startswith("hf:"):
        return _hf_corpus(str(spec), declared_languages, valid_frac, test_frac, seed)
    return FolderCorpus(spec, declared_languages, valid_frac=valid_frac, test_frac=test_frac, seed=seed, file_ok=True)


def open_corpus(
    spec: str | Path | list[str | Path] | None = "builtin",
    declared_languages: Mapping[str, Language] | None = None,
    valid_frac: float | None = None,
    test_frac: float | None = None,
    seed: int | None = None,
) -> Corpus:
    """'builtin' (or None) for the shipped corpus, `hf:<dataset>?...` for a streamed Hugging Face dataset (see
    `langmoe.data.hf_stream`), else a folder path (see FolderCorpus); a list mixes sources ('builtin', hf: specs,
    folders, single `<lang>.*` files; see MixedCorpus), a one-entry list is that entry alone."""
    if isinstance(spec, Corpus):
        return spec
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise LangmoeError("the corpus list is empty: give 'builtin', a folder or a <lang>.* file (or several)")
        if len(spec) == 1:
            return open_corpus(spec[0], declared_languages, valid_frac=valid_frac, test_frac=test_frac, seed=seed)
        labels = [_source_label(x) for x in spec]
        dup = next((x for i, x in enumerate(labels) if x in labels[:i]), None)
        if dup is not None:
            raise LangmoeError(f"corpus source {dup} is listed twice: list each source once")
        return MixedCorpus([(label, _open_source(x, declared_languages, valid_frac, test_frac, seed))
                            for label, x in zip(labels, spec, strict=True)])
    if spec is None or str(spec) == "builtin":
        return BuiltinCorpus()
    if str(spec).startswith("hf:"):
        return _hf_corpus(str(spec), declared_languages, valid_frac, test_frac, seed)
    return FolderCorpus(spec, declared_languages, valid_frac=valid_frac, test_frac=test_frac, seed=seed)


# --- statistics ----------------------------------------------------------------------------------------------


def choose_languages(corpus: Corpus, langs: list[str] | None = None, label: str = "the corpus") -> list[str]:
    """`langs` (all of the corpus's languages when None), refusing with one line any the corpus does not have."""
    have = list(corpus.languages())
    chosen = list(langs) if langs else have
    missing = [x for x in chosen if x not in have]
    if missing:
        raise LangmoeError(f"languages {', '.join(missing)} are not in {label} (it has: {', '.join(have)})")
    return chosen


class LanguageStats(BaseModel):
    code: str
    name: str
    family: str
    genus: str
    script: str
    splits: dict[str, SplitStats]


class CorpusStats(BaseModel):
    """Per-language sizes and the diversity of the corpus (distinct families and scripts)."""

    languages: list[LanguageStats]
    totals: dict[str, SplitStats]
    families: list[str]
    scripts: list[str]


def corpus_stats(corpus: Corpus, langs: list[str] | None = None) -> CorpusStats:
    """Documents, characters and UTF-8 bytes per language and split, with metadata and totals."""
    codes = list(langs) if langs else list(corpus.languages())
    rows: list[LanguageStats] = []
    totals = {s: SplitStats() for s in SPLITS}
    for code in codes:
        if hasattr(corpus, "split_stats"):
            splits = corpus.split_stats(code)
        else:  # a duck-typed corpus: count by streaming
            splits = {}
            for s in SPLITS:
                st = SplitStats()
                for doc in corpus.iter_documents(code, s):
                    st.docs += 1
                    st.chars += len(doc.text)
                    st.bytes += len(doc.text.encode("utf-8"))
                splits[s] = st
        meta = corpus.language(code) if hasattr(corpus, "language") else get_language(code)
        rows.append(LanguageStats(code=code, name=meta.name, family=meta.family, genus=meta.genus,
                                  script=meta.script, splits={s: splits[s].model_copy() for s in SPLITS}))
        for s in SPLITS:
            totals[s].docs += splits[s].docs
            totals[s].chars += splits[s].chars
            totals[s].bytes += splits[s].bytes
    return CorpusStats(
        languages=rows,
        totals=totals,
        families=sorted({r.family for r in rows}),
        scripts=sorted({r.script for r in rows}),
    )


def language_fingerprint(corpus: Any, lang: str) -> str:
    """What the documents of one language (all splits) depend on: `corpus.language_fingerprint(lang)` when the corpus
    has one (files, sizes and mtimes; the built-in files' bytes), else a hash of the texts (one streaming pass)."""
    fp = getattr(corpus, "language_fingerprint", None)
    if callable(fp):
        return fp(lang)
    return corpus_fingerprint(corpus, [lang])


def corpus_fingerprint(corpus: Any, langs: list[str] | None = None, split: str | None = None) -> str:
    """`corpus.fingerprint()` when it has one, else a hash of the texts themselves (one streaming pass)."""
    fp = getattr(corpus, "fingerprint", None)
    if isinstance(corpus, BuiltinCorpus):
        return corpus.fingerprint(langs)
    if callable(fp) and isinstance(corpus, (_FileCorpus, MixedCorpus)):
        return fp()
    h = hashlib.sha256()
    for lang in langs or corpus.languages():
        for s in [split] if split else list(SPLITS):
            h.update(f"\0{lang}\0{s}\0".encode())
            for doc in corpus.iter_documents(lang, s):
                h.update(doc.text.encode("utf-8"))
                h.update(b"\0")
    return "content:" + h.hexdigest()[:32]


__all__ = [
    "choose_languages",
    "SPLITS", "Document", "Corpus", "BuiltinCorpus", "FolderCorpus", "MixedCorpus", "open_corpus", "hash_split",
    "corpus_sources", "corpus_spec", "corpus_paths",
    "SplitStats", "LanguageStats", "CorpusStats", "corpus_stats", "corpus_fingerprint", "language_fingerprint",
]
