"""`langmoe languages`, ISO code / script normalisation, and `langmoe corpus show`."""

from __future__ import annotations

import json

import pytest

from langmoe.cli import main
from langmoe.data.language_list import (
    iso639,
    list_languages,
    lookup_code,
    normalize_language_code,
    normalize_script,
)
from langmoe.data.languages import LANGUAGES, SCRIPTS
from langmoe.errors import LangmoeError


@pytest.mark.parametrize("given,canon", [
    ("de", "de"), ("DE", "de"), ("deu", "de"), ("ger", "de"), ("ast", "ast"), ("nob", "nb"), ("pt_BR", "pt-br"),
    ("zh-Hant", "zh-hant"), ("yue", "yue"), ("fil", "fil"),
])
def test_iso_codes_normalise(given, canon):
    assert normalize_language_code(given) == canon


@pytest.mark.parametrize("bad,msg", [
    ("zz", "not an ISO 639-1"), ("qqx", "not an ISO 639-3"), ("x", "not a language code"), ("", "empty"),
    ("de--x", "not a language code"), ("english", "not a language code"),
])
def test_bad_codes_say_what_is_accepted(bad, msg):
    with pytest.raises(LangmoeError, match=msg) as e:
        normalize_language_code(bad)
    assert "ISO 639-1 (2-letter" in str(e.value) and "\n" not in str(e.value)


def test_iso_table_hand_values():
    assert iso639("ast").name == "Asturian" and iso639("ast").alpha_2 == ""
    assert iso639("de").alpha_3 == "deu" and iso639("fre").alpha_2 == "fr"
    assert all(iso639(c) is not None for c in LANGUAGES), "every metadata code is an ISO 639-1 code"
    info = lookup_code("ast")
    assert info["code"] == "ast" and info["metadata"] is False and info["iso_name"] == "Asturian"
    info = lookup_code("eng")
    assert info["code"] == "en" and info["metadata"] is True and info["family"] == "Indo-European"


@pytest.mark.parametrize("given,ours", [
    ("Latn", "Latin"), ("latn", "Latin"), ("Latin", "Latin"), ("CYRL", "Cyrillic"), ("Hang", "Hangul"),
    ("Kore", "Hangul"), ("Hans", "Han"), ("Jpan", "Japanese"), ("Orya", "Odia"), ("Oriya", "Odia"),
    ("Mymr", "Myanmar"), ("Adlm", "Adlam"),
])
def test_scripts_normalise(given, ours):
    assert normalize_script(given) == ours


def test_every_metadata_script_has_an_iso_code():
    assert {normalize_script(s) for s in SCRIPTS} == set(SCRIPTS)
    for r in list_languages():
        assert normalize_script(r.iso15924) == r.script
    with pytest.raises(LangmoeError, match="no character table"):
        normalize_script("Adlm", known_only=True)
    with pytest.raises(LangmoeError, match="ISO 15924 code"):
        normalize_script("Foo")


def test_list_languages_and_filters():
    rows = list_languages()
    assert [r.code for r in rows] == sorted(LANGUAGES)
    by = {r.code: r for r in rows}
    assert (by["fi"].family, by["fi"].genus, by["fi"].script, by["fi"].iso639_3) == ("Uralic", "Finnic", "Latin", "fin")
    assert by["de"].builtin and not by["af"].builtin
    assert {r.code for r in list_languages(family="uralic")} == {"et", "fi", "hu"}
    assert {r.code for r in list_languages(script="Grek")} == {"el"}
    assert all(r.builtin for r in list_languages(builtin_only=True))
    with pytest.raises(LangmoeError, match="known families: .*Uralic"):
        list_languages(family="Uralik")


def test_languages_cli(capsys):
    assert main(["languages"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split() == ["code", "name", "family", "genus", "script", "iso639-3", "iso15924", "builtin"]
    assert len(lines) == 2 + len(LANGUAGES)
    assert any(ln.split()[:2] == ["he", "Hebrew"] for ln in lines)
    assert main(["languages", "--json", "--script", "Latn", "--family", "Uralic"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["code"] for d in data} == {"et", "fi", "hu"} and data[0]["script"] == "Latin"
    assert main(["languages", "ast", "deu"]) == 0
    out = capsys.readouterr().out
    assert "Asturian" in out and "no metadata" in out and "German" in out
    assert main(["languages", "--script", "Latinx"]) == 2
    err = capsys.readouterr().err
    assert "unknown script 'Latinx'" in err and err.count("\n") == 1
    assert main(["languages", "q1"]) == 2
    assert "ISO 639-1" in capsys.readouterr().err


def test_corpus_show(capsys):
    from langmoe.data.corpus import open_corpus

    assert main(["corpus", "show", "--lang", "deu", "-n", "2", "--max-chars", "50"]) == 0
    out = capsys.readouterr().out
    docs = [d for d in open_corpus("builtin").iter_documents("de", "test")][:2]
    headers = [ln for ln in out.splitlines() if ln.startswith("=== ")]
    assert len(headers) == 2
    for h, d in zip(headers, docs, strict=True):
        assert f"id {d.id}," in h and f"{len(d.text):,} characters" in h and "de test document" in h
    assert docs[0].text[:50] in out
    assert main(["corpus", "show", "--lang", "fr", "--split", "valid", "-n", "1", "--json", "--max-chars", "0"]) == 0
    rec = json.loads(capsys.readouterr().out)
    first = next(open_corpus("builtin").iter_documents("fr", "valid"))
    assert rec["text"] == first.text and rec["chars"] == len(first.text) and rec["id"] == first.id


def test_corpus_show_folder_and_errors(tmp_path, capsys):
    (tmp_path / "en.jsonl").write_text("".join(
        json.dumps({"id": f"d{i}", "text": f"document number {i}", "split": "test"}) + "\n" for i in range(5)))
    assert main(["corpus", "show", "--corpus", str(tmp_path), "--lang", "en", "-n", "10"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== en test document") == 5 and "document number 4" in out
    for argv, msg in [
        (["--lang", "ast"], "not in the corpus"),
        (["--lang", "zz"], "not an ISO 639-1"),
        (["--lang", "de", "--split", "dev2"], "unknown split"),
        (["--lang", "de", "-n", "0"], "-n must be at least 1"),
    ]:
        assert main(["corpus", "show", *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1
