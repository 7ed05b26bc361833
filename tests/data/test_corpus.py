import gzip
import json

import pytest
from data_fixtures import small_folder, write_jsonl, write_txt

from langmoe.data.corpus import (
    SPLITS,
    BuiltinCorpus,
    Corpus,
    Document,
    FolderCorpus,
    corpus_stats,
    hash_split,
    open_corpus,
)
from langmoe.data.languages import Language
from langmoe.errors import LangmoeError


def all_docs(corpus, lang):
    return {s: list(corpus.iter_documents(lang, s)) for s in SPLITS}


def test_txt_paragraphs_and_ids(tmp_path):
    (tmp_path / "en.txt").write_text("\ufefffirst line\nsecond line\n\n\n  \nthird  \n\nfourth", encoding="utf-8")
    c = FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)
    docs = all_docs(c, "en")["train"]
    assert [d.text for d in docs] == ["first line\nsecond line", "third", "fourth"]
    assert [d.id for d in docs] == ["0", "1", "2"]
    assert docs[0] == Document(id="0", lang="en", text="first line\nsecond line", source="en.txt")


def test_hash_split_is_deterministic_and_covers_fractions(tmp_path):
    small_folder(tmp_path, n_docs=400)
    a = FolderCorpus(tmp_path, valid_frac=0.1, test_frac=0.2, seed=3)
    b = FolderCorpus(tmp_path, valid_frac=0.1, test_frac=0.2, seed=3)
    for lang in ("de", "fr"):
        da, db = all_docs(a, lang), all_docs(b, lang)
        assert {s: [d.id for d in v] for s, v in da.items()} == {s: [d.id for d in v] for s, v in db.items()}
        ids = [d.id for v in da.values() for d in v]
        assert len(ids) == len(set(ids)) == 400  # every document in exactly one split
        assert 0.05 < len(da["valid"]) / 400 < 0.15 and 0.14 < len(da["test"]) / 400 < 0.26
        for s, v in da.items():  # de.txt has no ids: split by text; fr.jsonl has ids: split by id
            assert all(hash_split(lang, d.id if lang == "fr" else d.text, 0.1, 0.2, 3) == s for d in v)
    other = FolderCorpus(tmp_path, valid_frac=0.1, test_frac=0.2, seed=4)
    assert [d.id for d in other.iter_documents("de", "test")] != [d.id for d in a.iter_documents("de", "test")]


def test_jsonl_explicit_split_and_gz(tmp_path):
    recs = [{"id": "x", "text": "one", "split": "validation"}, {"text": "two", "split": "test"},
            {"id": 7, "text": "three", "split": "train"}, {"id": "e", "text": "   "}]
    with gzip.open(tmp_path / "de.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    c = FolderCorpus(tmp_path)
    d = all_docs(c, "de")
    assert [x.text for x in d["valid"]] == ["one"] and [x.id for x in d["test"]] == ["2"]
    assert [x.id for x in d["train"]] == ["7"]  # the whitespace-only record is filtered out


def test_parquet_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"doc {i} ü" for i in range(2500)]
    pq.write_table(pa.table({"text": texts, "id": [f"p{i}" for i in range(2500)]}), tmp_path / "de.parquet",
                   row_group_size=700)
    c = FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)
    docs = list(c.iter_documents("de", "train"))
    assert [d.text for d in docs] == texts and docs[2499].id == "p2499"
    assert c.num_chars("de", "train") == sum(len(t) for t in texts)


def test_datasets_folders(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_dict({"text": ["a b", "c d", "e"]}).save_to_disk(str(tmp_path / "per" / "de"))
    c = FolderCorpus(tmp_path / "per", valid_frac=0.0, test_frac=0.0)
    assert c.languages() == ["de"] and [d.text for d in c.iter_documents("de", "train")] == ["a b", "c d", "e"]
    dd = DatasetDict({
        "train": Dataset.from_dict({"text": ["t1", "t2", "t3"], "lang": ["de", "fr", "de"]}),
        "validation": Dataset.from_dict({"text": ["v1"], "lang": ["fr"]}),
    })
    dd.save_to_disk(str(tmp_path / "whole"))
    w = FolderCorpus(tmp_path / "whole")
    assert w.languages() == ["de", "fr"]
    assert [d.text for d in w.iter_documents("de", "train")] == ["t1", "t3"]
    assert [d.text for d in w.iter_documents("fr", "valid")] == ["v1"]
    assert list(w.iter_documents("de", "test")) == []


def test_num_chars_and_stats_hand_computed(tmp_path):
    write_txt(tmp_path / "ru.txt", ["мир", "да"])
    write_txt(tmp_path / "en.txt", ["abc"])
    c = FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)
    assert c.num_chars("ru", "train") == 5 and c.num_chars("ru", "test") == 0
    st = corpus_stats(c)
    ru = next(r for r in st.languages if r.code == "ru")
    assert (ru.name, ru.family, ru.script) == ("Russian", "Indo-European", "Cyrillic")
    assert ru.splits["train"].model_dump() == {"docs": 2, "chars": 5, "bytes": 10}
    assert st.totals["train"].model_dump() == {"docs": 3, "chars": 8, "bytes": 13}
    assert st.families == ["Indo-European"] and st.scripts == ["Cyrillic", "Latin"]


def test_declared_languages(tmp_path):
    write_txt(tmp_path / "xx.txt", ["hello"])
    with pytest.raises(LangmoeError, match="unknown language code.*xx"):
        FolderCorpus(tmp_path)
    lang = Language(code="xx", name="Ex", family="F", genus="G", script="Latin")
    c = FolderCorpus(tmp_path, declared_languages={"xx": lang})
    assert c.language("xx") == lang
    (tmp_path / "languages.yaml").write_text("xx: {name: Ex, family: F, genus: G, script: Latin}\n")
    assert FolderCorpus(tmp_path).language("xx") == lang
    assert corpus_stats(FolderCorpus(tmp_path)).languages[0].family == "F"


@pytest.mark.parametrize("setup, match", [
    (lambda p: None, "holds no <lang>"),
    (lambda p: (p / "de.txt").write_bytes(b""), "is empty"),
    (lambda p: (p / "de.txt").write_text("\n \n\n"), "no non-empty documents"),
    (lambda p: (p / "de.csv").write_text("a"), "unsupported file"),
    (lambda p: (write_txt(p / "de.txt", ["a"]), write_jsonl(p / "de.jsonl", [{"text": "b"}])), "two sources"),
    (lambda p: (p / "de.jsonl").write_text('{"txt": 1}\n'), "no 'text' field"),
    (lambda p: (p / "de.jsonl").write_text('{"text": 1\n'), "not valid JSON"),
    (lambda p: write_jsonl(p / "de.jsonl", [{"text": "a", "split": "dev2"}]), "unknown split"),
])
def test_user_errors(tmp_path, setup, match):
    setup(tmp_path)
    with pytest.raises(LangmoeError, match=match):
        c = FolderCorpus(tmp_path)
        for s in SPLITS:
            list(c.iter_documents("de", s))


def test_non_utf8_names_file_and_offset(tmp_path):
    (tmp_path / "de.txt").write_bytes("gut\n\nschön\n".encode() + b"ab\xffcd\n")
    c = FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)
    with pytest.raises(LangmoeError) as e:
        list(c.iter_documents("de", "train"))
    msg = str(e.value)
    assert "de.txt" in msg and "offset 14" in msg and "\n" not in msg  # len("gut\n\nschön\n") = 12 bytes + "ab"


def test_missing_or_file_path(tmp_path):
    with pytest.raises(LangmoeError, match="does not exist"):
        open_corpus(tmp_path / "nope")
    write_txt(tmp_path / "de.txt", ["x"])
    with pytest.raises(LangmoeError, match="is a file"):
        open_corpus(tmp_path / "de.txt")
    with pytest.raises(LangmoeError, match="unknown split"):
        list(open_corpus(tmp_path).iter_documents("de", "dev"))
    with pytest.raises(LangmoeError, match="not in the corpus"):
        list(open_corpus(tmp_path).iter_documents("fr", "train"))


def test_builtin_corpus_streams_and_manifest_matches():
    c = open_corpus("builtin")
    assert isinstance(c, BuiltinCorpus) and len(c.languages()) >= 10
    lang = min(c.languages(), key=lambda x: (c.root / f"{x}.jsonl.gz").stat().st_size)
    streamed = Corpus.split_stats(c, lang)  # one pass over the file, bypassing the manifest
    assert {s: v.model_dump() for s, v in c.split_stats(lang).items()} == {
        s: v.model_dump() for s, v in streamed.items()}
    assert streamed["train"].docs > 0 and streamed["test"].docs > 0
    doc = next(c.iter_documents(lang, "train"))
    assert doc.lang == lang and doc.text.strip() and doc.source == "builtin"
    assert c.fingerprint() == BuiltinCorpus().fingerprint()


def test_split_by_text_is_stable_under_insertion_and_duplicates_share_a_split(tmp_path):
    docs = [f"paragraph number {i}" for i in range(200)]
    write_txt(tmp_path / "en.txt", docs + docs[:50])
    c = FolderCorpus(tmp_path, valid_frac=0.2, test_frac=0.2)
    where = {d.text: s for s in SPLITS for d in c.iter_documents("en", s)}
    for s in SPLITS:
        texts = [d.text for d in c.iter_documents("en", s)]
        assert all(where[t] == s for t in texts)  # a duplicated text never sits in two splits
    write_txt(tmp_path / "en.txt", ["a new first paragraph"] + docs)
    c2 = FolderCorpus(tmp_path, valid_frac=0.2, test_frac=0.2)
    assert all(where[d.text] == s for s in SPLITS for d in c2.iter_documents("en", s) if d.text in where)


def test_builtin_fingerprint_is_by_content_and_per_language(tmp_path):
    """A copy with other mtimes keeps the fingerprint (caches survive a fresh clone); changing one language's file
    changes the fingerprint of that language only."""
    import os
    import shutil

    from langmoe.data.corpus import BUILTIN_DIR, BuiltinCorpus, corpus_fingerprint

    for name in ("en.jsonl.gz", "de.jsonl.gz", "manifest.json"):
        shutil.copy2(BUILTIN_DIR / name, tmp_path / name)
    shipped, copy = BuiltinCorpus(), BuiltinCorpus(tmp_path)
    os.utime(tmp_path / "en.jsonl.gz", (1, 1))
    assert corpus_fingerprint(copy, ["en", "de"]) == corpus_fingerprint(shipped, ["en", "de"])
    before_de = corpus_fingerprint(BuiltinCorpus(tmp_path), ["de"])
    before_en = corpus_fingerprint(BuiltinCorpus(tmp_path), ["en"])
    data = (tmp_path / "en.jsonl.gz").read_bytes()
    (tmp_path / "en.jsonl.gz").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert corpus_fingerprint(BuiltinCorpus(tmp_path), ["de"]) == before_de
    assert corpus_fingerprint(BuiltinCorpus(tmp_path), ["en"]) != before_en
