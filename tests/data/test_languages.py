import pytest
from pydantic import ValidationError

from langmoe.data.languages import (
    LANGUAGES,
    SCRIPTS,
    Language,
    get_language,
    script_share,
    validate_codes,
)
from langmoe.errors import LangmoeError


def test_table_covers_many_languages_consistently():
    assert len(LANGUAGES) >= 100
    for code, lang in LANGUAGES.items():
        assert lang.code == code
        assert lang.script in SCRIPTS, (code, lang.script)
        assert lang.name and lang.family and lang.genus
    families = {lang.family for lang in LANGUAGES.values()}
    for fam in ("Indo-European", "Uralic", "Afro-Asiatic", "Sino-Tibetan", "Japonic", "Koreanic", "Dravidian",
                "Turkic", "Austronesian", "Austroasiatic", "Kra-Dai", "Niger-Congo", "constructed"):
        assert fam in families


@pytest.mark.parametrize(
    "code,family,genus,script",
    [
        ("de", "Indo-European", "Germanic", "Latin"),
        ("ru", "Indo-European", "Slavic", "Cyrillic"),
        ("fi", "Uralic", "Finnic", "Latin"),
        ("hu", "Uralic", "Ugric", "Latin"),
        ("ar", "Afro-Asiatic", "Semitic", "Arabic"),
        ("fa", "Indo-European", "Iranian", "Arabic"),
        ("ja", "Japonic", "Japanese", "Japanese"),
        ("ko", "Koreanic", "Korean", "Hangul"),
        ("zh", "Sino-Tibetan", "Sinitic", "Han"),
        ("ta", "Dravidian", "Southern Dravidian", "Tamil"),
        ("hi", "Indo-European", "Indo-Aryan", "Devanagari"),
        ("el", "Indo-European", "Hellenic", "Greek"),
        ("vi", "Austroasiatic", "Vietic", "Latin"),
        ("th", "Kra-Dai", "Tai", "Thai"),
        ("eo", "constructed", "constructed", "Latin"),
    ],
)
def test_known_metadata(code, family, genus, script):
    lang = get_language(code)
    assert (lang.family, lang.genus, lang.script) == (family, genus, script)


def test_unknown_code_raises_with_hint():
    with pytest.raises(LangmoeError, match=r"unknown language code 'xx'.*known: .*de.*declare it with"):
        get_language("xx")


def test_declared_language_wins_and_validate_codes():
    tok = Language(code="tok", name="Toki Pona", family="constructed", genus="constructed", script="Latin")
    assert get_language("tok", {"tok": tok}) is tok
    langs = validate_codes(["de", "tok"], declared={"tok": tok})
    assert [lang.code for lang in langs] == ["de", "tok"]
    with pytest.raises(LangmoeError, match="'tok'"):
        validate_codes(["de", "tok"])
    with pytest.raises(LangmoeError, match="duplicate.*de"):
        validate_codes(["de", "fr", "de"])
    with pytest.raises(LangmoeError, match="no language codes"):
        validate_codes([])


def test_language_rejects_bad_code():
    with pytest.raises(ValidationError):
        Language(code="German!", name="x", family="x", genus="x", script="Latin")


def test_script_share_hand_computed():
    # 4 Latin letters + 2 Cyrillic letters; digits, spaces and punctuation do not count.
    assert script_share("abcd дж 123!", "Latin") == pytest.approx(4 / 6)
    assert script_share("abcd дж 123!", "Cyrillic") == pytest.approx(2 / 6)
    assert script_share("12 ...", "Latin") == 0.0
    # accents as combining marks carry no script: "é" decomposed still counts as one Latin letter
    assert script_share("e\u0301t\u00e9", "Latin") == 1.0
    # Japanese mixes kana and kanji; Han alone rejects the kana
    assert script_share("日本語のテキスト", "Japanese") == 1.0
    assert script_share("日本語のテキスト", "Han") == pytest.approx(3 / 8)
    # Indic vowel signs are combining marks that belong to the script
    assert script_share("हिन्दी", "Devanagari") == 1.0
    assert script_share("한국어 text", "Hangul") == pytest.approx(3 / 7)
    with pytest.raises(LangmoeError, match="unknown script"):
        script_share("x", "Klingon")


def test_parse_declared_names_the_entry_and_field():
    import pytest

    from langmoe.data.languages import parse_declared
    from langmoe.errors import LangmoeError

    ok = parse_declared({"xx": {"name": "X", "family": "F", "genus": "G", "script": "Latin"}}, "l.yaml")
    assert ok["xx"].name == "X" and ok["xx"].script == "Latin"
    listed = parse_declared({"languages": [{"code": "yy", "name": "Y", "family": "F", "genus": "G",
                                            "script": "Greek"}]}, "l.yaml")
    assert listed["yy"].script == "Greek"
    assert parse_declared(None, "l.yaml") == {}
    bad = {
        "entry 'xx' must be a mapping": {"xx": "Klingon"},
        "xx: missing field 'genus'": {"xx": {"name": "X", "family": "F", "script": "Latin"}},
        "unknown field(s) famly": {"xx": {"name": "X", "famly": "F", "family": "F", "genus": "G", "script": "L"}},
        "xx.script must be non-empty text": {"xx": {"name": "X", "family": "F", "genus": "G", "script": ""}},
        "language code True is not text": {True: {"name": "X", "family": "F", "genus": "G", "script": "L"}},
        "declared twice": [{"code": "xx", "name": "X", "family": "F", "genus": "G", "script": "L"}] * 2,
        "has code 'yy'": {"xx": {"code": "yy", "name": "X", "family": "F", "genus": "G", "script": "L"}},
        "must map language codes": 42,
    }
    for needle, data in bad.items():
        with pytest.raises(LangmoeError) as e:
            parse_declared(data, "l.yaml")
        assert str(e.value).startswith("l.yaml") and needle in str(e.value), (needle, str(e.value))
