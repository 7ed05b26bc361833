import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from langmoe.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from data_fixtures import small_folder  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def test_corpus_stats_json(tmp_path, capsys):
    small_folder(tmp_path / "c", n_docs=20)
    assert main(["corpus", "stats", "--corpus", str(tmp_path / "c"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["code"] for r in data["languages"]] == ["de", "fr"]
    fr = data["languages"][1]
    assert fr["family"] == "Indo-European" and fr["genus"] == "Romance" and fr["script"] == "Latin"
    texts = [f"Le café numéro {i} est déjà fermé." for i in range(20)]
    assert sum(fr["splits"][s]["docs"] for s in ("train", "valid", "test")) == 20
    assert sum(fr["splits"][s]["bytes"] for s in ("train", "valid", "test")) == sum(len(t.encode()) for t in texts)
    assert data["families"] == ["Indo-European"] and data["scripts"] == ["Latin"]


def test_corpus_stats_table_builtin(capsys):
    assert main(["corpus", "stats", "--langs", "de,en"]) == 0
    out = capsys.readouterr().out
    assert "German" in out and "English" in out and "Germanic" in out and "total" in out


def test_corpus_stats_errors(tmp_path, capsys):
    assert main(["corpus", "stats", "--corpus", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("langmoe corpus: error:") and "does not exist" in err and err.count("\n") == 1
    assert main(["corpus", "stats", "--langs", "xx"]) == 2


def test_tokenizer_train(tmp_path, capsys):
    small_folder(tmp_path / "c", n_docs=20)
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--corpus", str(tmp_path / "c"), "--vocab-size", "300", "--out",
                 str(out)]) == 0
    tok = AutoTokenizer.from_pretrained(str(out))
    assert len(tok) == 300 and tok.eos_token == "<|endoftext|>"
    text = "Straße café"
    assert tok.decode(tok(text)["input_ids"]) == text
    meta = json.loads((out / "langmoe_tokenizer.json").read_text())
    assert meta["langs"] == ["de", "fr"] and meta["vocab_size"] == 300
    assert main(["tokenizer", "train", "--corpus", str(tmp_path / "c"), "--vocab-size", "10", "--out",
                 str(out)]) == 2
    assert "at least 257" in capsys.readouterr().err


def test_corpus_stats_flags_thin_held_out_splits(tmp_path, capsys):
    """A test or valid split under 5,000 characters is named in a warning, the table's note and the JSON."""
    root = tmp_path / "c"
    root.mkdir()
    rows = [{"split": "train", "text": "lorem ipsum " * 50}, {"split": "valid", "text": "v" * 6000},
            {"split": "test", "text": "t" * 1200}]
    (root / "la.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    big = [{"split": s, "text": "x" * 5000} for s in ("train", "valid", "test")]
    (root / "it.jsonl").write_text("".join(json.dumps(r) + "\n" for r in big))
    assert main(["corpus", "stats", "--corpus", str(root), "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["thin_splits"] == {"la": {"test": 1200}}  # 5,000 exactly is not thin
    assert "la: thin test split (1,200 characters)" in out.err and "it:" not in out.err
    assert main(["corpus", "stats", "--corpus", str(root)]) == 0
    table = capsys.readouterr().out
    assert "thin test" in table and "1 thin" in table
