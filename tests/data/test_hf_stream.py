"""A Hugging Face dataset streamed from a local folder the test writes (never the hub): a language field, or one
config per language; the hash split is the folder corpus's."""

import json

import pytest

from langmoe.data.corpus import SPLITS, hash_split, language_fingerprint, open_corpus
from langmoe.data.hf_stream import HFStreamCorpus, parse_hf_spec
from langmoe.errors import LangmoeError

pytest.importorskip("datasets")


def write_lang_field(root, n=30):
    root.mkdir(parents=True)
    for part in range(2):
        rows = [{"text": f"Satz {part}-{i} über Straßen", "language": "deu", "doc": f"d{part}-{i}"} for i in range(n)]
        rows += [{"text": f"phrase {part}-{i} déjà", "language": "fra"} for i in range(n)]
        (root / f"part-{part}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return root


def write_configs(root):
    for cfg in ("deu_Latn", "fra_Latn"):
        (root / cfg).mkdir(parents=True)
        (root / cfg / "train.jsonl").write_text(
            "".join(json.dumps({"content": f"{cfg} texte {i}"}) + "\n" for i in range(12)))
    (root / "README.md").write_text("---\nconfigs:\n- config_name: deu_Latn\n  data_files: deu_Latn/*.jsonl\n"
                                    "- config_name: fra_Latn\n  data_files: fra_Latn/*.jsonl\n---\n")
    return root


def test_language_field_and_hash_split(tmp_path):
    root = write_lang_field(tmp_path / "ds")
    c = open_corpus(f"hf:{root}?lang=language&langs=deu:de,fra:fr&id=doc&test_frac=0.2&valid_frac=0.1")
    assert isinstance(c, HFStreamCorpus) and c.languages() == ["de", "fr"]
    de = {s: list(c.iter_documents("de", s)) for s in SPLITS}
    every = [d for s in SPLITS for d in de[s]]
    assert len(every) == 60 and all("Satz" in d.text for d in every)
    for s in SPLITS:
        for d in de[s]:
            assert d.id.startswith("d") and hash_split("de", d.id, 0.1, 0.2, 0) == s
    fr = [d for s in SPLITS for d in c.iter_documents("fr", s)]
    for s in SPLITS:  # rows without the id field: the split follows the text, the id is the row number
        for d in c.iter_documents("fr", s):
            assert hash_split("fr", d.text, 0.1, 0.2, 0) == s
    assert len(fr) == 60 and len({d.id for d in fr}) == 60


def test_one_config_per_language(tmp_path):
    root = write_configs(tmp_path / "ds")
    c = open_corpus(f"hf:{root}?configs=deu_Latn:de,fra_Latn:fr&text=content&test_frac=0&valid_frac=0")
    assert [d.text for d in c.iter_documents("fr", "train")] == [f"fra_Latn texte {i}" for i in range(12)]
    fp = language_fingerprint(c, "de")
    assert fp == language_fingerprint(open_corpus(f"hf:{root}?configs=deu_Latn:de,fra_Latn:fr&text=content"
                                                  "&test_frac=0&valid_frac=0"), "de")
    assert fp != language_fingerprint(c, "fr")


@pytest.mark.parametrize("spec, match", [
    ("hf:?langs=de", "give a dataset after hf:"),
    ("hf:x?lang=language", "also list the languages"),
    ("hf:x?langs=de", "say where the languages are"),
    ("hf:x?configs=a:de&lang=language&langs=de", "not both"),
    ("hf:x?configs=a:zz9", "unknown language code"),
    ("hf:x?configs=de&colour=red", "unknown option"),
    ("hf:x?configs=de&test_frac=lots", "test_frac must be a number"),
])
def test_spec_errors(spec, match):
    with pytest.raises(LangmoeError, match=match):
        open_corpus(spec)


def test_read_errors_are_one_line(tmp_path):
    root = write_lang_field(tmp_path / "ds", n=3)
    c = open_corpus(f"hf:{root}?lang=language&langs=deu:de&text=body")
    with pytest.raises(LangmoeError, match="has no 'body' field"):
        list(c.iter_documents("de", "train"))
    c = open_corpus(f"hf:{tmp_path / 'missing'}?configs=de")
    with pytest.raises(LangmoeError, match="cannot stream the Hugging Face dataset"):
        list(c.iter_documents("de", "train"))
    assert parse_hf_spec("hf:org/name?configs=de")[0] == "org/name"
