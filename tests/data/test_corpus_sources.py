"""Corpora at scale: a language as a folder of many (.zst, .gz, parquet) files, and per-language fingerprints."""

import gzip
import json
import os

import pytest
from data_fixtures import write_jsonl, write_txt

from langmoe.data.corpus import SPLITS, FolderCorpus, hash_split, language_fingerprint, open_corpus
from langmoe.errors import LangmoeError

zstd = pytest.importorskip("zstandard")


def write_zst(path, records, frames: int = 1) -> None:
    """JSON lines compressed as `frames` zstd frames (several frames: as `zstd` writes concatenated files)."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
    step = max(1, -(-len(lines) // frames))
    data = b"".join(zstd.ZstdCompressor().compress("".join(lines[i:i + step]).encode())
                    for i in range(0, len(lines), step))
    path.write_bytes(data)


def docs_of(corpus, lang):
    return {s: [(d.id, d.text) for d in corpus.iter_documents(lang, s)] for s in SPLITS}


def test_zst_file_equals_its_plain_jsonl(tmp_path):
    recs = [{"text": f"Zeile {i} mit Straße"} for i in range(50)] + [{"id": "x", "text": "mit id"}]
    (tmp_path / "plain").mkdir()
    (tmp_path / "zst").mkdir()
    write_jsonl(tmp_path / "plain" / "de.jsonl", recs)
    write_zst(tmp_path / "zst" / "de.jsonl.zst", recs, frames=3)
    plain, packed = FolderCorpus(tmp_path / "plain"), FolderCorpus(tmp_path / "zst")
    assert docs_of(packed, "de") == docs_of(plain, "de")
    assert sum(len(v) for v in docs_of(packed, "de").values()) == 51


def test_language_folder_of_many_files(tmp_path):
    """de/ holds shards of three formats; documents come file by file in name order, a line number id becomes
    `<file>:<n>`, an explicit id is kept, and each document's split is what a single file would give it."""
    de = tmp_path / "corpus" / "de"
    de.mkdir(parents=True)
    write_zst(de / "part-00001.jsonl.zst", [{"text": f"eins {i}"} for i in range(20)])
    with gzip.open(de / "part-00002.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps({"id": f"z{i}", "text": f"zwei {i}"}) + "\n" for i in range(20)))
    write_txt(de / "part-00000.txt", ["null a", "null b"])
    (de / "README.md").write_text("ignored")
    write_txt(tmp_path / "corpus" / "fr.txt", ["un", "deux"])
    c = FolderCorpus(tmp_path / "corpus", valid_frac=0.2, test_frac=0.2)
    assert c.languages() == ["de", "fr"]
    every = [d for s in SPLITS for d in c.iter_documents("de", s)]
    assert len(every) == 42 and len({d.id for d in every}) == 42
    order = [d.id for _, d in c._iter_all("de")]
    assert order[:3] == ["part-00000.txt:0", "part-00000.txt:1", "part-00001.jsonl.zst:1"]
    assert order[22] == "z0"
    split_of = {d.id: s for s in SPLITS for d in c.iter_documents("de", s)}
    for d in every:  # by text without an explicit id, by id with one: as for a single file
        key = d.id if d.id.startswith("z") else d.text
        assert split_of[d.id] == hash_split("de", key, 0.2, 0.2, 0)
    assert {s for s in split_of.values()} == set(SPLITS)


def test_parquet_shards(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    de = tmp_path / "de"
    de.mkdir()
    for k in range(3):
        pq.write_table(pa.table({"text": [f"Satz {k}-{i}" for i in range(10)]}), de / f"{k:04d}.parquet")
    c = FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)
    texts = [d.text for d in c.iter_documents("de", "train")]
    assert texts == [f"Satz {k}-{i}" for k in range(3) for i in range(10)]


@pytest.mark.parametrize("setup, match", [
    (lambda p: (p / "de").mkdir(), "without .txt/.jsonl/.parquet files"),
    (lambda p: ((p / "de").mkdir(), (p / "de" / "a.csv").write_text("x")), "unsupported file in the language folder"),
    (lambda p: ((p / "de").mkdir(), (p / "de" / "a.jsonl.zst").write_bytes(b"")), "is empty"),
    (lambda p: (p / "de.jsonl.zst").write_bytes(b"not zstd at all"), "not a valid zstd file"),
])
def test_source_errors(tmp_path, setup, match):
    setup(tmp_path)
    with pytest.raises(LangmoeError, match=match):
        c = FolderCorpus(tmp_path)
        list(c.iter_documents("de", "train"))


def test_truncated_zst_says_so(tmp_path):
    write_zst(tmp_path / "de.jsonl.zst", [{"text": f"Zeile {i} " * 20} for i in range(2000)])
    data = (tmp_path / "de.jsonl.zst").read_bytes()
    (tmp_path / "de.jsonl.zst").write_bytes(data[: len(data) // 2])
    c = FolderCorpus(tmp_path)
    with pytest.raises(LangmoeError, match=r"de.jsonl.zst is truncated"):
        list(c.iter_documents("de", "train"))


def test_language_fingerprint_follows_only_that_language(tmp_path):
    write_txt(tmp_path / "de.txt", ["a", "b"])
    write_txt(tmp_path / "fr.txt", ["c"])
    c = FolderCorpus(tmp_path)
    de, fr = language_fingerprint(c, "de"), language_fingerprint(c, "fr")
    write_txt(tmp_path / "en.txt", ["new language"])
    write_txt(tmp_path / "fr.txt", ["changed"])
    os.utime(tmp_path / "fr.txt", (5, 5))
    c2 = FolderCorpus(tmp_path)
    assert language_fingerprint(c2, "de") == de and language_fingerprint(c2, "fr") != fr
    assert language_fingerprint(FolderCorpus(tmp_path, test_frac=0.3), "de") != de  # other splits
    mixed = open_corpus([str(tmp_path), "builtin"])
    assert language_fingerprint(mixed, "de") != language_fingerprint(open_corpus("builtin"), "de")
    assert language_fingerprint(mixed, "ga") != language_fingerprint(open_corpus("builtin"), "ga")


def test_corpus_sources_counts_only_small_sources_when_limited(tmp_path):
    """A run records its sources' characters per split, but does not stream a source larger than the limit."""
    from langmoe.data.corpus import corpus_sources

    write_txt(tmp_path / "de.txt", ["eins zwei", "drei"])
    c = FolderCorpus(tmp_path, valid_frac=0.0, test_frac=0.0)
    size = (tmp_path / "de.txt").stat().st_size
    assert corpus_sources(c, ["de"], count_limit=size)["de"][0]["chars"] == {"train": 13, "valid": 0, "test": 0}
    big = corpus_sources(c, ["de"], count_limit=size - 1)["de"][0]
    assert big["chars"] is None and big["bytes_on_disk"] == size
    mixed = open_corpus(["builtin", str(tmp_path)])
    entries = corpus_sources(mixed, ["de"], count_limit=1)["de"]
    assert entries[0]["chars"]["test"] > 0 and entries[1]["chars"] is None  # the built-in manifest costs nothing
