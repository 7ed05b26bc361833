"""Every language langmoe knows, and ISO code normalisation: ISO 639-1 / 639-3 (/ 639-2/B) language codes and
ISO 15924 script codes.

Why a shipped table (data/iso/, from Debian's iso-codes): a real code such as `ast` (Asturian, ISO 639-3) must be
recognised as a valid code even though langmoe has no family/genus metadata for it, and `Latn` must be understood as
the script langmoe calls `Latin`, without a runtime dependency.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel

from langmoe.data.languages import LANGUAGES, SCRIPTS
from langmoe.errors import LangmoeError

__all__ = [
    "IsoLanguage", "LanguageRow", "iso639", "iso15924_scripts", "list_languages", "lookup_code",
    "normalize_language_code", "normalize_script", "SCRIPT_TO_ISO15924",
]

_ISO_DIR = Path(__file__).resolve().parent / "iso"
_BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

# langmoe's script names (data/languages.py) -> ISO 15924 code. Extra ISO codes that mean the same script for
# langmoe's purposes (simplified/traditional Han, Korean = Hangul + Han) are in _ISO15924_ALIASES.
SCRIPT_TO_ISO15924: dict[str, str] = {
    "Latin": "Latn", "Cyrillic": "Cyrl", "Greek": "Grek", "Arabic": "Arab", "Hebrew": "Hebr", "Han": "Hani",
    "Japanese": "Jpan", "Hangul": "Hang", "Devanagari": "Deva", "Bengali": "Beng", "Gurmukhi": "Guru",
    "Gujarati": "Gujr", "Odia": "Orya", "Tamil": "Taml", "Telugu": "Telu", "Kannada": "Knda", "Malayalam": "Mlym",
    "Sinhala": "Sinh", "Thai": "Thai", "Lao": "Laoo", "Khmer": "Khmr", "Myanmar": "Mymr", "Tibetan": "Tibt",
    "Georgian": "Geor", "Armenian": "Armn", "Ethiopic": "Ethi",
}
_ISO15924_ALIASES = {"Hans": "Han", "Hant": "Han", "Kore": "Hangul", "Hrkt": "Japanese", "Hira": "Japanese",
                     "Kana": "Japanese"}

_CODE_RE = re.compile(r"^([A-Za-z]{2,3})(?:[-_]([A-Za-z0-9]{2,8}(?:[-_][A-Za-z0-9]{2,8})*))?$")


class IsoLanguage(BaseModel):
    """One ISO 639-3 entry: `alpha_2` is the ISO 639-1 code where one exists, `bibliographic` the 639-2/B code."""

    alpha_3: str
    alpha_2: str = ""
    bibliographic: str = ""
    name: str


class LanguageRow(BaseModel):
    """A row of `langmoe languages`."""

    code: str
    name: str
    family: str
    genus: str
    script: str
    iso639_3: str
    iso15924: str
    builtin: bool  # has a file in the built-in corpus


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, IsoLanguage], dict[str, IsoLanguage]]:
    """(by alpha_3 or bibliographic code, by alpha_2)."""
    by3: dict[str, IsoLanguage] = {}
    by2: dict[str, IsoLanguage] = {}
    path = _ISO_DIR / "iso639-3.tsv"
    if not path.is_file():
        raise LangmoeError(f"the ISO 639-3 table is missing at {path}: reinstall langmoe")
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    for line in lines:
        a3, a2, b, name = line.split("\t")
        e = IsoLanguage(alpha_3=a3, alpha_2=a2, bibliographic=b, name=name)
        by3[a3] = e
        if a2:
            by2[a2] = e
    for e in list(by3.values()):
        if e.bibliographic and e.bibliographic not in by3:
            by3[e.bibliographic] = e
    return by3, by2


@lru_cache(maxsize=1)
def iso15924_scripts() -> dict[str, str]:
    """ISO 15924 code (e.g. 'Latn') -> English name (e.g. 'Latin')."""
    path = _ISO_DIR / "iso15924.tsv"
    if not path.is_file():
        raise LangmoeError(f"the ISO 15924 table is missing at {path}: reinstall langmoe")
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        code, name = line.split("\t")
        out[code] = name
    return out


def iso639(code: str) -> IsoLanguage | None:
    """The ISO 639 entry of a 2- or 3-letter code (639-1, 639-3 or 639-2/B), or None when it is not one."""
    by3, by2 = _tables()
    c = code.strip().lower()
    return by2.get(c) if len(c) == 2 else by3.get(c)


_CODE_HINT = ("give an ISO 639-1 (2-letter, e.g. 'de') or ISO 639-3 (3-letter, e.g. 'deu', 'ast') code, optionally "
              "with a region, e.g. 'pt-br'; `langmoe languages` lists the languages with metadata")


def normalize_language_code(code: str) -> str:
    """The canonical form of a language code: lower case, '-' before a region, and the ISO 639-1 code where the
    language has one ('deu', 'ger', 'DE' -> 'de'; 'ast' stays 'ast'). Raises LangmoeError for a non-ISO code."""
    if not isinstance(code, str) or not code.strip():
        raise LangmoeError(f"empty language code: {_CODE_HINT}")
    m = _CODE_RE.match(code.strip())
    if not m:
        raise LangmoeError(f"{code!r} is not a language code: {_CODE_HINT}")
    base, rest = m.group(1).lower(), m.group(2)
    entry = iso639(base)
    if entry is None:
        kind = "ISO 639-1" if len(base) == 2 else "ISO 639-3"
        raise LangmoeError(f"{base!r} is not an {kind} language code: {_CODE_HINT}")
    canon = entry.alpha_2 or entry.alpha_3
    return canon + ("-" + rest.replace("_", "-").lower() if rest else "")


def lookup_code(code: str) -> dict[str, str | bool]:
    """What langmoe knows about a code: canonical form, ISO name, and metadata when it has some."""
    canon = normalize_language_code(code)
    base = canon.split("-")[0]
    entry = iso639(base)
    meta = LANGUAGES.get(canon) or LANGUAGES.get(base)
    out: dict[str, str | bool] = {"given": code, "code": canon, "iso639_3": entry.alpha_3 if entry else "",
                                  "iso_name": entry.name if entry else "", "metadata": meta is not None,
                                  "builtin": (_BUILTIN_DIR / f"{canon}.jsonl.gz").is_file()}
    if meta is not None:
        out.update(name=meta.name, family=meta.family, genus=meta.genus, script=meta.script)
    return out


def normalize_script(name: str, *, known_only: bool = False) -> str:
    """langmoe's script name for a script name or ISO 15924 code, any case ('Latn', 'latin' -> 'Latin').

    A valid ISO 15924 script langmoe has no character table for comes back under its ISO name ('Adlm' -> 'Adlam'),
    or raises with `known_only`.
    """
    s = (name or "").strip()
    by_lower = {x.lower(): x for x in SCRIPTS}
    if s.lower() in by_lower:
        return by_lower[s.lower()]
    iso = iso15924_scripts()
    code = next((c for c in iso if c.lower() == s.lower()), None)
    if code is None:  # an ISO English name such as 'Oriya' or 'Hangul (Hangŭl, Hangeul)'
        code = next((c for c, n in iso.items() if s.lower() in (n.lower(), n.split(" (")[0].lower())), None)
    if code is not None:
        for ours, c in SCRIPT_TO_ISO15924.items():
            if c == code:
                return ours
        if code in _ISO15924_ALIASES:
            return _ISO15924_ALIASES[code]
        if not known_only:
            return iso[code].split(" (")[0]
        raise LangmoeError(f"script {name!r} (ISO 15924 {code}) has no character table in langmoe; supported: "
                           f"{', '.join(SCRIPTS)}")
    raise LangmoeError(
        f"unknown script {name!r}: give a script name ({', '.join(SCRIPTS[:4])}, ...) or an ISO 15924 code "
        f"({', '.join(SCRIPT_TO_ISO15924[s] for s in SCRIPTS[:4])}, ...); `langmoe languages` shows the scripts used"
    )


def list_languages(family: str | None = None, script: str | None = None, builtin_only: bool = False
                   ) -> list[LanguageRow]:
    """Every language with langmoe metadata, sorted by code; `family` (case-insensitive) and `script` (name or
    ISO 15924 code) filter."""
    rows = []
    for code, lang in sorted(LANGUAGES.items()):
        entry = iso639(code.split("-")[0])
        rows.append(LanguageRow(code=code, name=lang.name, family=lang.family, genus=lang.genus, script=lang.script,
                                iso639_3=entry.alpha_3 if entry else "", iso15924=SCRIPT_TO_ISO15924.get(lang.script, ""),
                                builtin=(_BUILTIN_DIR / f"{code}.jsonl.gz").is_file()))
    if family is not None:
        families = sorted({r.family for r in rows})
        match = next((f for f in families if f.lower() == family.strip().lower()), None)
        if match is None:
            raise LangmoeError(f"unknown family {family!r}: known families: {', '.join(families)}")
        rows = [r for r in rows if r.family == match]
    if script is not None:
        s = normalize_script(script)
        rows = [r for r in rows if r.script == s]
    if builtin_only:
        rows = [r for r in rows if r.builtin]
    return rows
