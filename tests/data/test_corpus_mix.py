"""Mixed corpora: `open_corpus([...])` over the built-in corpus, folders and files, checked against counts taken
straight from the files (gzip + json for the built-in corpus, a hand-written blake2b split for the folder)."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import pytest

from langmoe.cli import main
from langmoe.data.corpus import (
    BUILTIN_DIR,
    SPLITS,
    BuiltinCorpus,
    FolderCorpus,
    MixedCorpus,
    corpus_fingerprint,
    corpus_sources,
    open_corpus,
)
from langmoe.errors import LangmoeError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_fixtures import write_jsonl, write_txt  # noqa: E402

DE = [f"Der Hund Nummer {i} läuft über die Straße." for i in range(40)]
XX = [{"id": f"x{i}", "split": s, "text": f"Zorbla {i} ist {s}."} for i, s in
      enumerate(["train"] * 6 + ["valid"] * 2 + ["test"] * 3)]


def _folder(root: Path) -> Path:
    """de.txt extends a built-in language (hash split, 25% test / 25% valid from corpus.yaml); xx.jsonl is a new,
    declared language with explicit splits."""
    root.mkdir(parents=True, exist_ok=True)
    write_txt(root / "de.txt", DE)
    write_jsonl(root / "xx.jsonl", XX)
    (root / "languages.yaml").write_text("xx: {name: Zorblish, family: Zorbic, genus: Zorb, script: Latin}\n",
                                         encoding="utf-8")
    (root / "corpus.yaml").write_text("valid_frac: 0.25\ntest_frac: 0.25\nseed: 3\n", encoding="utf-8")
    return root


def _my_split(lang: str, text: str) -> str:
    """The documented rule, written out again: blake2b(seed, lang, text) -> u in [0, 1): test, then valid."""
    u = int.from_bytes(hashlib.blake2b(f"3\0{lang}\0{text}".encode(), digest_size=8).digest(), "big") / 2.0**64
    return "test" if u < 0.25 else "valid" if u < 0.5 else "train"


def _builtin_docs(lang: str) -> list[tuple[str, str, str]]:
    """(id, split, text) straight from the shipped file."""
    out = []
    with gzip.open(BUILTIN_DIR / f"{lang}.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                r = json.loads(line)
                if r["text"].strip():
                    out.append((str(r.get("id", i)), r.get("split") or "train", r["text"]))
    return out


def test_mix_builtin_with_a_folder_counts_order_ids_and_sources(tmp_path):
    folder = _folder(tmp_path / "mine")
    mixed = open_corpus(["builtin", str(folder)])
    assert isinstance(mixed, MixedCorpus)
    builtin_langs = sorted(p.name[: -len(".jsonl.gz")] for p in BUILTIN_DIR.glob("*.jsonl.gz"))
    assert "de" in builtin_langs and "xx" not in builtin_langs
    assert mixed.languages() == sorted([*builtin_langs, "xx"])

    ref_de = _builtin_docs("de")
    for split in SPLITS:
        docs = list(mixed.iter_documents("de", split))
        want_b = [(f"0:{i}", t) for i, s, t in ref_de if s == split]
        want_f = [(f"1:{k}", t) for k, t in enumerate(DE) if _my_split("de", t) == split]
        assert [(d.id, d.text) for d in docs] == want_b + want_f  # built-in first, then the folder, in file order
        assert mixed.split_stats("de")[split].docs == len(want_b) + len(want_f)
        assert mixed.num_chars("de", split) == sum(len(t) for _, t in want_b + want_f)
    assert 0 < sum(_my_split("de", t) == "test" for t in DE) < len(DE)  # the folder really adds test documents
    ids = [d.id for s in SPLITS for d in mixed.iter_documents("de", s)]
    assert len(ids) == len(set(ids))

    # a language only one source has: ids and documents exactly as that source gives them
    assert [(d.id, d.text) for d in mixed.iter_documents("xx", "test")] == [
        (r["id"], r["text"]) for r in XX if r["split"] == "test"]
    en = BuiltinCorpus()
    assert [(d.id, d.text) for d in mixed.iter_documents("en", "valid")] == [
        (d.id, d.text) for d in en.iter_documents("en", "valid")]
    assert mixed.language("xx").name == "Zorblish" and mixed.language("de").name == "German"

    src = mixed.sources(["de", "xx", "en"])
    assert [e["source"] for e in src["de"]] == ["builtin", str(folder.resolve())]
    assert src["de"][0]["chars"] == {s: sum(len(t) for _, sp, t in ref_de if sp == s) for s in SPLITS}
    assert src["de"][1]["chars"] == {s: sum(len(t) for t in DE if _my_split("de", t) == s) for s in SPLITS}
    assert src["xx"] == [{"source": str(folder.resolve()),
                          "chars": {s: sum(len(r["text"]) for r in XX if r["split"] == s) for s in SPLITS}}]
    assert [e["source"] for e in src["en"]] == ["builtin"]
    assert corpus_sources(mixed, ["de"]) == {"de": src["de"]}
    assert corpus_sources(BuiltinCorpus(), ["en"])["en"][0]["source"] == "builtin"


def test_splits_are_deterministic_and_per_document_whatever_the_order(tmp_path):
    folder = _folder(tmp_path / "mine")

    def split_of(corpus):
        return {d.text: s for s in SPLITS for d in corpus.iter_documents("de", s)}

    a = split_of(open_corpus(["builtin", str(folder)]))
    b = split_of(open_corpus(["builtin", str(folder)]))
    c = open_corpus([str(folder), "builtin"])
    assert a == b == split_of(c)  # each document keeps its own source's split
    assert a == {**split_of(BuiltinCorpus()), **split_of(FolderCorpus(folder))}
    first = next(c.iter_documents("de", "train"))
    assert first.id.startswith("0:") and first.text in DE  # the order given is the order read


def test_fingerprint_covers_every_source(tmp_path):
    folder = _folder(tmp_path / "mine")
    mixed = open_corpus(["builtin", str(folder)])
    fp = corpus_fingerprint(mixed)
    assert fp.startswith("mixed:") and fp == open_corpus(["builtin", str(folder)]).fingerprint()
    assert fp not in (BuiltinCorpus().fingerprint(), FolderCorpus(folder).fingerprint())
    assert fp != open_corpus([str(folder), "builtin"]).fingerprint()  # order changes document order
    write_txt(folder / "de.txt", [*DE, "Ein neuer Absatz."])
    assert open_corpus(["builtin", str(folder)]).fingerprint() != fp


def test_single_entry_list_is_the_single_source(tmp_path):
    folder = _folder(tmp_path / "mine")
    assert type(open_corpus(["builtin"])) is BuiltinCorpus
    one = open_corpus([str(folder)])
    assert type(one) is FolderCorpus and one.fingerprint() == open_corpus(str(folder)).fingerprint()


def test_a_single_file_is_a_source(tmp_path):
    folder = _folder(tmp_path / "mine")
    mixed = open_corpus(["builtin", str(folder / "de.txt")])
    assert mixed.languages() == BuiltinCorpus().languages()  # xx.jsonl beside it is not read
    extra = [d.text for s in SPLITS for d in mixed.iter_documents("de", s) if d.id.startswith("1:")]
    assert sorted(extra) == sorted(DE)
    both = open_corpus([str(folder / "xx.jsonl"), str(folder / "de.txt")])  # languages.yaml beside declares xx
    assert both.languages() == ["de", "xx"] and both.language("xx").name == "Zorblish"
    with pytest.raises(LangmoeError, match="is a file"):  # alone, a path must stay a folder (as before)
        open_corpus(str(folder / "de.txt"))


@pytest.mark.parametrize("spec, needle", [
    ([], "corpus list is empty"),
    (["builtin", "{tmp}/missing"], "does not exist"),
    (["builtin", "builtin"], "listed twice"),
    (["builtin", "{tmp}/notes.md"], "is a file but not <lang>"),
])
def test_bad_lists_are_one_line(tmp_path, spec, needle):
    (tmp_path / "notes.md").write_text("x", encoding="utf-8")
    with pytest.raises(LangmoeError) as e:
        open_corpus([s.format(tmp=tmp_path) for s in spec])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_cli_with_two_corpus_flags(tmp_path, capsys):
    folder = _folder(tmp_path / "mine")
    assert main(["corpus", "stats", "--corpus", "builtin", "--corpus", str(folder), "--langs", "de,xx",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["corpus"] == ["builtin", str(folder)]
    de = next(r for r in data["languages"] if r["code"] == "de")
    ref = _builtin_docs("de")
    for s in SPLITS:
        assert de["splits"][s]["docs"] == sum(sp == s for _, sp, _ in ref) + sum(_my_split("de", t) == s for t in DE)
    assert [e["source"] for e in data["sources"]["de"]] == ["builtin", str(folder.resolve())]
    assert next(r for r in data["languages"] if r["code"] == "xx")["name"] == "Zorblish"

    # one --corpus: exactly as before (a string, no sources key)
    assert main(["corpus", "stats", "--corpus", str(folder), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["corpus"] == str(folder) and "sources" not in single

    assert main(["corpus", "stats", "--corpus", "builtin", "--corpus", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("langmoe corpus: error:") and "does not exist" in err and err.count("\n") == 1


def test_script_warning_reaches_a_folder_inside_a_mix(tmp_path):
    from langmoe.diagnostics import corpus_warnings

    folder = tmp_path / "ru_in_de"
    folder.mkdir()
    write_txt(folder / "de.txt", ["Это русский текст, а не немецкий."] * 5)
    mixed = open_corpus(["builtin", str(folder)])
    warns = corpus_warnings(mixed, ["de", "en"])
    assert len(warns) == 1 and "de.txt" in warns[0] and "Latin" in warns[0]
    assert corpus_warnings(mixed, ["en"]) == []
