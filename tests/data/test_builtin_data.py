"""The shipped corpus: format, metadata, splits, cleanliness, manifest integrity; and the builder's pieces."""

import gzip
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from script_loader import load_script

import langmoe.data
from langmoe.data.languages import LANGUAGES, script_share
from langmoe.errors import LangmoeError

BUILTIN = Path(langmoe.data.__file__).parent / "builtin"


def _load_builder():
    """The corpus builder is a build tool in tools/, outside the runtime package."""
    return load_script("tools/build_builtin.py")


bb = _load_builder()
MANIFEST = json.loads((BUILTIN / "manifest.json").read_text("utf-8"))
CODES = sorted(MANIFEST["languages"])
CACHE = Path(os.environ.get("LANGMOE_DEB_CACHE", "/work/debcache"))

RESIDUE = [
    re.compile(r"\\f[BIRP1-4]"),  # roff font escapes
    re.compile(r"^\.[A-Z]{2}\b", re.M),  # roff requests (.TH, .SH, .PP ...)
    re.compile(r"<[a-z]+[ >/]"),  # HTML / XML tags
    re.compile(r"&(amp|lt|gt|quot|nbsp|#\d+);"),  # undecoded entities
    re.compile(r"[\x00-\x08\x0b-\x1f\x7f]"),  # backspaces (overstrike), escapes, control characters
]


def _docs(code):
    with gzip.open(BUILTIN / f"{code}.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def all_docs():
    return {code: _docs(code) for code in CODES}


def test_coverage_of_languages_families_scripts():
    assert len(CODES) >= 30
    langs = [LANGUAGES[c] for c in CODES]  # KeyError = shipped language without metadata
    assert len({lang.family for lang in langs}) >= 8
    scripts = {lang.script for lang in langs}
    assert len(scripts) >= 8
    assert {"Latin", "Cyrillic", "Hangul", "Han", "Japanese"} <= scripts
    assert {"ar", "fa"} & set(CODES)
    assert "ko" in CODES
    assert any(lang.genus == "Indo-Aryan" and lang.script != "Latin" for lang in langs)
    assert {"en", "de", "fr", "ru", "zh"} <= set(CODES)


def test_manifest_matches_files():
    files = sorted(p.name for p in BUILTIN.glob("*.jsonl.gz"))
    assert files == sorted(f"{c}.jsonl.gz" for c in CODES)
    for code, entry in MANIFEST["languages"].items():
        data = (BUILTIN / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], code
        assert len(data) == entry["compressed_bytes"]
        assert data[4:8] == b"\0\0\0\0", "gzip mtime must be 0 for bit-identical rebuilds"
        meta = LANGUAGES[code]
        assert (entry["family"], entry["script"]) == (meta.family, meta.script)
    assert MANIFEST["builder_version"] == bb.BUILDER_VERSION
    assert MANIFEST["packages"]
    total = sum(p.stat().st_size for p in BUILTIN.iterdir())
    assert total <= 15_000_000
    sources = (BUILTIN / "SOURCES.md").read_text("utf-8")
    for pkg in MANIFEST["packages"]:
        if any(pkg in e["sources"] for e in MANIFEST["languages"].values()):
            assert f"## {pkg} " in sources


def test_files_parse_and_splits(all_docs):
    for code, docs in all_docs.items():
        entry = MANIFEST["languages"][code]
        assert len(docs) == entry["docs"]
        ids = [d["id"] for d in docs]
        assert len(set(ids)) == len(ids), code
        counts = Counter()
        for d in docs:
            assert set(d) == {"id", "source", "split", "text"}
            assert d["split"] in ("train", "valid", "test")
            assert isinstance(d["text"], str) and d["text"].strip()
            assert d["source"] in MANIFEST["packages"]
            counts[d["split"]] += 1
        for split in ("train", "valid", "test"):
            assert counts[split] >= 1, (code, split)
            assert entry["splits"][split]["docs"] == counts[split]
        assert entry["splits"]["train"]["chars"] > entry["splits"]["test"]["chars"]


def test_parallel_pages_share_a_split(all_docs):
    """The split depends on the language-neutral key: a man page and its translations never straddle splits."""
    by_key = {}
    for docs in all_docs.values():
        for d in docs:
            key = d["id"].split(":", 2)[2]
            if key.startswith("man/"):
                by_key.setdefault(key, set()).add(d["split"])
    moved = sum(len(s) > 1 for s in by_key.values())
    assert moved <= 2 * len(CODES)  # only the few docs `_ensure_splits` moved for thin languages


def test_script_purity(all_docs):
    for code, docs in all_docs.items():
        script = LANGUAGES[code].script
        text = "\n".join(d["text"] for d in docs)
        share = script_share(text, script)
        assert share >= (0.97 if script == "Latin" else 0.85), (code, share)


def test_no_markup_residue(all_docs):
    for code, docs in all_docs.items():
        for d in docs:
            for rx in RESIDUE:
                m = rx.search(d["text"])
                assert m is None, (code, d["id"], rx.pattern, d["text"][max(0, m.start() - 40):m.end() + 40])


def test_no_duplicate_paragraphs(all_docs):
    for code, docs in all_docs.items():
        seen = Counter(
            bb.normalise_for_dedup(p) for d in docs for p in d["text"].split("\n\n")
        )
        dups = [p for p, n in seen.items() if n > 1 and p]
        assert not dups, (code, dups[:3])


# --- builder units ------------------------------------------------------------------------------------


def test_split_is_deterministic_and_roughly_90_5_5():
    splits = Counter(bb.split_of(f"man/page{i}.1") for i in range(4000))
    assert bb.split_of("man/ls.1") == bb.split_of("man/ls.1")
    assert 0.87 < splits["train"] / 4000 < 0.93
    assert 0.03 < splits["valid"] / 4000 < 0.07
    assert 0.03 < splits["test"] / 4000 < 0.07


def test_no_v1_train_document_is_held_out(all_docs):
    """The shipped bases were pretrained on release 1.0's train split: none of it may be in valid or test."""
    v1_train = set(bb.read_previous_splits([bb.V1_TRAIN_IDS]))
    assert MANIFEST["v1_train_ids"] == bb.v1_train_digest()  # the committed list is release 1.0's
    leaked = [(d["id"], d["split"]) for docs in all_docs.values() for d in docs
              if d["split"] != "train" and d["id"] in v1_train]
    assert not leaked, leaked[:5]


def test_test_split_is_5000_chars_or_listed_thin():
    thin = MANIFEST["thin_test"]
    for code, entry in MANIFEST["languages"].items():
        chars = entry["splits"]["test"]["chars"]
        assert chars >= MANIFEST["min_test_chars"] >= 5000 or code in thin, (code, chars)
        assert code not in thin or chars < MANIFEST["min_test_chars"], code
        assert entry["splits"]["valid"]["docs"] >= 1


_CJK = "[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]"


@pytest.mark.parametrize("code", ["ja", "zh"])
def test_no_cjk_line_join_spaces(all_docs, code):
    """mandoc and the HTML converter turn source line breaks into spaces; CJK text has none between characters."""
    gaps = chars = 0
    for d in all_docs[code]:
        if d["source"].startswith("fortunes-"):
            continue  # fortunes are plain text as written (poems space their lines on purpose)
        gaps += len(re.findall(f"(?<={_CJK}) (?={_CJK})", d["text"]))
        chars += len(d["text"])
    assert gaps / chars * 10_000 < 0.5, (code, gaps)  # builder 1.0: 157 per 10k in ja, 254 in manpages-zh


def test_new_filters_left_no_label_lists_or_holes(all_docs):
    """Outside the stable languages, LibreOffice/GNOME help has no runs of 3+ bare labels and no link holes."""
    stable = set(MANIFEST["stable_languages"])
    for code, docs in all_docs.items():
        if code in stable:
            continue
        in_runs = total = 0
        for d in docs:
            if not d["source"].startswith(("libreoffice-help-", "gnome-user-docs")):
                continue
            pars = d["text"].split("\n\n")
            # de-duplication after the filter can join a few labels into a new short run
            in_runs += sum(map(len, pars)) - sum(map(len, bb.drop_label_runs(pars)))
            total += sum(map(len, pars))
            assert not any(bb.has_hole(p) for p in pars), (code, d["id"])
        assert in_runs <= 0.01 * max(total, 1), (code, in_runs, total)  # 1.0: 7-28% in LibreOffice help


def test_ensure_splits_moves_train_docs_when_needed():
    docs = [{"id": f"ga:x:{i}", "split": "train"} for i in range(3)]
    bb._ensure_splits(docs)
    assert sorted(d["split"] for d in docs) == ["test", "train", "valid"]
    with pytest.raises(LangmoeError, match="too few documents"):
        bb._ensure_splits([{"id": "x", "split": "train"}])


def test_gzip_is_bit_identical():
    docs = [{"id": "en:a:b", "source": "a", "split": "train", "text": "Hello wörld"}]
    a, b = bb.gzip_jsonl(docs), bb.gzip_jsonl(docs)
    assert a == b
    assert json.loads(gzip.decompress(a)) == docs[0]


def test_keep_paragraph_filters():
    prose_de = "Die obligatorischen Argumente für Optionen sind für deren Kurz- und Langform gleich."
    assert bb.keep_paragraph(prose_de, "de")
    assert not bb.keep_paragraph("Use the following options when you want this behaviour in the shell.", "de")
    assert not bb.keep_paragraph("ls [OPTION]... [DATEI]... {a; b} $x = <y>", "de")
    assert not bb.keep_paragraph("Siehe https://www.example.org/ für Einzelheiten und weitere Hinweise.", "de")
    assert bb.keep_paragraph("これは日本語の文章です。", "ja")
    assert not bb.keep_paragraph("This paragraph was left untranslated in English.", "ja")
    assert not bb.keep_paragraph("Это русский текст, а не немецкий.", "de")


def test_normalise_for_dedup_ignores_case_digits_punctuation():
    assert bb.normalise_for_dedup("Version 5.10, Linux!") == bb.normalise_for_dedup("version 6.1 linux")


def test_html_paragraphs_drop_code_and_navigation():
    raw = """<html><head><title>T</title><script>var x=1;</script></head><body>
    <div class="navheader">Prev Next</div>
    <p>Run <code>apt update</code> to refresh&nbsp;the lists.</p>
    <pre class="screen">$ apt update</pre>
    <ul><li>First item</li><li>Second <em>item</em></li></ul>
    <page xmlns="http://projectmallard.org/1.0/"><info><desc>skip me</desc></info>
    <item><p>Mallard text</p></item><code mime="text/x-shellscript">rm -rf /</code></page>
    </body></html>"""
    assert bb.html_paragraphs(raw) == [
        "Run apt update to refresh the lists.", "First item", "Second item", "Mallard text",
    ]


def test_fortune_chunks():
    raw = "one\nline two  \n%\n\n%\nthree\n%\n"
    assert bb.fortune_chunks(raw) == [["one\nline two", "three"]]


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc not installed")
def test_render_man_keeps_prose_only(tmp_path):
    page = tmp_path / "demo.1"
    page.write_text(
        ".TH DEMO 1\n.SH NAME\ndemo \\- show a demo\n.SH SYNOPSIS\n.B demo\n[\\fIOPTION\\fR]\n"
        ".SH DESCRIPTION\nThe \\fBdemo\\fR program prints a friendly greeting for every user.\n"
        ".TP\n.B \\-a\nPrint all of the greetings that are known to the program.\n"
        ".SH EXAMPLE\n.nf\n\\fBdemo \\-a\\fR\n.fi\n",
        encoding="utf-8",
    )
    pars = bb.render_man(page)
    assert "The demo program prints a friendly greeting for every user." in pars
    assert "Print all of the greetings that are known to the program." in pars
    assert not any("OPTION" in p or p.startswith("demo -a") for p in pars)
    assert not any("\b" in p for p in pars)


def test_missing_debs_message(tmp_path):
    with pytest.raises(LangmoeError, match="missing .deb files.*apt-get download fortunes-ga"):
        bb.find_debs(tmp_path, ["fortunes-ga"], download=False)


@pytest.mark.slow
@pytest.mark.skipif(not CACHE.is_dir() or shutil.which("mandoc") is None, reason="no .deb cache or mandoc")
def test_rebuild_is_bit_identical(tmp_path):
    """Rebuilding from the same package versions (and the same previous splits, as scripts/build_corpus.sh passes
    them) reproduces the shipped files byte for byte."""
    manifest = bb.build(CACHE, tmp_path, log=lambda *_: None, keep_train_of=[BUILTIN, bb.V1_TRAIN_IDS])
    assert manifest["packages"] == MANIFEST["packages"]
    for code, entry in MANIFEST["languages"].items():
        assert manifest["languages"][code]["sha256"] == entry["sha256"], code
    assert (tmp_path / "SOURCES.md").read_bytes() == (BUILTIN / "SOURCES.md").read_bytes()


def test_looks_english_spares_other_languages():
    assert bb.looks_english("Do not use any personal information such as a date or a name.")
    assert bb.looks_english("Select Bluetooth.")
    assert not bb.looks_english("Die obligatorischen Argumente für Optionen sind gleich.")
    assert not bb.looks_english("Menu-komandoei deitzea")  # one shared word in a short Basque line


def test_licence_summary_prefers_the_files_star_stanza():
    dep5 = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2010 Jane Doe\n 2012 John Roe\nLicense: CC-BY-SA-3.0\n\n"
        "Files: debian/*\nCopyright: 2020 Packager\nLicense: GPL-2+\n"
    )
    assert bb._licence_summary(dep5) == (["CC-BY-SA-3.0"], ["2010 Jane Doe", "2012 John Roe"])
    free = "Copyright (C) 2004 Anton\nunder the terms of the GNU General Public License\nCopyright (C) 19yy NAME OF AUTHOR\n"
    assert bb._licence_summary(free) == (["GPL (free-form copyright file)"], ["Copyright (C) 2004 Anton"])


def test_cli_reports_missing_debs(tmp_path, capsys):
    assert bb.main(["--list-packages"]) == 0
    assert "manpages-de" in capsys.readouterr().out.split()
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc not installed")
    assert bb.main(["--cache", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "missing .deb files" in capsys.readouterr().err
