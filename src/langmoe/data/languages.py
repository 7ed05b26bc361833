"""Language metadata (ISO 639-1 code, family, genus, script) used to group languages and check corpora.

Grouping methods compare languages by family/genus/script, so the table covers far more languages than the
built-in corpus ships. Users with other languages declare them (``Language(...)``) and pass them as `declared`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, field_validator

from langmoe.errors import LangmoeError

_CODE_RE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


class Language(BaseModel):
    """One language: `family`/`genus` follow WALS-style genealogy, `script` names its usual writing system."""

    model_config = ConfigDict(frozen=True)

    code: str
    name: str
    family: str
    genus: str
    script: str

    @field_validator("code")
    @classmethod
    def _check_code(cls, v: str) -> str:
        if not _CODE_RE.match(v):
            raise ValueError(f"language code {v!r} must look like an ISO 639 code, e.g. 'de' or 'pt-br'")
        return v


# code | name | family | genus | script
_TABLE = """
af|Afrikaans|Indo-European|Germanic|Latin
am|Amharic|Afro-Asiatic|Semitic|Ethiopic
ar|Arabic|Afro-Asiatic|Semitic|Arabic
as|Assamese|Indo-European|Indo-Aryan|Bengali
az|Azerbaijani|Turkic|Oghuz|Latin
be|Belarusian|Indo-European|Slavic|Cyrillic
bg|Bulgarian|Indo-European|Slavic|Cyrillic
bn|Bengali|Indo-European|Indo-Aryan|Bengali
bo|Tibetan|Sino-Tibetan|Bodic|Tibetan
br|Breton|Indo-European|Celtic|Latin
bs|Bosnian|Indo-European|Slavic|Latin
ca|Catalan|Indo-European|Romance|Latin
cs|Czech|Indo-European|Slavic|Latin
cy|Welsh|Indo-European|Celtic|Latin
da|Danish|Indo-European|Germanic|Latin
de|German|Indo-European|Germanic|Latin
dz|Dzongkha|Sino-Tibetan|Bodic|Tibetan
el|Greek|Indo-European|Hellenic|Greek
en|English|Indo-European|Germanic|Latin
eo|Esperanto|constructed|constructed|Latin
es|Spanish|Indo-European|Romance|Latin
et|Estonian|Uralic|Finnic|Latin
eu|Basque|Basque|Basque|Latin
fa|Persian|Indo-European|Iranian|Arabic
fi|Finnish|Uralic|Finnic|Latin
fo|Faroese|Indo-European|Germanic|Latin
fr|French|Indo-European|Romance|Latin
fy|Western Frisian|Indo-European|Germanic|Latin
ga|Irish|Indo-European|Celtic|Latin
gd|Scottish Gaelic|Indo-European|Celtic|Latin
gl|Galician|Indo-European|Romance|Latin
gu|Gujarati|Indo-European|Indo-Aryan|Gujarati
ha|Hausa|Afro-Asiatic|Chadic|Latin
he|Hebrew|Afro-Asiatic|Semitic|Hebrew
hi|Hindi|Indo-European|Indo-Aryan|Devanagari
hr|Croatian|Indo-European|Slavic|Latin
ht|Haitian Creole|creole|French-based creole|Latin
hu|Hungarian|Uralic|Ugric|Latin
hy|Armenian|Indo-European|Armenian|Armenian
ia|Interlingua|constructed|constructed|Latin
id|Indonesian|Austronesian|Malayo-Polynesian|Latin
ig|Igbo|Niger-Congo|Igboid|Latin
is|Icelandic|Indo-European|Germanic|Latin
it|Italian|Indo-European|Romance|Latin
ja|Japanese|Japonic|Japanese|Japanese
jv|Javanese|Austronesian|Malayo-Polynesian|Latin
ka|Georgian|Kartvelian|Kartvelian|Georgian
kk|Kazakh|Turkic|Kipchak|Cyrillic
km|Khmer|Austroasiatic|Khmer|Khmer
kn|Kannada|Dravidian|Southern Dravidian|Kannada
ko|Korean|Koreanic|Korean|Hangul
ku|Kurdish|Indo-European|Iranian|Latin
ky|Kyrgyz|Turkic|Kipchak|Cyrillic
la|Latin|Indo-European|Italic|Latin
lb|Luxembourgish|Indo-European|Germanic|Latin
lo|Lao|Kra-Dai|Tai|Lao
lt|Lithuanian|Indo-European|Baltic|Latin
lv|Latvian|Indo-European|Baltic|Latin
mg|Malagasy|Austronesian|Malayo-Polynesian|Latin
mi|Maori|Austronesian|Malayo-Polynesian|Latin
mk|Macedonian|Indo-European|Slavic|Cyrillic
ml|Malayalam|Dravidian|Southern Dravidian|Malayalam
mn|Mongolian|Mongolic|Mongolic|Cyrillic
mr|Marathi|Indo-European|Indo-Aryan|Devanagari
ms|Malay|Austronesian|Malayo-Polynesian|Latin
mt|Maltese|Afro-Asiatic|Semitic|Latin
my|Burmese|Sino-Tibetan|Burmese-Lolo|Myanmar
nb|Norwegian Bokmal|Indo-European|Germanic|Latin
ne|Nepali|Indo-European|Indo-Aryan|Devanagari
nl|Dutch|Indo-European|Germanic|Latin
nn|Norwegian Nynorsk|Indo-European|Germanic|Latin
no|Norwegian|Indo-European|Germanic|Latin
oc|Occitan|Indo-European|Romance|Latin
om|Oromo|Afro-Asiatic|Cushitic|Latin
or|Odia|Indo-European|Indo-Aryan|Odia
pa|Punjabi|Indo-European|Indo-Aryan|Gurmukhi
pl|Polish|Indo-European|Slavic|Latin
ps|Pashto|Indo-European|Iranian|Arabic
pt|Portuguese|Indo-European|Romance|Latin
qu|Quechua|Quechuan|Quechuan|Latin
rm|Romansh|Indo-European|Romance|Latin
ro|Romanian|Indo-European|Romance|Latin
ru|Russian|Indo-European|Slavic|Cyrillic
rw|Kinyarwanda|Niger-Congo|Bantu|Latin
sa|Sanskrit|Indo-European|Indo-Aryan|Devanagari
sd|Sindhi|Indo-European|Indo-Aryan|Arabic
si|Sinhala|Indo-European|Indo-Aryan|Sinhala
sk|Slovak|Indo-European|Slavic|Latin
sl|Slovenian|Indo-European|Slavic|Latin
so|Somali|Afro-Asiatic|Cushitic|Latin
sq|Albanian|Indo-European|Albanian|Latin
sr|Serbian|Indo-European|Slavic|Cyrillic
st|Southern Sotho|Niger-Congo|Bantu|Latin
su|Sundanese|Austronesian|Malayo-Polynesian|Latin
sv|Swedish|Indo-European|Germanic|Latin
sw|Swahili|Niger-Congo|Bantu|Latin
ta|Tamil|Dravidian|Southern Dravidian|Tamil
te|Telugu|Dravidian|South-Central Dravidian|Telugu
tg|Tajik|Indo-European|Iranian|Cyrillic
th|Thai|Kra-Dai|Tai|Thai
ti|Tigrinya|Afro-Asiatic|Semitic|Ethiopic
tk|Turkmen|Turkic|Oghuz|Latin
tl|Tagalog|Austronesian|Malayo-Polynesian|Latin
tr|Turkish|Turkic|Oghuz|Latin
tt|Tatar|Turkic|Kipchak|Cyrillic
ug|Uyghur|Turkic|Karluk|Arabic
uk|Ukrainian|Indo-European|Slavic|Cyrillic
ur|Urdu|Indo-European|Indo-Aryan|Arabic
uz|Uzbek|Turkic|Karluk|Latin
vi|Vietnamese|Austroasiatic|Vietic|Latin
wo|Wolof|Niger-Congo|Atlantic|Latin
xh|Xhosa|Niger-Congo|Bantu|Latin
yi|Yiddish|Indo-European|Germanic|Hebrew
yo|Yoruba|Niger-Congo|Defoid|Latin
zh|Chinese|Sino-Tibetan|Sinitic|Han
zu|Zulu|Niger-Congo|Bantu|Latin
"""


def _parse_table(table: str) -> dict[str, Language]:
    out: dict[str, Language] = {}
    for line in table.strip().splitlines():
        code, name, family, genus, script = (f.strip() for f in line.split("|"))
        out[code] = Language(code=code, name=name, family=family, genus=genus, script=script)
    return out


LANGUAGES: dict[str, Language] = _parse_table(_TABLE)

_DECLARE_HINT = (
    "declare it with Language(code=..., name=..., family=..., genus=..., script=...) "
    "(a `languages:` entry in the recipe)"
)


def get_language(code: str, declared: Mapping[str, Language] | None = None) -> Language:
    """Look a code up in `declared` first, then in LANGUAGES; unknown codes are a user error."""
    if declared and code in declared:
        return declared[code]
    if code in LANGUAGES:
        return LANGUAGES[code]
    known = ", ".join(sorted(LANGUAGES))
    raise LangmoeError(f"unknown language code {code!r}; known: {known}; {_DECLARE_HINT}")


def validate_codes(codes: Iterable[str], declared: Mapping[str, Language] | None = None) -> list[Language]:
    """Resolve every code (declared ones win), rejecting duplicates and unknown codes in one message."""
    codes = list(codes)
    if not codes:
        raise LangmoeError("no language codes given; list at least one language, e.g. ['en', 'de']")
    seen: set[str] = set()
    dups = sorted({c for c in codes if c in seen or seen.add(c)})
    if dups:
        raise LangmoeError(f"duplicate language codes: {', '.join(dups)}; list each language once")
    unknown = [c for c in codes if not ((declared and c in declared) or c in LANGUAGES)]
    if unknown:
        known = ", ".join(sorted(LANGUAGES))
        raise LangmoeError(
            f"unknown language code(s) {', '.join(repr(c) for c in unknown)}; known: {known}; {_DECLARE_HINT}"
        )
    return [get_language(c, declared) for c in codes]


# --- script purity -------------------------------------------------------------------------------------

# Script name -> prefixes of `unicodedata.name` that count as that script. "Japanese" mixes kana and kanji;
# "Hangul" accepts Hanja too since Korean text occasionally carries it.
_SCRIPT_PREFIXES: dict[str, tuple[str, ...]] = {
    "Latin": ("LATIN",),
    "Cyrillic": ("CYRILLIC",),
    "Greek": ("GREEK",),
    "Arabic": ("ARABIC",),
    "Hebrew": ("HEBREW",),
    "Han": ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH", "IDEOGRAPHIC"),
    "Japanese": ("HIRAGANA", "KATAKANA", "CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH",
                 "HALFWIDTH KATAKANA", "IDEOGRAPHIC"),
    "Hangul": ("HANGUL", "CJK UNIFIED IDEOGRAPH"),
    "Devanagari": ("DEVANAGARI",),
    "Bengali": ("BENGALI",),
    "Gurmukhi": ("GURMUKHI",),
    "Gujarati": ("GUJARATI",),
    "Odia": ("ORIYA",),
    "Tamil": ("TAMIL",),
    "Telugu": ("TELUGU",),
    "Kannada": ("KANNADA",),
    "Malayalam": ("MALAYALAM",),
    "Sinhala": ("SINHALA",),
    "Thai": ("THAI",),
    "Lao": ("LAO",),
    "Khmer": ("KHMER",),
    "Myanmar": ("MYANMAR",),
    "Tibetan": ("TIBETAN",),
    "Georgian": ("GEORGIAN",),
    "Armenian": ("ARMENIAN",),
    "Ethiopic": ("ETHIOPIC",),
}

SCRIPTS: tuple[str, ...] = tuple(_SCRIPT_PREFIXES)


@lru_cache(maxsize=65536)
def _char_name(ch: str) -> str:
    return unicodedata.name(ch, "")


def _is_letter(ch: str) -> bool:
    # Letters and combining marks (Indic vowel signs are marks, not letters).
    return unicodedata.category(ch)[0] in "LM"


def script_share(text: str, script: str) -> float:
    """Share of letters (and combining marks) in `text` that belong to `script`; 0.0 when there are none.

    Used to drop paragraphs left untranslated (English inside a Chinese page) and mojibake.
    """
    try:
        prefixes = _SCRIPT_PREFIXES[script]
    except KeyError:
        raise LangmoeError(f"unknown script {script!r}; known scripts: {', '.join(SCRIPTS)}") from None
    total = hits = 0
    for ch in text:
        if not _is_letter(ch):
            continue
        name = _char_name(ch)
        if unicodedata.category(ch)[0] == "M" and not name.startswith(prefixes):
            continue  # generic combining marks (accents) carry no script of their own
        total += 1
        if name.startswith(prefixes):
            hits += 1
    return hits / total if total else 0.0


# --- declared languages (languages.yaml) ------------------------------------------------------------------

_FIELDS = ("name", "family", "genus", "script")


def parse_declared(data: object, where: str) -> dict[str, Language]:
    """Languages declared in a file: a mapping `code: {name, family, genus, script}` (optionally under a
    `languages:` key) or a list of such mappings with `code`. Each mistake is one LangmoeError naming the file,
    the entry and the field."""
    if isinstance(data, dict) and isinstance(data.get("languages"), (dict, list)):
        data = data["languages"]
    if data is None:
        return {}
    if isinstance(data, dict):
        items = []
        for code, entry in data.items():
            if not isinstance(entry, dict):
                raise LangmoeError(f"{where}: entry {code!r} must be a mapping of name, family, genus, script; got "
                                   f"{type(entry).__name__} {entry!r}"[:300])
            if "code" in entry and entry["code"] != code:
                raise LangmoeError(f"{where}: entry {code!r} has code {entry['code']!r}: give the code once")
            items.append((code, {k: v for k, v in entry.items() if k != "code"}))
    elif isinstance(data, list):
        items = []
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or "code" not in entry:
                raise LangmoeError(f"{where}: list entry {i} must be a mapping with code, name, family, genus, "
                                   f"script; got {entry!r}"[:300])
            items.append((entry["code"], {k: v for k, v in entry.items() if k != "code"}))
    else:
        raise LangmoeError(f"{where} must map language codes to {{name, family, genus, script}}; got "
                           f"{type(data).__name__}")
    out: dict[str, Language] = {}
    for code, entry in items:
        if not isinstance(code, str):
            raise LangmoeError(f"{where}: language code {code!r} is not text: quote it (YAML reads no/yes/on as "
                               "booleans), e.g. 'no':")
        if not _CODE_RE.match(code):
            raise LangmoeError(f"{where}: language code {code!r} must look like an ISO 639 code, e.g. 'de' or "
                               "'pt-br'")
        if code in out:
            raise LangmoeError(f"{where}: language {code!r} is declared twice: keep one entry")
        unknown = sorted(str(k) for k in entry if k not in _FIELDS)
        if unknown:
            raise LangmoeError(f"{where}: {code}: unknown field(s) {', '.join(unknown)}: use "
                               f"{', '.join(_FIELDS)}")
        for f in _FIELDS:
            if f not in entry:
                raise LangmoeError(f"{where}: {code}: missing field '{f}' (give {', '.join(_FIELDS)})")
            if not isinstance(entry[f], str) or not entry[f].strip():
                raise LangmoeError(f"{where}: {code}.{f} must be non-empty text, got {entry[f]!r}"[:300])
        out[code] = Language(code=code, **{f: entry[f].strip() for f in _FIELDS})
    return out
