"""A Hugging Face dataset read with `streaming=True` as a corpus: `--corpus 'hf:<folder or hub id>?<options>'`.

Why streaming: a FineWeb-2 / CulturaX / MADLAD-400 slice is far larger than a disk cache; streaming reads rows as
they come and stops when a run has what it needs (the token store asks for only that). Languages are found in one
of two ways:

    hf:HuggingFaceFW/fineweb-2?configs=deu_Latn:de,fra_Latn:fr     one dataset config per language (config:code)
    hf:/data/crawl?lang=language&langs=de,fr                       a language field, and the codes to read

Options (`&`-separated): `text` (the text field, default `text`), `id` (the id field, default `id`, used when a
row has it), `split` (the dataset split read, default `train`), `revision` (pin a hub dataset), `valid_frac`,
`test_frac`, `seed` (the held-out shares of the hash split, defaults 0.01, 0.01, 0). A value `value:code` maps a
dataset's language name to a langmoe code. Each document gets its train/valid/test split from
`hash_split(lang, id or text, ...)`, exactly as documents of a folder corpus without a split do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from langmoe.data.corpus import _DEFAULT_FRACS, _FileCorpus, _known, _optional
from langmoe.data.languages import Language
from langmoe.errors import LangmoeError

PREFIX = "hf:"
_OPTIONS = {"text", "id", "lang", "langs", "configs", "split", "revision", "valid_frac", "test_frac", "seed"}


def is_hf_spec(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def _pairs(value: str, what: str, spec: str) -> dict[str, str]:
    """`a:x,b:y,c` -> {code: dataset name}: {"x": "a", "y": "b", "c": "c"}."""
    out: dict[str, str] = {}
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        name, _, code = item.partition(":")
        code = code or name
        if code in out:
            raise LangmoeError(f"{spec}: language {code!r} is listed twice in {what}: list each language once")
        out[code] = name
    if not out:
        raise LangmoeError(f"{spec}: {what} is empty: list languages, e.g. {what}=de,fr")
    return out


def parse_hf_spec(spec: str) -> tuple[str, dict[str, str]]:
    """('folder or hub id', options) of an `hf:` corpus spec; unknown options are one line."""
    if not is_hf_spec(spec):
        raise LangmoeError(f"{spec!r} is not an hf: corpus spec")
    path, _, query = spec[len(PREFIX):].partition("?")
    if not path:
        raise LangmoeError(f"{spec}: give a dataset after hf:, a local folder or a hub id (org/name)")
    opts = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(opts) - _OPTIONS)
    if unknown:
        raise LangmoeError(f"{spec}: unknown option(s) {', '.join(unknown)}: use {', '.join(sorted(_OPTIONS))}")
    return path, opts


def _fracs(opts: Mapping[str, str], spec: str, given: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(_DEFAULT_FRACS)
    for k in ("valid_frac", "test_frac", "seed"):
        if k in opts:
            try:
                out[k] = int(opts[k]) if k == "seed" else float(opts[k])
            except ValueError:
                raise LangmoeError(f"{spec}: {k} must be a number, got {opts[k]!r}") from None
        if given.get(k) is not None:
            out[k] = given[k]
    return out


class HFStreamCorpus(_FileCorpus):
    """Documents of a Hugging Face dataset, streamed (see the module docstring for the spec)."""

    def __init__(self, spec: str, declared_languages: Mapping[str, Language] | None = None,
                 valid_frac: float | None = None, test_frac: float | None = None, seed: int | None = None):
        self.spec = spec
        self.path, opts = parse_hf_spec(spec)
        fr = _fracs(opts, spec, {"valid_frac": valid_frac, "test_frac": test_frac, "seed": seed})
        try:
            super().__init__(declared_languages, fr["valid_frac"], fr["test_frac"], fr["seed"])
        except LangmoeError as e:
            raise LangmoeError(f"{spec}: {e}") from None
        self.text_field, self.id_field = opts.get("text") or "text", opts.get("id") or "id"
        self.hf_split, self.revision = opts.get("split") or "train", opts.get("revision") or None
        self.lang_field = opts.get("lang") or None
        if "configs" in opts and self.lang_field:
            raise LangmoeError(f"{spec}: give either configs=... (one config per language) or lang=<field> with "
                               "langs=..., not both")
        if "configs" in opts:
            self.configs: dict[str, str] | None = _pairs(opts["configs"], "configs", spec)
            self.values: dict[str, str] = {}
        elif self.lang_field:
            if "langs" not in opts:
                raise LangmoeError(f"{spec}: with lang={self.lang_field} also list the languages to read, e.g. "
                                   "langs=de,fr (or langs=deu_Latn:de,fra_Latn:fr)")
            self.configs, self.values = None, _pairs(opts["langs"], "langs", spec)
        else:
            raise LangmoeError(f"{spec}: say where the languages are: configs=<config>:<code>,... (one config per "
                               "language) or lang=<field>&langs=<code>,...")
        codes = sorted(self.configs or self.values)
        unknown = [c for c in codes if c not in self.declared and c not in _known()]
        if unknown:
            raise LangmoeError(f"{spec}: unknown language code(s) {', '.join(unknown)}: map the dataset's names to "
                               "ISO 639 codes (name:code) or declare them")
        self._codes = codes

    def languages(self) -> list[str]:
        return list(self._codes)

    def _where(self, lang: str) -> str:
        return f"{self.spec} [{lang}]"

    def _source_name(self, lang: str) -> str:
        return f"hf:{self.path}"

    def _open(self, lang: str):
        load_dataset = _optional("datasets").load_dataset
        config = self.configs[lang] if self.configs else None
        try:
            return load_dataset(self.path, name=config, split=self.hf_split, streaming=True, revision=self.revision)
        except Exception as e:  # noqa: BLE001 - missing folder, unknown config or split, no network, ...
            what = " ".join(str(e).split())[:160] or type(e).__name__
            raise LangmoeError(f"cannot stream the Hugging Face dataset {self.path!r} (config {config}, split "
                               f"{self.hf_split}): {what}") from None

    def _records(self, lang: str) -> Iterator[tuple[str, str, str | None, bool]]:
        want = self.values.get(lang) if self.lang_field else None
        for i, row in enumerate(self._open(lang)):
            if self.text_field not in row:
                raise LangmoeError(f"{self._where(lang)} has no {self.text_field!r} field (fields: "
                                   f"{', '.join(map(str, row))}): name the text field with text=<field>")
            if want is not None and str(row.get(self.lang_field)) != want:
                continue
            text = row[self.text_field]
            if text is None:
                continue
            if not isinstance(text, str):
                raise LangmoeError(f"{self._where(lang)} row {i}: {self.text_field!r} must be a string, got "
                                   f"{type(text).__name__}")
            did = row.get(self.id_field)
            yield (str(did) if did is not None else str(i)), text, None, did is not None

    def language_fingerprint(self, lang: str) -> str:
        """The options, the language's config or value and, for a local folder, its files (names, sizes, mtimes);
        a hub dataset is identified by id and `revision` (pin one so a changed upstream is noticed)."""
        self._check_lang(lang)
        h = hashlib.sha256(f"{self.path}|{self.text_field}|{self.id_field}|{self.hf_split}|{self.revision}|"
                           f"{self.lang_field}|{self.valid_frac}|{self.test_frac}|{self.seed}|{lang}|"
                           f"{(self.configs or self.values)[lang]}".encode())
        root = Path(self.path).expanduser()
        if root.exists():
            for f in sorted(p for p in root.rglob("*") if p.is_file()):
                st = f.stat()
                h.update(f"|{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
        if lang in self.declared:
            h.update(self.declared[lang].model_dump_json().encode())
        return "hf-lang:" + h.hexdigest()[:32]

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"hf")
        for code in self._codes:
            h.update(self.language_fingerprint(code).encode())
        return "hf:" + h.hexdigest()[:32]


__all__ = ["HFStreamCorpus", "is_hf_spec", "parse_hf_spec"]
